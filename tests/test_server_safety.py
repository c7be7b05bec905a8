"""``qwenvl serve`` as a trusted server must behave: the model loads at start-up off the event loop, limits
hold for every route and every way a body arrives, a web page cannot reach it through DNS rebinding, and a
conversation belongs to the API key that started it. Real HTTP on loopback, on the tiny checkpoint."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import shutil
import threading
import time

import httpx
import pytest
from documents import draw_invoice, png_bytes

pytest.importorskip("fastapi")

from served import Served  # noqa: E402

from qwenvl_agent.server.app import ServerSettings  # noqa: E402
from qwenvl_agent.vlm import runtime as runtime_module  # noqa: E402
from qwenvl_agent.vlm.errors import ModelNotAvailableError  # noqa: E402
from qwenvl_agent.vlm.testing import scripted_replies  # noqa: E402

KEY, OTHER_KEY = "key-one", "key-two"


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat_body(*parts, max_tokens: int = 2) -> dict:
    return {"messages": [{"role": "user", "content": list(parts) or "hi"}], "max_tokens": max_tokens}


def fresh_copy(tiny_model: str, tmp_path) -> str:
    """The tiny checkpoint in a folder of its own: a model this process has not loaded yet."""
    return str(shutil.copytree(tiny_model, tmp_path / "fresh-model"))


def test_the_model_loads_at_start_up_off_the_event_loop(tiny_model, tmp_path, monkeypatch):
    loading, release = threading.Event(), threading.Event()
    real = runtime_module._load

    def slow_load(*args, **kwargs):
        loading.set()
        assert release.wait(60), "the test never let the load finish"
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime_module, "_load", slow_load)
    server = Served(ServerSettings(model=fresh_copy(tiny_model, tmp_path), engine="torch"), ready=False)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        # A request that needs the model, while it loads: it must not stall the server.
        chat = pool.submit(httpx.post, f"{server.url}/v1/chat/completions", json=chat_body(), timeout=30)
        assert loading.wait(10), "the model did not start loading at start-up"
        started = time.monotonic()
        health = httpx.get(f"{server.url}/health", timeout=3)
        assert time.monotonic() - started < 1
        assert health.status_code == 503 and health.json()["status"] == "loading"
        refused = chat.result(timeout=3)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert refused.json()["error"]["code"] == "model_loading" and "loading" in refused.json()["error"]["message"]
        release.set()
        server.wait_until_ready(time.monotonic() + 60)
        ready = httpx.get(f"{server.url}/health", timeout=3).json()
        assert ready["status"] == "ok" and ready["model_loaded"] is True
        assert httpx.post(f"{server.url}/v1/chat/completions", json=chat_body(), timeout=60).status_code == 200
    finally:
        release.set()
        pool.shutdown(wait=True)
        server.stop()


def test_a_model_that_cannot_load_is_reported_by_health_and_by_requests(tiny_model, tmp_path, monkeypatch):
    def failing_load(*args, **kwargs):
        raise ModelNotAvailableError("No model at that path: download it first.")

    monkeypatch.setattr(runtime_module, "_load", failing_load)
    server = Served(ServerSettings(model=fresh_copy(tiny_model, tmp_path), engine="torch"), ready=False)
    try:
        deadline = time.monotonic() + 10
        while (health := httpx.get(f"{server.url}/health", timeout=3)).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert health.status_code == 503 and health.json()["status"] == "error"
        assert "No model at that path" in health.json()["error"]
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=chat_body(), timeout=5)
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "model_unavailable"
        assert "No model at that path" in reply.json()["error"]["message"]
        agent = httpx.post(f"{server.url}/v1/agent", json={"question": "What?"}, timeout=5)
        assert agent.status_code == 503 and agent.json()["error"]["code"] == "model_unavailable"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(tiny_model):
    settings = ServerSettings(model=tiny_model, engine="torch", api_key=f"{KEY},{OTHER_KEY}", max_body_mb=0.25,
                              max_image_pixels=10_000, max_tokens=64)
    server = Served(settings)
    yield server
    server.stop()


def auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_a_chunked_body_over_the_limit_is_413(served):
    limit = int(0.25 * 2**20)

    def chunks():  # no Content-Length: the size is only known as it arrives
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(limit // 4096 + 2):
            yield b"x" * 4096
        yield b'"}]}'

    headers = {**auth(), "Content-Type": "application/json"}
    reply = httpx.post(f"{served.url}/v1/chat/completions", content=chunks(), headers=headers, timeout=30)
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["message"] == "The request body is larger than this server's limit of 256 KB."
    declared = httpx.post(f"{served.url}/v1/chat/completions", content=b"x" * (limit + 1), headers=headers, timeout=30)
    assert declared.status_code == 413 and declared.json() == reply.json()


def test_the_agent_applies_the_pixel_cap_as_chat_completions_does(served):
    big = png_bytes(draw_invoice())  # far more than 10,000 pixels
    chat = httpx.post(f"{served.url}/v1/chat/completions", headers=auth(), timeout=30,
                      json=chat_body({"type": "image_url", "image_url": {"url": data_url(big)}}))
    agent = httpx.post(f"{served.url}/v1/agent", headers=auth(), timeout=30,
                       json={"question": "What is this?", "images": [data_url(big)]})
    assert chat.status_code == 400 and agent.status_code == 400, agent.text
    assert "above this server's limit of 10,000" in chat.json()["error"]["message"]
    assert "above this server's limit of 10,000" in agent.json()["error"]["message"]
    assert agent.json()["error"]["param"] == "images[0]"
    huge_page = httpx.post(f"{served.url}/v1/agent", headers=auth(), timeout=30,
                           json={"question": "What is this?", "images": [data_url(pdf_page(200, 200), "application/pdf")]})
    assert huge_page.status_code == 400 and huge_page.json()["error"]["param"] == "images[0]", huge_page.text
    assert huge_page.json()["error"]["message"] == ("images[0]: page 1 is 400x400 pixels at 144 dpi, above this "
                                                    "server's limit of 10,000.")
    with scripted_replies(served.runtime, ["A blank page."]):
        small = agent_events(served, {"question": "What is this?", "images": [data_url(pdf_page(36, 36), "application/pdf")]})
    assert small[-1]["text"] == "A blank page."


def pdf_page(width_points: float, height_points: float) -> bytes:
    import io

    import pypdfium2 as pdfium

    document = pdfium.PdfDocument.new()
    document.new_page(width_points, height_points)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_a_foreign_host_header_is_refused_and_allowed_hosts_admits_it(served, tiny_model):
    for path in ("/health", "/v1/models"):
        evil = httpx.get(f"{served.url}{path}", headers={**auth(), "Host": f"evil.example:{served.port}"}, timeout=5)
        assert evil.status_code == 400, (path, evil.text)
        assert evil.json()["error"] == {
            "message": "The Host header 'evil.example' is not one this server answers to; start it with "
                       "--allowed-hosts evil.example to allow it.",
            "type": "invalid_request_error", "param": None, "code": "invalid_host"}
    for host in ("localhost", f"localhost:{served.port}", "127.0.0.1", f"[::1]:{served.port}"):
        assert httpx.get(f"{served.url}/v1/models", headers={**auth(), "Host": host}, timeout=5).status_code == 200, host
    widened = Served(ServerSettings(model=tiny_model, engine="torch", allowed_hosts=("evil.example", "api.test")))
    anything = Served(ServerSettings(model=tiny_model, engine="torch", allowed_hosts=("*",)))
    try:
        for server in (widened, anything):
            reply = httpx.get(f"{server.url}/v1/models", headers={"Host": f"evil.example:{server.port}"}, timeout=5)
            assert reply.status_code == 200, reply.text
        assert httpx.get(f"{widened.url}/v1/models", headers={"Host": "other.example"}, timeout=5).status_code == 400
    finally:
        widened.stop()
        anything.stop()


def test_qwenvl_serve_hands_allowed_hosts_and_several_keys_to_the_server(monkeypatch):
    from qwenvl_agent import cli
    from qwenvl_agent.server import app as app_module

    started = []
    monkeypatch.setattr(app_module, "run", lambda settings, host, port: started.append((settings, host)))
    assert cli.main(["serve", "--model", "some/model", "--host", "0.0.0.0", "--allowed-hosts", "a.example, b.example",
                     "--api-key", "one,two"]) == 0
    settings, host = started[0]
    assert settings.allowed_hosts == ("a.example", "b.example") and host == "0.0.0.0"
    assert settings.keys() == ["one", "two"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/agent"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_json_route_refuses_a_body_that_is_not_declared_json_with_415(served, path, content_type):
    body = json.dumps(chat_body() if path.endswith("completions") else {"question": "What?"}).encode()
    headers = auth() | ({"Content-Type": content_type} if content_type else {})
    reply = httpx.post(f"{served.url}{path}", content=body, headers=headers, timeout=30)
    assert reply.status_code == 415, reply.text
    assert reply.json()["error"]["message"] == "The request body must be JSON, sent with Content-Type: application/json."
    assert reply.json()["error"]["code"] == "unsupported_media_type"
    charset = httpx.post(f"{served.url}{path}", content=body, timeout=60,
                         headers=auth() | {"Content-Type": "application/json; charset=utf-8"})
    assert charset.status_code == 200, charset.text


def agent_events(served, body, key=KEY):
    with httpx.stream("POST", f"{served.url}/v1/agent", json=body, headers=auth(key), timeout=300) as response:
        assert response.status_code == 200, response.read()
        thread_header = response.headers.get("X-Thread-Id")
        lines = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    events = [json.loads(line) for line in lines[:-1]]
    assert events[0]["event"] == "Thread" and thread_header == events[0]["thread_id"]
    return events


def test_conversations_have_server_issued_ids_scoped_to_their_api_key(served):
    with scripted_replies(served.runtime, ["It is an invoice."]):
        first = agent_events(served, {"question": "What is this?", "images": [data_url(png_bytes(draw_invoice().resize((90, 100))))]})
    thread_id = first[0]["thread_id"]
    assert len(thread_id) >= 32 and first[-1]["event"] == "Answer" and first[-1]["text"] == "It is an invoice."
    with scripted_replies(served.runtime, ["Still an invoice."]):
        again = agent_events(served, {"question": "And now?", "thread_id": thread_id})
    assert again[0]["thread_id"] == thread_id and again[-1]["text"] == "Still an invoice."
    for key, given in ((OTHER_KEY, thread_id), (KEY, "my-own-thread"), (KEY, thread_id + "x")):
        reply = httpx.post(f"{served.url}/v1/agent", json={"question": "What did they send?", "thread_id": given},
                           headers=auth(key), timeout=30)
        assert reply.status_code == 404, (key, given, reply.text)
        assert reply.json()["error"]["type"] == "not_found_error" and reply.json()["error"]["param"] == "thread_id"
    assert "my-own-thread" not in served.app.state.assistant._conversations


def test_two_requests_on_one_conversation_run_one_after_the_other(served):
    with scripted_replies(served.runtime, ["Ready."]):
        thread_id = agent_events(served, {"question": "Hello?"})[0]["thread_id"]
    gate = served.runtime.gate
    release, held = threading.Event(), threading.Event()

    def hold():  # keeps the model busy, so the first run stays inside its first step
        with gate.hold():
            held.set()
            release.wait(30)

    received: dict[str, list[str]] = {"a": [], "b": []}

    def run(name: str) -> None:
        body = {"question": f"Question {name}?", "thread_id": thread_id}
        with httpx.stream("POST", f"{served.url}/v1/agent", json=body, headers=auth(), timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    received[name].append(json.loads(line[6:])["event"])

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)
    with scripted_replies(served.runtime, ["Answer one.", "Answer two."]):
        first = threading.Thread(target=run, args=("a",))
        first.start()
        deadline = time.monotonic() + 10
        while "StepStarted" not in received["a"]:
            assert time.monotonic() < deadline, received
            time.sleep(0.02)
        second = threading.Thread(target=run, args=("b",))
        second.start()
        time.sleep(1.5)
        assert received["b"] == ["Thread"], "the second request started while the first still ran"
        release.set()
        first.join(60)
        second.join(60)
    holder.join(10)
    assert received["a"][-1] == "Answer" and received["b"][:2] == ["Thread", "StepStarted"], received
    assert received["b"][-1] == "Answer", received


def test_the_openapi_schema_describes_every_route_with_models(served):
    spec = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    paths = spec["paths"]
    assert set(paths) == {"/health", "/v1/models", "/v1/chat/completions", "/v1/agent", "/v1/audio/transcriptions",
                          "/v1/audio/speech"}
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, body in (("/v1/audio/transcriptions", "multipart/form-data"), ("/v1/audio/speech", "application/json")):
        operation = paths[path]["post"]
        assert set(operation["requestBody"]["content"]) == {body}
        for status in ("400", "401", "413", "415", "503", "default"):
            assert operation["responses"][status]["content"]["application/json"]["schema"] == error, (path, status)
        assert "422" not in operation["responses"]
    assert set(paths["/v1/audio/speech"]["post"]["responses"]["200"]["content"]) == {"audio/wav"}
    for path, model in (("/v1/chat/completions", "ChatCompletionRequest"), ("/v1/agent", "AgentRequest")):
        operation = paths[path]["post"]
        assert operation["requestBody"]["required"] is True
        assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        for status in ("400", "401", "413", "415", "503", "default"):
            assert operation["responses"][status]["content"]["application/json"]["schema"] == error, (path, status)
        assert "422" not in operation["responses"]
        assert "text/event-stream" in operation["responses"]["200"]["content"]
    completion = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert completion == {"$ref": "#/components/schemas/ChatCompletion"}
    assert paths["/v1/agent"]["post"]["responses"]["404"]["content"]["application/json"]["schema"] == error
    for path, model in (("/health", "Health"), ("/v1/models", "ModelList")):
        answer = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{model}"}
    request = spec["components"]["schemas"]["ChatCompletionRequest"]
    assert request["required"] == ["messages"] and {"messages", "max_tokens", "tools", "stream"} <= set(request["properties"])


@pytest.mark.parametrize("body, param, message", [
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens", "max_tokens: Input should be a valid integer."),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream", "stream: Input should be a valid boolean."),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role",
     "messages[0].role: Input should be 'system', 'developer', 'user', 'assistant' or 'tool'."),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].image_url",
     "messages[0].content[0].image_url: Field required."),
    ({}, "messages", "messages: Field required."),
])
def test_a_body_outside_the_schema_is_a_400_naming_the_field(served, body, param, message):
    reply = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=auth(), timeout=30)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == {"message": message, "type": "invalid_request_error", "param": param, "code": None}


def test_a_body_that_is_not_json_is_a_400(served):
    for content in (b"{not json", b"[1, 2]"):
        reply = httpx.post(f"{served.url}/v1/chat/completions", content=content, timeout=30,
                           headers=auth() | {"Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error", reply.text
    assert httpx.post(f"{served.url}/v1/chat/completions", content=b"{not json", timeout=30,
                      headers={"Content-Type": "application/json"}).status_code == 401  # the key is checked first
