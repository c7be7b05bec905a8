"""LangChain's standard test suites for chat models.

The unit suite runs on the tiny checkpoint. The integration suite needs real weights: it runs when
QWENVL_TEST_MODEL names a Qwen3-VL checkpoint folder (``QWENVL_TEST_MODEL=/models/Qwen3-VL-2B-Instruct
pytest tests/test_standard.py``) and is skipped otherwise. Its image tests download a picture; here they
get a locally drawn one instead, so the suite runs offline.
"""

from __future__ import annotations

import os

import pytest
from documents import draw_text_image, png_bytes
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from qwenvl_agent.vlm import ChatQwenVL, load_image
from qwenvl_agent.vlm import images as images_module

REAL_MODEL = os.environ.get("QWENVL_TEST_MODEL")


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


@pytest.mark.real_model
@pytest.mark.skipif(not REAL_MODEL, reason="set QWENVL_TEST_MODEL to a Qwen3-VL checkpoint folder")
class TestChatQwenVLIntegration(Capabilities, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        return {"model": REAL_MODEL, "max_tokens": 256}

    @property
    def supports_model_override(self) -> bool:
        return bool(os.environ.get("QWENVL_TEST_MODEL_OVERRIDE"))

    @property
    def model_override_value(self) -> str | None:
        return os.environ.get("QWENVL_TEST_MODEL_OVERRIDE")

    @pytest.fixture(autouse=True)
    def _local_pictures(self, monkeypatch):
        """Serve the suite's picture download from a locally drawn image."""
        picture = png_bytes(draw_text_image(["A sunny day", "Weather: clear"], size=(320, 200)))

        class Response:
            content = picture

        monkeypatch.setattr("httpx.get", lambda *args, **kwargs: Response())
        monkeypatch.setattr(images_module, "_fetch", lambda url, timeout, max_bytes: load_image(picture))
