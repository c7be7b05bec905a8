"""ChatQwenVL through its public LangChain API on the tiny checkpoint: the real processor → generate → decode."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from typing import TypedDict

import pytest
from documents import draw_text_image, png_bytes
from given import given_prompts
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, Field

from qwenvl_agent.vlm import BusyError, ChatQwenVL, ImageInputError
from qwenvl_agent.vlm.testing import make_tiny_checkpoint, scripted_replies, tool_call_text


@pytest.fixture
def llm(tiny_model, engine):
    """Every test here runs on each engine that is installed: the same features, the same results."""
    return ChatQwenVL(model=tiny_model, engine=engine, max_tokens=8)


def b64_png(lines=("hello",), size=(96, 64)) -> str:
    return base64.b64encode(png_bytes(draw_text_image(list(lines), size=size))).decode()


def image_tokens(llm, content) -> int:
    """Input tokens of a message with images minus the same message without them."""
    with_images = llm.invoke([HumanMessage(content=content)]).usage_metadata["input_tokens"]
    text_only = [b for b in content if b.get("type") == "text"]
    return with_images - llm.invoke([HumanMessage(content=text_only)]).usage_metadata["input_tokens"]


def test_text_invoke_returns_an_ai_message_with_usage_and_metadata(llm):
    result = llm.invoke("What is on the invoice?")
    assert isinstance(result, AIMessage) and isinstance(result.content, str)
    usage = result.usage_metadata
    assert usage["output_tokens"] <= 8 and usage["input_tokens"] > 5
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert result.response_metadata["model_name"] == llm.model
    assert result.response_metadata["finish_reason"] in ("stop", "length")


def test_every_image_form_is_accepted(llm, tmp_path):
    data = b64_png()
    path = tmp_path / "doc.png"
    path.write_bytes(base64.b64decode(data))
    forms = [
        {"type": "image", "base64": data, "mime_type": "image/png"},
        {"type": "image", "url": f"data:image/png;base64,{data}"},
        {"type": "image", "url": path.as_uri()},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        {"type": "image_url", "image_url": {"url": path.as_uri()}},
        {"type": "image", "source_type": "base64", "data": data, "mime_type": "image/png"},
        {"type": "image", "image": draw_text_image(["hello"], size=(96, 64))},
        {"type": "image", "image": str(path)},
    ]
    counts = {image_tokens(llm, [{"type": "text", "text": "Read it."}, form]) for form in forms}
    # 96x64 px is below the minimum budget, so every form becomes the same handful of visual tokens
    assert len(counts) == 1 and counts.pop() > 0


def test_several_images_across_turns_and_in_tool_messages(llm):
    one, two = b64_png(["one"]), b64_png(["two"], size=(128, 96))
    messages = [
        SystemMessage("You read documents."),
        HumanMessage(
            content=[
                {"type": "image", "base64": one, "mime_type": "image/png"},
                {"type": "image", "base64": two, "mime_type": "image/png"},
                {"type": "text", "text": "Compare them."},
            ]
        ),
        AIMessage("", tool_calls=[{"name": "zoom_image", "args": {"image_id": "img-1"}, "id": "c1"}]),
        ToolMessage(content=[{"type": "image", "base64": one, "mime_type": "image/png"}, {"type": "text", "text": "zoomed"}], tool_call_id="c1"),
        AIMessage("They differ."),
        HumanMessage("And now?"),
    ]
    with_images = llm.invoke(messages).usage_metadata["input_tokens"]
    text_only = [
        m.model_copy(update={"content": [b for b in m.content_blocks if b["type"] == "text"]})
        if isinstance(m, (HumanMessage, ToolMessage))
        else m
        for m in messages
    ]
    # three images (two in the question, one in the tool result), each at least the 4-token minimum
    assert with_images - llm.invoke(text_only).usage_metadata["input_tokens"] >= 3 * 4


def test_max_image_tokens_bounds_the_visual_tokens(llm):
    big = b64_png(["a page"], size=(1024, 1024))
    content = [{"type": "text", "text": "Read."}, {"type": "image", "base64": big, "mime_type": "image/png"}]
    assert image_tokens(ChatQwenVL(model=llm.model, engine=llm.engine, max_tokens=2, max_image_tokens=64), content) <= 64 + 2
    assert image_tokens(ChatQwenVL(model=llm.model, engine=llm.engine, max_tokens=2, max_image_tokens=256), content) > 200
    per_call = llm.invoke([HumanMessage(content=content)], max_image_tokens=16, max_tokens=2)
    default = llm.invoke([HumanMessage(content=content)], max_tokens=2)
    assert per_call.usage_metadata["input_tokens"] < default.usage_metadata["input_tokens"]


def test_bad_image_raises_image_input_error_naming_the_message(llm):
    bad = [{"type": "text", "text": "x"}, {"type": "image", "base64": base64.b64encode(b"nope").decode(), "mime_type": "image/png"}]
    with pytest.raises(ImageInputError, match="message 1"):
        llm.invoke([HumanMessage(content=bad)])
    with pytest.raises(ImageInputError, match="remote images is turned off"):
        ChatQwenVL(model=llm.model, engine=llm.engine, allow_remote_images=False).invoke(
            [HumanMessage(content=[{"type": "image", "url": "http://127.0.0.1:9/x.png"}])]
        )


def test_stream_yields_chunks_with_a_last_chunk_carrying_usage(llm):
    chunks = list(llm.stream("Describe the chart."))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert chunks[-1].chunk_position == "last"
    assert sum(1 for c in chunks if c.usage_metadata) == 1 and chunks[-1].usage_metadata
    whole = llm.invoke("Describe the chart.")
    assert "".join(c.content for c in chunks) == whole.content  # greedy: same text either way


def test_stop_sequences_cut_the_reply(llm):
    with scripted_replies(llm.runtime, ["alpha beta STOP gamma"]):
        result = llm.invoke("go", stop=["STOP"], max_tokens=30)
    assert result.content == "alpha beta "
    assert result.response_metadata["finish_reason"] == "stop"


def test_time_limit_ends_generation_with_finish_reason_timeout(llm):
    result = ChatQwenVL(model=llm.model, engine=llm.engine, max_tokens=100_000, timeout=0.3).invoke("Write a long story.")
    assert result.response_metadata["finish_reason"] == "timeout"
    assert 0 < result.usage_metadata["output_tokens"] < 100_000


def test_sampling_parameters_are_honoured(llm):
    outputs = {ChatQwenVL(model=llm.model, engine=llm.engine, max_tokens=12, temperature=1.5, top_k=0, top_p=1.0).invoke("hi").content for _ in range(4)}
    assert len(outputs) > 1  # sampling varies; greedy (the default) does not
    assert len({llm.invoke("hi").content for _ in range(2)}) == 1


async def test_ainvoke_and_astream_do_not_block_the_event_loop(llm):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    slow = ChatQwenVL(model=llm.model, engine=llm.engine, max_tokens=400)
    result = await slow.ainvoke("Tell me everything.")
    chunks = [c async for c in slow.astream("And again.")]
    task.cancel()
    assert isinstance(result, AIMessage) and chunks[-1].chunk_position == "last"
    assert ticks > 5


def test_batch_runs_every_input(llm):
    results = llm.batch(["one", "two", "three"])
    assert len(results) == 3 and all(isinstance(r, AIMessage) for r in results)


def test_busy_error_when_the_queue_is_full(llm):
    gate = llm.runtime.gate
    errors: list[Exception] = []
    done = threading.Event()

    def waiter():
        try:
            llm.invoke("queued")
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    with gate.hold():  # another caller is generating
        threads = [threading.Thread(target=waiter) for _ in range(gate.max_waiting)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while gate.waiting < gate.max_waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gate.waiting == gate.max_waiting
        start = time.monotonic()
        with pytest.raises(BusyError, match="busy"):
            llm.invoke("one too many")
        assert time.monotonic() - start < 1.0  # refused at once, not after a wait
        done.set()
    for t in threads:
        t.join(timeout=30)
    assert errors == []  # the queued callers ran once the gate opened


class GetWeather(BaseModel):
    """Get the weather in a city."""

    city: str = Field(description="City name")


def test_bind_tools_renders_tools_and_parses_calls(llm):
    bound = llm.bind_tools([GetWeather])
    with scripted_replies(llm.runtime, [tool_call_text("GetWeather", {"city": "杭州"}, prefix="Let me check.\n")]) as left:
        result = bound.invoke("Weather in Hangzhou?", max_tokens=60)
    assert left == []
    assert result.content == "Let me check."
    assert result.tool_calls[0]["name"] == "GetWeather" and result.tool_calls[0]["args"] == {"city": "杭州"}
    assert result.response_metadata["finish_reason"] == "tool_calls"
    without_tools = llm.invoke("Weather in Hangzhou?").usage_metadata["input_tokens"]
    assert bound.invoke("Weather in Hangzhou?").usage_metadata["input_tokens"] > without_tools + 30


def test_streamed_tool_calls_arrive_as_tool_call_chunks(llm):
    two = tool_call_text("GetWeather", {"city": "Paris"}) + "\n" + tool_call_text("GetWeather", {"city": "Rome"})
    with scripted_replies(llm.runtime, [two]):
        chunks = list(llm.bind_tools([GetWeather]).stream("Paris and Rome?", max_tokens=80))
    assert any(c.tool_call_chunks for c in chunks)
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert [c["args"]["city"] for c in merged.tool_calls] == ["Paris", "Rome"]
    assert "<tool_call>" not in merged.content


def test_malformed_call_becomes_invalid_tool_call_in_invoke_and_stream(llm):
    # Unquoted values, single quotes and the like are repaired; arguments that are not an object cannot be.
    bad = '<tool_call>\n{"name": "GetWeather", "arguments": ["Paris"]}\n</tool_call>'
    bound = llm.bind_tools([GetWeather])
    with scripted_replies(llm.runtime, [bad, bad]):
        result = bound.invoke("x", max_tokens=60)
        merged = None
        for chunk in bound.stream("x", max_tokens=60):
            merged = chunk if merged is None else merged + chunk
    assert result.tool_calls == [] and result.invalid_tool_calls[0]["name"] == "GetWeather"
    assert merged.tool_calls == [] and merged.invalid_tool_calls


def test_forced_tool_choice_opens_the_reply_with_the_call(llm):
    class Lookup(BaseModel):
        """Look a word up."""

        word: str

    bound = llm.bind_tools([GetWeather, Lookup], tool_choice="Lookup")
    # The prompt already holds '<tool_call>\n{"name": "Lookup", "arguments": ' so the model writes only the rest.
    with scripted_replies(llm.runtime, ['{"word": "invoice"}}\n</tool_call> and more text']):
        result = bound.invoke("anything", max_tokens=60)
    assert result.tool_calls[0]["name"] == "Lookup" and result.tool_calls[0]["args"] == {"word": "invoice"}
    with scripted_replies(llm.runtime, ['GetWeather", "arguments": {"city": "Oslo"}}\n</tool_call>']):
        result = llm.bind_tools([GetWeather, Lookup], tool_choice="any").invoke("anything", max_tokens=60)
    assert result.tool_calls[0]["name"] == "GetWeather"
    with pytest.raises(ValueError, match="tool_choice"):
        llm.bind_tools([GetWeather], tool_choice="Nope")


class Invoice(BaseModel):
    """Fields read from an invoice."""

    number: str
    total: float


class InvoiceDict(TypedDict):
    number: str
    total: float


INVOICE_SCHEMA = {
    "title": "Invoice",
    "description": "Fields read from an invoice.",
    "type": "object",
    "properties": {"number": {"type": "string"}, "total": {"type": "number"}},
    "required": ["number", "total"],
}


@pytest.mark.parametrize("schema", [Invoice, InvoiceDict, INVOICE_SCHEMA], ids=["pydantic", "typeddict", "json-schema"])
def test_with_structured_output(llm, invoice_image, schema):
    structured = llm.with_structured_output(schema)
    image = base64.b64encode(png_bytes(invoice_image)).decode()
    question = HumanMessage(
        content=[{"type": "image", "base64": image, "mime_type": "image/png"}, {"type": "text", "text": "Read it."}]
    )
    with scripted_replies(llm.runtime, ['{"number": "12345678", "total": 1500.0}}\n</tool_call>']):
        result = structured.invoke([question], max_tokens=60)
    if schema is Invoice:
        assert result == Invoice(number="12345678", total=1500.0)
    else:
        assert result == {"number": "12345678", "total": 1500.0}


def test_concurrent_callers_share_one_model_and_all_finish(llm):
    results: list[AIMessage] = []
    threads = [threading.Thread(target=lambda: results.append(llm.invoke("hi"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 3


def merged(chunks):
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    return whole


def calls_of(message) -> list[tuple]:
    return [(c["name"], c["args"]) for c in message.tool_calls]


BARE_CALL = '{"name": "GetWeather", "arguments": {"city": "Oslo"}}'
SAME_EITHER_WAY = {
    "plain text": "  It is sunny in Oslo.\n",
    "tagged call": tool_call_text("GetWeather", {"city": "Oslo"}, prefix="Let me check.\n"),
    "bare JSON call": BARE_CALL,
    "text, then a bare JSON call": "I will look it up.\n" + BARE_CALL,
    "fenced bare JSON call": "```json\n" + BARE_CALL + "\n```",
    "JSON that is not a call": 'Here is JSON:\n{"name": "John"}',
    "a call, then text": tool_call_text("GetWeather", {"city": "Oslo"}) + "\nDone.",
}


@pytest.mark.parametrize("shape", list(SAME_EITHER_WAY))
def test_invoke_is_the_merged_stream(llm, shape):
    reply = SAME_EITHER_WAY[shape]
    bound = llm.bind_tools([GetWeather])
    with scripted_replies(llm.runtime, [reply, reply]) as left:
        whole = bound.invoke("Weather in Oslo?", max_tokens=80)
        streamed = merged(list(bound.stream("Weather in Oslo?", max_tokens=80)))
    assert left == []
    assert streamed.content == whole.content
    assert calls_of(streamed) == calls_of(whole)
    assert [c["name"] for c in streamed.invalid_tool_calls] == [c["name"] for c in whole.invalid_tool_calls]
    assert streamed.response_metadata["finish_reason"] == whole.response_metadata["finish_reason"]
    tokens = ("input_tokens", "output_tokens")  # cache reads differ: the second call reuses the first's prompt
    assert [streamed.usage_metadata[k] for k in tokens] == [whole.usage_metadata[k] for k in tokens]


def test_a_bare_json_call_streams_as_a_call_and_never_as_text(llm):
    bound = llm.bind_tools([GetWeather])
    with scripted_replies(llm.runtime, [BARE_CALL, "I will look it up.\n" + BARE_CALL]):
        bare = list(bound.stream("Weather in Oslo?", max_tokens=80))
        after_text = list(bound.stream("Weather in Oslo?", max_tokens=80))
    assert [c.content for c in bare if c.content] == []  # the call's JSON never went out as answer text
    assert calls_of(merged(bare)) == [("GetWeather", {"city": "Oslo"})]
    assert merged(after_text).content == "I will look it up."
    assert not any("{" in c.content for c in after_text)
    assert calls_of(merged(after_text)) == [("GetWeather", {"city": "Oslo"})]


def test_text_streams_as_it_comes_when_tools_are_bound(llm):
    reply = "It is sunny in Oslo today, and warm."
    with scripted_replies(llm.runtime, [reply]):
        chunks = list(llm.bind_tools([GetWeather]).stream("Weather in Oslo?", max_tokens=80))
    texts = [c.content for c in chunks if c.content]
    assert "".join(texts) == reply and len(texts) > 3  # not held back to the end


class Lookup(BaseModel):
    """Look a word up."""

    word: str


ANY_CALL = 'GetWeather", "arguments": {"city": "Oslo"}}\n</tool_call>'
LOOKUP_ARGS = '{"word": "invoice"}}\n</tool_call>'


@pytest.mark.parametrize(
    "choice, reply, prefix, call",
    [
        ("required", ANY_CALL, '<tool_call>\n{"name": "', ("GetWeather", {"city": "Oslo"})),
        ("any", ANY_CALL, '<tool_call>\n{"name": "', ("GetWeather", {"city": "Oslo"})),
        (True, ANY_CALL, '<tool_call>\n{"name": "', ("GetWeather", {"city": "Oslo"})),
        ("auto", "Sunny.", "", None),
        ("Lookup", LOOKUP_ARGS, '<tool_call>\n{"name": "Lookup", "arguments": ', ("Lookup", {"word": "invoice"})),
        ({"type": "function", "function": {"name": "Lookup"}}, LOOKUP_ARGS, '<tool_call>\n{"name": "Lookup", "arguments": ',
         ("Lookup", {"word": "invoice"})),
    ],
    ids=["required", "any", "true", "auto", "name", "openai-dict"],
)
def test_tool_choice_given_per_call_is_understood_like_bind_tools(llm, monkeypatch, choice, reply, prefix, call):
    tools = [GetWeather, Lookup]
    runs = {
        "bind": lambda: llm.bind(tools=tools, tool_choice=choice).invoke("Weather in Oslo?", max_tokens=60),
        "invoke": lambda: llm.invoke("Weather in Oslo?", tools=tools, tool_choice=choice, max_tokens=60),
        "bind_tools, then per call": lambda: llm.bind_tools(tools).invoke("Weather in Oslo?", tool_choice=choice, max_tokens=60),
        "bind_tools": lambda: llm.bind_tools(tools, tool_choice=choice).invoke("Weather in Oslo?", max_tokens=60),
    }
    prompts = given_prompts(monkeypatch, llm)
    for how, run in runs.items():
        with scripted_replies(llm.runtime, [reply]):
            result = run()
        given = prompts[-1]
        assert given.assistant_prefix == prefix, how
        assert [t["function"]["name"] for t in given.tools] == ["GetWeather", "Lookup"], how
        assert calls_of(result) == ([call] if call else []), how


def test_tool_choice_none_per_call_offers_no_tools(llm, monkeypatch):
    prompts = given_prompts(monkeypatch, llm)
    llm.bind(tools=[GetWeather], tool_choice="none").invoke("Weather in Oslo?", max_tokens=2)
    llm.bind_tools([GetWeather]).invoke("Weather in Oslo?", tool_choice="none", max_tokens=2)
    assert [(p.tools, p.assistant_prefix) for p in prompts] == [(None, ""), (None, "")]


@pytest.mark.parametrize("choice", ["Nope", {"type": "function", "function": {"name": "Nope"}}, 3, ["any"]])
def test_a_bad_tool_choice_per_call_is_a_clear_error(llm, choice):
    with pytest.raises(ValueError, match="tool_choice .* is not 'auto', 'none', 'any', 'required' or one of the tools"):
        llm.bind(tools=[GetWeather], tool_choice=choice).invoke("x", max_tokens=2)
    with pytest.raises(ValueError, match="tool_choice"):
        llm.invoke("x", tools=[GetWeather], tool_choice=choice, max_tokens=2)


def chunk_view(chunk) -> tuple:
    message = chunk.message
    return (
        message.content,
        message.additional_kwargs.get("reasoning_content"),
        [(c["name"], c["args"], c["index"]) for c in message.tool_call_chunks],
        (message.response_metadata or {}).get("finish_reason"),
    )


class SyncRecorder(BaseCallbackHandler):
    def __init__(self):
        self.chunks = []

    def on_llm_new_token(self, token, *, chunk=None, **kwargs):
        self.chunks.append(chunk_view(chunk))


class AsyncRecorder(AsyncCallbackHandler):
    def __init__(self):
        self.chunks = []

    async def on_llm_new_token(self, token, *, chunk=None, **kwargs):
        self.chunks.append(chunk_view(chunk))


async def chunks_seen_by_callbacks(model, reply: str) -> dict[str, list[tuple]]:
    """The chunks a callback handler is given in each way of calling ``model`` (a bound ChatQwenVL; sync handlers for the sync
    calls, async ones for the async calls), the model replying ``reply`` each time."""
    recorders = {how: (AsyncRecorder() if how.startswith("a") else SyncRecorder()) for how in ("invoke", "stream", "ainvoke", "astream")}
    config = {how: {"callbacks": [recorder]} for how, recorder in recorders.items()}
    with scripted_replies(model.bound.runtime, [reply] * 4) as left:
        model.invoke("Weather?", max_tokens=80, config=config["invoke"])
        list(model.stream("Weather?", max_tokens=80, config=config["stream"]))
        await model.ainvoke("Weather?", max_tokens=80, config=config["ainvoke"])
        [c async for c in model.astream("Weather?", max_tokens=80, config=config["astream"])]
    assert left == []
    return {how: recorder.chunks for how, recorder in recorders.items()}


async def test_async_callbacks_see_every_chunk_the_sync_ones_see(llm):
    reply = tool_call_text("GetWeather", {"city": "Oslo"}, prefix="Let me check.\n") + "\n" + tool_call_text("Lookup", {"word": "rain"})
    seen = await chunks_seen_by_callbacks(llm.bind_tools([GetWeather, Lookup]), reply)
    expected = seen["stream"]
    assert [name for _, _, calls, _ in expected for name, _, _ in calls] == ["GetWeather", "Lookup"]
    assert [how for how, chunks in seen.items() if chunks != expected] == []


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory) -> str:
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("thinking"), thinking=True))


async def test_async_callbacks_see_reasoning_chunks_too(thinking_model):
    llm = ChatQwenVL(model=thinking_model, engine="torch", max_tokens=80)
    reply = "The user wants the weather.\n</think>\n\n" + tool_call_text("GetWeather", {"city": "Oslo"})
    seen = await chunks_seen_by_callbacks(llm.bind_tools([GetWeather]), reply)
    expected = seen["stream"]
    assert "".join(reasoning or "" for _, reasoning, _, _ in expected).strip() == "The user wants the weather."
    assert [name for _, _, calls, _ in expected for name, _, _ in calls] == ["GetWeather"]
    assert [how for how, chunks in seen.items() if chunks != expected] == []


@pytest.mark.parametrize(
    "change",
    [{"temperature": 0.7}, {"top_p": 0.5}, {"top_k": 5}, {"seed": 7}, {"stop": ["zzz"]}, {"repetition_penalty": 1.3},
     {"repetition_guard": True}, {"sampling": "model"}, {"max_image_tokens": 64}, {"min_image_tokens": 8}, {"max_tokens": 9}],
    ids=lambda change: next(iter(change)),
)
def test_the_cache_keeps_apart_what_changes_the_reply(llm, change):
    cache = InMemoryCache()
    base = {"model": llm.model, "engine": llm.engine, "max_tokens": 8, "cache": cache, "temperature": 0.5, "seed": 1}
    first, same, other = ChatQwenVL(**base), ChatQwenVL(**base), ChatQwenVL(**{**base, **change})
    with scripted_replies(llm.runtime, ["first", "second", "unused"]) as left:
        assert first.invoke("hi").content == "first"
        assert same.invoke("hi").content == "first"  # the same configuration: answered from the cache
        assert other.invoke("hi").content == "second", change  # another one: generated anew
    assert left == ["unused"]
