"""LangChain's standard test suites for chat models.

The unit suite runs on the tiny checkpoint. The integration suite runs on real weights when
QWENVL_TEST_MODEL names a Qwen3-VL checkpoint folder (``QWENVL_TEST_MODEL=/models/Qwen3-VL-2B-Instruct
pytest tests/test_standard.py``). Without it, the same suite runs on the tiny checkpoint, each test's replies
scripted (a random model writes no tool calls or jokes), so its fixtures and the whole path from LangChain
messages to tokens and back run in every test session and cannot rot unnoticed. Its image tests download a
picture; here they get a locally drawn one instead, so the suite runs offline.
"""

from __future__ import annotations

import json
import os

import pytest
from documents import draw_text_image, png_bytes
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm import images as images_module
from qwenvl_agent.vlm.testing import scripted_replies, tool_call_text

REAL_MODEL = os.environ.get("QWENVL_TEST_MODEL")
SUITE_PICTURE = "https://raw.githubusercontent.com/langchain-ai/docs/"  # where the suite's image tests download from


class Capabilities:
    """What ChatQwenVL really does; these switch the standard tests on and off."""

    @property
    def chat_model_class(self) -> type[ChatQwenVL]:
        return ChatQwenVL

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_image_urls(self) -> bool:
        return True

    @property
    def supports_image_tool_message(self) -> bool:
        return True

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_video_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True


class TestChatQwenVLUnit(Capabilities, ChatModelUnitTests):
    """``model`` can be overridden per call (``invoke(..., model=other_folder)``)."""

    @pytest.fixture(autouse=True)
    def _checkpoint(self, tiny_model):
        self._tiny_model = tiny_model

    @property
    def chat_model_params(self) -> dict:
        return {"model": getattr(self, "_tiny_model", "Qwen/Qwen3-VL-2B-Instruct")}


def arguments(args: dict) -> str:
    """The rest of a reply after a forced ``<tool_call>\\n{"name": "…", "arguments": `` (tool_choice names
    the tool, or "any" with one tool): the arguments and the closing of the call."""
    return json.dumps(args, ensure_ascii=False) + "}\n</tool_call>"


JOKE = arguments({"setup": "Why did the cat sit on the laptop?", "punchline": "To keep an eye on the mouse."})
# What the tiny checkpoint replies in each test of the suite, in the order of the test's generations.
SCRIPTS = {
    "test_tool_calling": [arguments({"input": 3})] * 2,
    "test_tool_calling_async": [arguments({"input": 3})] * 2,
    "test_bind_runnables_as_tools": [arguments({"answer_style": "formal"})],
    "test_tool_choice": ['magic_function", "arguments": {"input": 3}}\n</tool_call>', arguments({"input": 3})],
    "test_tool_calling_with_no_arguments": [arguments({})] * 2,
    "test_structured_few_shot_examples": [arguments({"a": 1, "b": 2})],
    "test_structured_output": [JOKE] * 2,
    "test_structured_output_async": [JOKE] * 2,
    "test_structured_output_pydantic_2_v1": [JOKE] * 4,
    "test_structured_output_optional_param": [JOKE] * 4,
    "test_agent_loop": [tool_call_text("get_weather", {"location": "San Francisco"}), "It is sunny in San Francisco."],
    "test_unicode_tool_call_integration": [arguments({"customer_name": "你好科技公司"}),
                                           arguments({"customer_name": "こんにちは株式会社"})],
}
PLAIN_REPLY = "It is sunny."


class TestChatQwenVLIntegration(Capabilities, ChatModelIntegrationTests):
    """On real weights with QWENVL_TEST_MODEL; else on the tiny checkpoint with scripted replies."""

    @pytest.fixture(autouse=True)
    def _checkpoint(self, request):
        if REAL_MODEL:
            self._model, self._runtime = REAL_MODEL, None
        else:
            self._model = request.getfixturevalue("tiny_model")
            self._runtime = request.getfixturevalue("tiny_runtime")

    @property
    def chat_model_params(self) -> dict:
        return {"model": REAL_MODEL or getattr(self, "_model", ""), "max_tokens": 256}

    @property
    def supports_model_override(self) -> bool:
        return bool(os.environ.get("QWENVL_TEST_MODEL_OVERRIDE"))

    @property
    def model_override_value(self) -> str | None:
        return os.environ.get("QWENVL_TEST_MODEL_OVERRIDE")

    @pytest.fixture(autouse=True)
    def _scripted(self, request, _checkpoint):
        """On the tiny checkpoint, the replies the test needs (a plain sentence wherever none is scripted)."""
        if self._runtime is None:
            yield
            return
        replies = SCRIPTS.get(request.node.originalname, [])
        with scripted_replies(self._runtime, replies + [PLAIN_REPLY] * 12):
            yield

    @pytest.fixture(autouse=True)
    def _local_pictures(self, monkeypatch):
        """Serve the suite's picture download (its own, through httpx, and ChatQwenVL's, of an image URL) from a
        locally drawn image."""
        picture = png_bytes(draw_text_image(["A sunny day", "Weather: clear"], size=(320, 200)))
        real_fetch = images_module.fetch

        class Response:
            content = picture

        def fetch(url: str, **kwargs) -> bytes:
            return picture if url.startswith(SUITE_PICTURE) else real_fetch(url, **kwargs)

        monkeypatch.setattr("httpx.get", lambda *args, **kwargs: Response())
        monkeypatch.setattr(images_module, "fetch", fetch)
