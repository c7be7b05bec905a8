"""What every image tool shares: a chat model that sees images, the store of image ids, timing, errors.

A tool returns ``(text for the planner, artifact)``; the artifact records the image ids it used and
the seconds it took (and structured data where there is some), so front ends can show each step.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import BaseTool, ToolException
from PIL import Image
from pydantic import ConfigDict, Field, ValidationError

from qwenvl_agent.vlm.errors import QwenVLError

from .store import ImageStore, UnknownImageError


def image_block(image: Image.Image, vlm: BaseChatModel | None = None) -> dict[str, Any]:
    """An image content block for ``vlm``. ChatQwenVL takes the decoded image itself, so nothing is encoded
    and decoded again; other chat models get a standard block (PNG, lossless: small print must survive)."""
    from qwenvl_agent.vlm.chat_model import ChatQwenVL

    if isinstance(vlm, ChatQwenVL):
        return {"type": "image", "image": image}
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return {"type": "image", "base64": base64.b64encode(buffer.getvalue()).decode(), "mime_type": "image/png"}


def explain_validation_error(error: ValidationError) -> str:
    """Name each wrong argument and why, so a small model can correct its next call."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ())) or "arguments"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "Invalid arguments: " + "; ".join(problems) + ". Fix them and call the tool again."


class ImageTool(BaseTool):
    """Base of the tools: subclasses implement ``_use`` and return ``(text, image_ids, data)``."""

    vlm: BaseChatModel | None = None
    store: ImageStore
    # Shared by the tools of one make_tools call: the calls of one planner turn, which LangGraph starts in
    # parallel, run one after another, as a CPU runs one generation at a time anyway.
    turn: Any = Field(default_factory=threading.Lock, exclude=True)
    max_image_tokens: int = 1024
    max_tokens: int = 512
    # Instructions the same for every call (a reply format), sent as a system message before the images: a prompt
    # that opens with them shares that opening with every other call of the tool, so a model that keeps prompt
    # prefixes reads them once (``DocumentAssistant.warm`` prepares them), not once per image.
    system_prompt: str | None = None
    # Greedy decoding with a stop for replies that loop (a 2B model reading a long page can): tools want the
    # most likely reading, not a sampled one, and never a page of repeats.
    repetition_guard: bool = True
    response_format: str = "content_and_artifact"
    handle_tool_error: bool = True
    handle_validation_error: Any = Field(default_factory=lambda: explain_validation_error)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _run(self, *args: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        kwargs.pop("run_manager", None)
        with self.turn:
            started = time.perf_counter()
            try:
                text, image_ids, data = self._use(**kwargs)
            except UnknownImageError as exc:
                raise ToolException(f"{str(exc).rstrip('.')}. Call the tool again with one of the known ids.") from exc
            except (ValueError, QwenVLError) as exc:
                raise ToolException(str(exc)) from exc
            seconds = round(time.perf_counter() - started, 3)
        return text, {"image_ids": image_ids, "seconds": seconds, "data": data}

    def _use(self, **kwargs: Any) -> tuple[str, list[str], dict[str, Any] | None]:
        raise NotImplementedError

    def look(self, image: Image.Image, instruction: str) -> str:
        """Ask the vision model about one image and return its reply text."""
        return self.ask([image, instruction])

    def ask(self, parts: list[Image.Image | str], **budgets: Any) -> str:
        """Ask the vision model about images and text, in order; return its reply text. ``budgets`` override
        ``max_image_tokens``/``max_tokens`` for this call, and may carry ChatQwenVL's ``draft_text`` (other
        chat models get none of them)."""
        if self.vlm is None:
            raise ToolException(f"{self.name} needs a vision chat model; build the tools with make_tools(vlm, store).")
        content = [{"type": "text", "text": p} if isinstance(p, str) else image_block(p, self.vlm) for p in parts]
        messages = [HumanMessage(content=content)]
        if self.system_prompt:
            messages.insert(0, SystemMessage(content=self.system_prompt))
        try:
            reply = self.vlm.invoke(messages, **self._model_kwargs(**budgets))
        except QwenVLError:
            raise
        except Exception as exc:  # any provider's failure becomes a tool error the planner can read
            raise ToolException(f"The vision model failed: {type(exc).__name__}: {exc}") from exc
        return reply.text.strip()

    def _model_kwargs(self, **budgets: Any) -> dict[str, Any]:
        """Per-call budgets; only ChatQwenVL knows the image-token budget."""
        from qwenvl_agent.vlm.chat_model import ChatQwenVL

        if isinstance(self.vlm, ChatQwenVL):
            return {"max_image_tokens": self.max_image_tokens, "max_tokens": self.max_tokens,
                    "repetition_guard": self.repetition_guard, **budgets}
        return {}
