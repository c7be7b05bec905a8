"""``qwenvl serve``: the OpenAI-compatible API and the agent stream over real HTTP on loopback, on the tiny
checkpoint: formats, limits, the queue, cancellation by disconnect, and refusal of unsafe image sources."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import threading
import time

import httpx
import pytest
from documents import draw_invoice, png_bytes
from test_pdf_pages import pdf_of_sizes

pytest.importorskip("fastapi")
from served import Served  # noqa: E402

from qwenvl_agent.server.app import ServerSettings  # noqa: E402
from qwenvl_agent.vlm import fetch as fetch_module  # noqa: E402
from qwenvl_agent.vlm.testing import scripted_replies, tool_call_text  # noqa: E402

KEY = "test-key"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
AUTH = {"Authorization": f"Bearer {KEY}"}


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "page.png").write_bytes(png_bytes(draw_invoice()))
    settings = ServerSettings(model=tiny_model, engine="torch", api_key=KEY, allow_remote_images=True,
                              allow_local_files=str(allowed), max_tokens=4096, max_images=3, max_pdf_pages=3)
    server = Served(settings)
    server.allowed = allowed
    yield server
    server.stop()


def post(served, path, body, timeout=120, **kwargs):
    return httpx.post(f"{served.url}{path}", json=body, headers=AUTH, timeout=timeout, **kwargs)


def user(*parts):
    return [{"role": "user", "content": list(parts)}]


def text(value):
    return {"type": "text", "text": value}


def image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def test_health_models_and_the_api_key(served):
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"
    refused = httpx.get(f"{served.url}/v1/models")
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    models = httpx.get(f"{served.url}/v1/models", headers=AUTH).json()
    assert models["object"] == "list" and models["data"][0]["id"] == served.app.state.settings.model


def test_a_completion_with_an_image_and_usage(served):
    with scripted_replies(served.runtime, ["Paid."]):
        reply = post(served, "/v1/chat/completions", {"messages": user(text("Read it."), image(data_url(png_bytes(draw_invoice())))),
                                                        "max_tokens": 10})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"] == {"role": "assistant", "content": "Paid."}
    assert body["usage"]["prompt_tokens"] > 64 and 0 < body["usage"]["completion_tokens"] < 10
    assert body["choices"][0]["finish_reason"] == "stop"
    cut = post(served, "/v1/chat/completions", {"messages": user(text("Count.")), "max_tokens": 3})
    assert cut.json()["usage"]["completion_tokens"] == 3 and cut.json()["choices"][0]["finish_reason"] == "length"


def test_streaming_with_usage_in_the_last_chunk(served):
    body = {"messages": user(text("Hello")), "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_tools_and_tool_calls(served):
    tools = [WEATHER]
    with scripted_replies(served.runtime, [tool_call_text("get_weather", {"city": "Oslo"})]):
        body = post(served, "/v1/chat/completions", {"messages": user(text("Weather?")), "tools": tools}).json()
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


def test_structured_output_with_a_json_schema(served):
    schema = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}
    with scripted_replies(served.runtime, ['{"total": 1500.0}']):
        body = post(served, "/v1/chat/completions", {"messages": user(text("Total?")),
                                                      "response_format": {"type": "json_schema", "json_schema": {"name": "invoice", "schema": schema}}}).json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"total": 1500.0}


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": user(text("x")), "max_tokens": 10**6}, "max_tokens"),
        ({"messages": user(text("x")), "temperature": 9}, "temperature"),
        ({"messages": user({"type": "audio", "data": "x"})}, "messages[0].content[0].type"),
        ({"messages": user(image("data:image/png;base64,@@@"))}, "messages[0].content[0]"),
        ({"messages": user(*[image(data_url(png_bytes(draw_invoice())))] * 4)}, "messages"),
        ({"messages": user(text("x")), "seed": "abc"}, "seed"),
        ({"messages": user(text("x")), "response_format": "json"}, "response_format"),
        ({"messages": user(text("x")), "tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0].function.name"),
        ({"messages": user(text("x")), "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice"),
        ({"messages": [{"role": "user", "content": "x"},
                       {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]},
         "messages[1].tool_calls"),
    ],
)
def test_bad_requests_get_400_in_the_openai_error_shape(served, body, param):
    reply = post(served, "/v1/chat/completions", body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_what_is_not_a_route_answers_in_the_openai_error_shape(served):
    missing = post(served, "/v1/nothing-here", {})
    assert missing.status_code == 404 and missing.json()["error"]["message"]
    wrong_method = httpx.get(f"{served.url}/v1/chat/completions", headers=AUTH)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"]
    unknown_field = post(served, "/v1/agent", {"question": "What?", "files": ["x"]})
    assert unknown_field.status_code == 400 and "files" in unknown_field.json()["error"]["message"]


def test_concurrent_streams_either_finish_or_get_503_before_they_start(served):
    """Every client at once, streamed: none may get a 200 whose stream then says the queue was full."""
    body = {"messages": user(text("Count.")), "max_tokens": 200, "stream": True}

    def one(_: int) -> tuple[int, str]:
        with httpx.Client(timeout=120) as client, client.stream("POST", f"{served.url}/v1/chat/completions", json=body, headers=AUTH) as reply:
            return reply.status_code, reply.read().decode()

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(one, range(12)))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1 + served.runtime.gate.max_waiting, statuses
    for status, text_ in results:
        if status == 200:
            assert text_.rstrip().endswith("data: [DONE]") and '"error"' not in text_, text_[-500:]
    assert post(served, "/v1/chat/completions", {"messages": user(text("hi")), "max_tokens": 2}).status_code == 200


def test_unsafe_image_sources_are_refused_with_400(served, monkeypatch, tmp_path):
    import http.server

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/secret.png")
            self.end_headers()

        def log_message(self, *args):
            pass

    local = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=local.serve_forever, daemon=True).start()
    port = local.server_address[1]
    real = fetch_module._address
    # "public.test" stands for a public host: it resolves (here) to this machine without being checked.
    monkeypatch.setattr(fetch_module, "_address", lambda host, p, allow, deadline: "127.0.0.1" if host == "public.test" else real(host, p, allow, deadline))
    try:
        cases = {
            f"http://127.0.0.1:{port}/x.png": "loopback",
            f"http://public.test:{port}/x.png": "loopback",  # a redirect to a private address
            "http://10.1.2.3/x.png": "private",
            "http://169.254.169.254/latest/meta-data": "link-local",  # a cloud's metadata address
            "http://[::1]/x.png": "loopback",
            "http://224.0.0.1/x.png": "multicast",
            "file:///etc/passwd": "only from files inside",
            "ftp://example.com/x.png": "scheme",
        }
        for url, reason in cases.items():
            reply = post(served, "/v1/chat/completions", {"messages": user(image(url))})
            assert reply.status_code == 400 and reason in reply.json()["error"]["message"], (url, reply.text)
    finally:
        local.shutdown()


def test_local_files_only_from_the_allowed_folder_without_saying_what_exists(served):
    inside = post(served, "/v1/chat/completions", {"messages": user(image(str(served.allowed / "page.png"))), "max_tokens": 2})
    assert inside.status_code == 200, inside.text
    existing = post(served, "/v1/chat/completions", {"messages": user(image("/etc/hostname"))}).json()["error"]["message"]
    missing = post(served, "/v1/chat/completions", {"messages": user(image("/etc/no-such-file"))}).json()["error"]["message"]
    assert existing.split(": ", 1)[1] == missing.split(": ", 1)[1]


def test_a_full_queue_answers_503_with_retry_after_at_once(served):
    gate = served.runtime.gate
    release = threading.Event()
    holders = []

    def hold():
        with gate.hold():
            release.wait(10)

    for _ in range(1 + gate.max_waiting):
        holders.append(threading.Thread(target=hold, daemon=True))
        holders[-1].start()
    while gate.waiting < gate.max_waiting:
        time.sleep(0.01)
    try:
        started = time.monotonic()
        reply = post(served, "/v1/chat/completions", {"messages": user(text("hi"))})
        assert reply.status_code == 503 and reply.headers["Retry-After"] and time.monotonic() - started < 2
        assert reply.json()["error"]["code"] == "busy"
    finally:
        release.set()
        for holder in holders:
            holder.join(10)


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_frees_the_model(served, stream):
    gate = served.runtime.gate
    body = {"messages": user(text("Write forever.")), "max_tokens": 4096, "stream": stream}
    client = httpx.Client(timeout=60)
    try:
        if stream:
            with client.stream("POST", f"{served.url}/v1/chat/completions", json=body, headers=AUTH) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and '"content": "' in line and gate.busy:
                        break
        else:
            with pytest.raises(httpx.ReadTimeout):
                client.post(f"{served.url}/v1/chat/completions", json=body, headers=AUTH, timeout=0.8)
    finally:
        client.close()
    deadline = time.monotonic() + 5
    while gate.busy:
        assert time.monotonic() < deadline, "the generation kept running after the client left"
        time.sleep(0.02)


def test_the_agent_streams_typed_events_and_remembers_the_thread(served):
    body = {"question": "What is on this invoice?", "images": [data_url(png_bytes(draw_invoice()))]}
    with scripted_replies(served.runtime, ["An invoice."]):
        events = agent_events(served, body)
    assert events[0]["event"] == "Thread" and events[1]["event"] == "StepStarted"
    assert events[-1]["event"] == "Answer" and events[-1]["text"] == "An invoice."
    follow_up = agent_events(served, {"question": "And the date?", "thread_id": events[0]["thread_id"]})
    assert follow_up[0]["thread_id"] == events[0]["thread_id"]
    assert served.app.state.assistant.store(events[0]["thread_id"]).ids() == ["img-1"]


def test_the_agent_takes_files_and_images_together(served):
    pdf = data_url(pdf_of_sizes((300, 400), (300, 400)), "application/pdf")
    body = {"question": "What is in these?", "files": [pdf], "images": [data_url(png_bytes(draw_invoice()))]}
    with scripted_replies(served.runtime, ["An invoice and a letter."]):
        events = agent_events(served, body)
    assert events[-1]["event"] == "Answer" and events[-1]["text"] == "An invoice and a letter."
    assert served.app.state.assistant.store(events[0]["thread_id"]).ids() == ["img-1", "doc-1/page-1", "doc-1/page-2"]
    error = post(served, "/v1/agent", {"question": "What?", "files": ["not base64 !!"]}).json()["error"]
    assert error["param"] == "files[0]" and "base64" in error["message"]


def test_the_agents_answer_streams_over_sse_before_it_is_complete(served):
    from slow_replies import slow_replies, story

    text = story(10)
    body = {"question": "Tell me a story.", "images": [data_url(png_bytes(draw_invoice()))]}
    arrivals = []
    with slow_replies(served.runtime, [text], seconds_per_token=0.02):
        with httpx.stream("POST", f"{served.url}/v1/agent", json=body, headers=AUTH, timeout=300) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append((time.perf_counter(), json.loads(line[len("data: "):])))
    answered_at, answer = arrivals[-1]
    first_at, first = next((at, event) for at, event in arrivals if event["event"] == "AnswerToken")
    assert answer["event"] == "Answer" and answer["text"] == text
    assert text.startswith(first["text"]) and len(first["text"]) < len(text) // 4
    assert answered_at - first_at > 0.5  # on the wire while the model was still writing
    assert 0 < answer["first_token_seconds"] < answer["seconds"]


def agent_events(served, body):
    with httpx.stream("POST", f"{served.url}/v1/agent", json=body, headers=AUTH, timeout=300) as response:
        assert response.status_code == 200
        lines = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_the_agent_refuses_bad_files_with_400(served):
    for images, reason in [([data_url(b"%PDF-1.4 broken", "application/pdf")], "PDF"),
                           (["not base64 !!"], "base64"),
                           ([data_url(png_bytes(draw_invoice()))] * 4, "At most")]:
        reply = post(served, "/v1/agent", {"question": "What?", "images": images})
        assert reply.status_code == 400 and reason in reply.json()["error"]["message"], reply.text
