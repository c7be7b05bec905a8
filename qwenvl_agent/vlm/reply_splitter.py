"""The streamed reply split into what it is: a Thinking model's reasoning, answer text, and tool calls (tagged,
or written as plain JSON), the same pieces however the reply was fed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .bare_calls import bare_call_start, bare_calls
from .call_blocks import ParsedCall, ToolCallSplitter


THINK_END = "</think>"


@dataclass
class Reasoning:
    """A piece of a Thinking model's reasoning: not the answer, and never a tool call."""

    text: str


class ReplySplitter:
    """Splits a streamed reply into ``Reasoning`` pieces (for a Thinking model, whose reply opens inside
    ``<think>``, everything up to ``</think>``), then answer text and ``ParsedCall``s. A tool call written
    inside the reasoning stays reasoning: it is thought about, not made.

    With ``tool_names``, calls of those tools written as plain JSON (``bare_calls``) are calls too. Text that
    may still turn out to be such calls is held back until that is known, so a call never goes out as answer
    text; so are blanks, which go out with the text after them (the blanks around calls are not the answer).
    The pieces of a whole reply are the same however it was fed."""

    def __init__(self, thinking: bool = False, tool_names: Sequence[str] = ()) -> None:
        self.thinking = thinking
        self.reasoning = ""
        self._calls = ToolCallSplitter()
        self._answer_text = _HeldText(list(tool_names))
        self._held = ""
        self._strip_newlines = thinking  # the answer follows "</think>" after a blank line

    def feed(self, text: str) -> list[str | ParsedCall | Reasoning]:
        if not self.thinking:
            return self._answer(text)
        self._held += text
        end = self._held.find(THINK_END)
        if end < 0:
            keep = next((n for n in range(min(len(THINK_END) - 1, len(self._held)), 0, -1)
                         if THINK_END.startswith(self._held[-n:])), 0)
            piece, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
            return self._reason(piece)
        piece, rest = self._held[:end], self._held[end + len(THINK_END) :]
        self._held = ""
        self.thinking = False
        return self._reason(piece) + self._answer(rest)

    def finish(self) -> list[str | ParsedCall | Reasoning]:
        if self.thinking:  # the reply ended while still reasoning
            held, self._held = self._held, ""
            return self._reason(held)
        return self._answer_text.finish(self._calls.finish())

    def _reason(self, text: str) -> list[Reasoning]:
        self.reasoning += text
        return [Reasoning(text)] if text else []

    def _answer(self, text: str) -> list[str | ParsedCall]:
        if self._strip_newlines:
            text = text.lstrip("\n")
            self._strip_newlines = not text
        return self._answer_text.add(self._calls.feed(text)) if text else []


class _HeldText:
    """The answer's text and tagged calls on their way out (see ``ReplySplitter``)."""

    def __init__(self, tool_names: list[str]) -> None:
        self.tool_names = tool_names
        self.text = ""  # all the answer's text so far
        self.sent = 0  # how much of it has gone out
        self.checked = 0  # bare calls cannot begin before this
        self.called = False  # a tagged call came: plain JSON after it is text
        self.shown = False

    def add(self, parts: list[str | ParsedCall]) -> list[str | ParsedCall]:
        out: list[str | ParsedCall] = []
        for part in parts:
            if isinstance(part, str):
                self.text += part
                continue
            out += self._release(len(self.text))
            if not self.shown:  # only blanks before the first call: not part of the answer
                self.sent = len(self.text)
            self.called = True
            out.append(part)
        return out + self._release(self._hold_from())

    def finish(self, parts: list[str | ParsedCall]) -> list[str | ParsedCall]:
        out = self.add(parts)
        if not self.called and self.tool_names:
            before, calls = bare_calls(self.text, self.tool_names)
            if calls:
                self.called = True
                out += self._release(len(before)) + calls
                self.sent = len(self.text)
        rest = self.text[self.sent :]
        self.sent = len(self.text)
        rest = rest.rstrip() if self.called else rest
        return out + ([rest] if rest else [])

    def _hold_from(self) -> int:
        if self.called or not self.tool_names:
            return len(self.text)
        start = bare_call_start(self.text, self.tool_names, self.checked)
        self.checked = len(self.text) if start is None else start
        return self.checked

    def _release(self, end: int) -> list[str]:
        """The text up to ``end`` that has not gone out yet, but for its trailing blanks."""
        piece = self.text[self.sent : end]
        if self.called and not self.shown:  # blanks between a call and the first words are not the answer
            self.sent += len(piece) - len(piece.lstrip())
            piece = piece.lstrip()
        piece = piece.rstrip()
        if not piece:
            return []
        self.sent += len(piece)
        self.shown = True
        return [piece]
