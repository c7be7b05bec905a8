"""A streamed reply split into answer text and tool calls: the same pieces however the reply is fed, a call
never sent out as text, and text sent out as soon as it is known not to be a call."""

from __future__ import annotations

import random

import pytest

from qwenvl_agent.vlm.tool_calls import ParsedCall, ReplySplitter, bare_call_start, bare_calls

NAMES = ["get_weather", "ocr_image"]
CALL = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'
OTHER = '{"name": "ocr_image", "arguments": {"image_id": "img-1"}}'
TAGGED = f"<tool_call>\n{CALL}\n</tool_call>"

REPLIES = {
    "plain text": "  The total is 1,500.00.\nThat is all.\n",
    "bare call": CALL,
    "text, then a bare call": "Let me check.\n" + CALL,
    "fenced bare call": f"```json\n{CALL}\n```",
    "two bare calls": f"{CALL}\n{OTHER}",
    "a list of calls": f"[{CALL}, {OTHER}]",
    "loosely written call": "I will look.\n{'name': 'get_weather', 'arguments': {'city': 'Oslo'},}",
    "unfinished bare call": '{"name": "get_weather", "arguments": {"city": "Oslo"}',
    "JSON that is not a call": 'Here is JSON:\n{"name": "John"}\nand more text.',
    "a call of another tool": '{"name": "send_mail", "arguments": {}}',
    "a call, then text": CALL + " is what I would call.",
    "code that is not JSON": "```python\nprint({'a': 1})\n```\nDone.",
    "tagged call": "Checking.\n" + TAGGED + "\nDone.",
    "tagged, then bare JSON": TAGGED + "\n" + CALL,
    "braces mid-line": "The set {1, 2} has two elements.\n{ not json",
}


def feed(reply: str, sizes: list[int], names=NAMES) -> list[list]:
    """The pieces out of each ``feed`` (reply cut into pieces of these sizes), then those of ``finish``."""
    splitter, out, position = ReplySplitter(tool_names=names), [], 0
    for size in sizes:
        out.append(splitter.feed(reply[position : position + size]))
        position += size
    out.append(splitter.finish())
    return out


def summary(batches: list[list]) -> tuple[str, list]:
    pieces = [piece for batch in batches for piece in batch]
    text = "".join(p for p in pieces if isinstance(p, str))
    calls = [(p.name, p.args, p.error is None) for p in pieces if isinstance(p, ParsedCall)]
    return text, calls


def cuts(length: int, seed: int) -> list[int]:
    rng, sizes = random.Random(seed), []
    while sum(sizes) < length:
        sizes.append(rng.randint(1, 6))
    return sizes


@pytest.mark.parametrize("shape", list(REPLIES))
def test_the_pieces_do_not_depend_on_how_the_reply_was_fed(shape):
    reply = REPLIES[shape]
    whole = summary(feed(reply, [len(reply)]))
    assert summary(feed(reply, [1] * len(reply))) == whole
    for seed in range(5):
        assert summary(feed(reply, cuts(len(reply), seed))) == whole


@pytest.mark.parametrize(
    "shape, text, calls",
    [
        ("plain text", REPLIES["plain text"], []),
        ("bare call", "", ["get_weather"]),
        ("text, then a bare call", "Let me check.", ["get_weather"]),
        ("fenced bare call", "", ["get_weather"]),
        ("two bare calls", "", ["get_weather", "ocr_image"]),
        ("a list of calls", "", ["get_weather", "ocr_image"]),
        ("loosely written call", "I will look.", ["get_weather"]),
        ("unfinished bare call", "", ["get_weather"]),
        ("JSON that is not a call", REPLIES["JSON that is not a call"], []),
        ("a call of another tool", REPLIES["a call of another tool"], []),
        ("a call, then text", REPLIES["a call, then text"], []),
        ("code that is not JSON", REPLIES["code that is not JSON"], []),
        ("tagged call", "Checking.\n\nDone.", ["get_weather"]),  # the blanks around the call, but for the ends
        ("tagged, then bare JSON", CALL, ["get_weather"]),  # after a tagged call, plain JSON is text
    ],
)
def test_what_a_reply_is_split_into(shape, text, calls):
    got_text, got_calls = summary(feed(REPLIES[shape], [1] * len(REPLIES[shape])))
    assert got_text == text
    assert [name for name, _, valid in got_calls if valid] == calls


@pytest.mark.parametrize("shape", ["bare call", "text, then a bare call", "fenced bare call", "two bare calls", "a list of calls",
                                   "loosely written call", "unfinished bare call"])
def test_a_bare_call_never_goes_out_as_text(shape):
    reply = REPLIES[shape]
    texts = [p for batch in feed(reply, [1] * len(reply)) for p in batch if isinstance(p, str)]
    assert not any(mark in text for text in texts for mark in ("{", "[", "`", "name"))


def test_text_goes_out_as_soon_as_it_cannot_be_a_call():
    reply = 'It is sunny.\nHere is JSON:\n{"name": "John"}\nTomorrow too.\n' + CALL
    batches = feed(reply, [1] * len(reply))
    streamed = "".join(p for batch in batches[:-1] for p in batch if isinstance(p, str))  # before the reply ended
    assert streamed == 'It is sunny.\nHere is JSON:\n{"name": "John"}\nTomorrow too.'
    assert [p.name for p in batches[-1] if isinstance(p, ParsedCall)] == ["get_weather"]


def test_without_tools_json_is_text_and_goes_out_at_once():
    batches = feed(CALL, [1] * len(CALL), names=[])
    assert "".join(p for batch in batches[:-1] for p in batch) == CALL


@pytest.mark.parametrize("shape", [shape for shape in REPLIES if "tagged" not in shape])
def test_bare_call_start_never_passes_where_the_calls_begin(shape):
    """Whatever has come so far, the text held back from ``bare_call_start`` on still holds all the calls."""
    reply = REPLIES[shape]
    before, calls = bare_calls(reply, NAMES)
    begin = len(reply)
    if calls:  # the first line start from which the rest is nothing but the calls
        begin = next(line for line in range(len(reply)) if (line == 0 or reply[line - 1] == "\n")
                     and bare_calls(reply[line:], NAMES)[0] == "" and bare_calls(reply[line:], NAMES)[1])
        assert reply[:begin].rstrip() == before
    for end in range(len(reply) + 1):
        start = bare_call_start(reply[:end], NAMES)
        assert (end if start is None else start) <= begin, reply[:end]
