"""A generation as LangChain chunks: answer text, reasoning and tool calls as they come, then a last chunk
with the usage, the finish reason and the timings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from .generation import GenerationSettings, GenerationStats, Prompt
from .tool_calls import THINK_END, ParsedCall, Reasoning, ReplySplitter

if TYPE_CHECKING:
    from .runtime import VLMRuntime


def reply_chunks(
    runtime: VLMRuntime, prompt: Prompt, settings: GenerationSettings, model: str
) -> Iterator[ChatGenerationChunk]:
    """Generate, one chunk per piece of the reply (answer text, reasoning or a tool call), then a last chunk
    with the usage and the finish reason. ``model``: the name the reply's metadata gives."""
    names = [tool["function"]["name"] for tool in prompt.tools or []]
    splitter = ReplySplitter(thinking=runtime.opens_thinking, tool_names=names)
    calls = 0

    def emit(pieces: Iterable[str | Reasoning | ParsedCall]) -> Iterator[ChatGenerationChunk]:
        nonlocal calls
        pieces = list(pieces)
        yield from piece_chunks(pieces, first_call=calls)
        calls += sum(isinstance(piece, ParsedCall) for piece in pieces)

    forced, stats = prompt.assistant_prefix, []
    if forced and runtime.opens_thinking:
        # A Thinking model reasons first (freely: no grammar); the forced call opens right after its reasoning.
        thought = Prompt(prompt.messages, prompt.images, prompt.tools, assistant_prefix="")
        for item in runtime.stream(thought, replace(settings, stop=(THINK_END,), grammar=None)):
            if isinstance(item, GenerationStats):
                stats.append(item)
            else:
                yield from emit(splitter.feed(item))
        prompt = replace(prompt, assistant_prefix=splitter.reasoning + THINK_END + "\n\n" + forced)
        yield from emit(splitter.feed(THINK_END + "\n\n"))
    yield from emit(splitter.feed(forced))
    for item in runtime.stream(prompt, settings):
        if isinstance(item, GenerationStats):
            stats.append(item)
        else:
            yield from emit(splitter.feed(item))
    yield from emit(splitter.finish())
    yield last_chunk(combined(stats), model, has_calls=calls > 0)


def piece_chunks(pieces: Iterable[str | Reasoning | ParsedCall], first_call: int) -> Iterator[ChatGenerationChunk]:
    """One chunk per piece from ``ReplySplitter``; tool calls are numbered on from ``first_call``."""
    index = first_call
    for piece in pieces:
        if isinstance(piece, str):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        elif isinstance(piece, Reasoning):
            reasoning = AIMessageChunk(content="", additional_kwargs={"reasoning_content": piece.text})
            yield ChatGenerationChunk(message=reasoning)
        else:
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[piece.as_chunk(index)]))
            index += 1


def last_chunk(stats: GenerationStats, model: str, has_calls: bool) -> ChatGenerationChunk:
    """The closing chunk: usage (image tokens are input tokens), finish reason ("tool_calls" when a reply that
    stopped on its own made calls) and where the time went."""
    reason = "tool_calls" if has_calls and stats.finish_reason == "stop" else stats.finish_reason
    times = stats.times
    message = AIMessageChunk(
        content="",
        chunk_position="last",
        usage_metadata={
            "input_tokens": stats.input_tokens,
            "output_tokens": stats.output_tokens,
            "total_tokens": stats.input_tokens + stats.output_tokens,
            "input_token_details": {"cache_read": times.reused_tokens},
        },
        response_metadata={
            "model_name": model,
            "model_provider": "qwenvl",
            "finish_reason": reason,
            "generation_seconds": round(stats.seconds, 3),
            "timings": {
                "first_token_seconds": _rounded(times.first_token_seconds),
                "vision_seconds": round(times.vision_seconds, 3),
                "prefill_seconds": round(times.prefill_seconds, 3),
                "prefill_tokens": times.prefill_tokens,
                "reused_tokens": times.reused_tokens,
                "images_encoded": times.images_encoded,
                "images_cached": times.images_cached,
                # Forward passes while decoding, and the tokens jump-forward fed without a pass of their own.
                "decode_steps": stats.decode_steps,
                "forced_tokens": stats.forced_tokens,
                # Prompt-lookup drafts the model checked, and those the reply took.
                "draft_tokens": times.draft_tokens,
                "accepted_draft_tokens": times.accepted_draft_tokens,
            },
        },
    )
    return ChatGenerationChunk(message=message, generation_info={"finish_reason": reason})


def combined(stats: list[GenerationStats]) -> GenerationStats:
    """One report for a reply made in two generations (a Thinking model's reasoning, then its forced call)."""
    if len(stats) == 1:
        return stats[0]
    first, last = stats[0], stats[-1]
    return GenerationStats(
        input_tokens=first.input_tokens,
        output_tokens=sum(s.output_tokens for s in stats),
        finish_reason=last.finish_reason,
        seconds=sum(s.seconds for s in stats),
        times=first.times,
        decode_steps=sum(s.decode_steps for s in stats),
        forced_tokens=sum(s.forced_tokens for s in stats),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
