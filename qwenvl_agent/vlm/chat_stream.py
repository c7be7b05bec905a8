"""One generation path for a chat model whose reply comes as chunks: LangChain's four entry points (``stream``,
``astream``, ``invoke``, ``ainvoke``) all read the chunks of ``_chunks``. ``invoke`` is the merged stream, so
it equals ``stream`` by construction (as ``langchain_ollama``'s ``ChatOllama`` does it); the async ones run the
generation in a worker thread through ``WorkerRun``, the one bridge to async consumers, and cancel it with the task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from .bridge import WorkerRun


class StreamedChatModel(BaseChatModel):
    """A chat model that makes its replies in ``_chunks``; the rest of LangChain's entry points come from it."""

    def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Iterator[ChatGenerationChunk]:
        """The reply to ``messages`` as chunks, made in the calling thread; ``kwargs`` are the call's options."""
        raise NotImplementedError

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, stop, kwargs):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The generation runs in a worker thread (``WorkerRun``); the event loop only awaits its chunks.
        Cancelling the task (or closing the stream) stops the generation within a token or so and frees the model."""
        run = WorkerRun(lambda: self._chunks(messages, stop, kwargs), name="qwenvl-astream")
        async for chunk in run.aiterate():
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The merged stream: ``invoke`` and ``stream`` give the same reply by construction."""
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
