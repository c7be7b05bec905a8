"""Bad input, through the library, the server and the page: each case gets a clear error naming the problem
(4xx on the server) or is handled, the process keeps serving, and the next request succeeds. Plus load:
concurrent clients get answers or 503, and memory stays flat over many requests."""

from __future__ import annotations

import base64
import concurrent.futures
import sys

import httpx
import pytest
from badinputs import corpus, pdf_bytes
from langchain_core.messages import HumanMessage
from processes import free_port, qwenvl_process

from qwenvl_agent.tools import ImageStore
from qwenvl_agent.vlm import ChatQwenVL, ImageInputError
from qwenvl_agent.vlm.errors import PromptTooLongError

CASES = corpus()


def data_url(data: bytes, name: str) -> str:
    mime = "application/pdf" if name.endswith(".pdf") else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize("name, data, acceptable", CASES, ids=[c[0] for c in CASES])
def test_the_library_reads_or_refuses_each_case_clearly(tiny_model, name, data, acceptable):
    store = ImageStore(max_pages=2)
    if not acceptable:
        with pytest.raises(ImageInputError) as info:
            store.add(data, name=name)
        assert name in str(info.value) and len(str(info.value)) > len(name) + 10
        return
    image_id = store.add(data, name=name)
    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=2)
    reply = llm.invoke([HumanMessage(content=[{"type": "image", "image": store.get(image_id)}, {"type": "text", "text": "Read."}])])
    assert reply.usage_metadata["output_tokens"] <= 2
    if name == "rotated.jpg":
        assert store.get(image_id).size == (100, 200)  # turned as its EXIF says


def test_a_pdf_over_the_page_cap_and_a_huge_prompt_are_refused(tiny_model):
    with pytest.raises(ImageInputError, match="more than the limit of 2"):
        ImageStore(max_pages=2).add(pdf_bytes(pages=3), name="long.pdf")
    llm = ChatQwenVL(model=tiny_model, engine="torch", max_tokens=2)
    with pytest.raises(PromptTooLongError, match="tokens"):
        llm.invoke("word " * 400_000)
    assert llm.invoke("hi").usage_metadata["output_tokens"] <= 2  # and the model still answers


@pytest.fixture(scope="module")
def server_process(tiny_model, tmp_path_factory):
    """``qwenvl serve`` in a process of its own, with a temporary folder of its own to check it stays empty."""
    pytest.importorskip("fastapi")
    port = free_port()
    scratch = tmp_path_factory.mktemp("server-tmp")
    log = tmp_path_factory.mktemp("server-log") / "serve.log"
    arguments = ["serve", "--model", tiny_model, "--engine", "torch", "--port", str(port), "--max-pdf-pages", "2",
                 "--max-new-tokens", "8", "--max-body-mb", "10"]
    url = f"http://127.0.0.1:{port}"
    with qwenvl_process(arguments, log, f"{url}/health", env={"TMPDIR": str(scratch)}) as process:
        yield process, url, scratch


def ask(url: str, content, max_tokens: int = 4, timeout: float = 120) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


def test_the_server_refuses_bad_files_with_4xx_and_keeps_serving(server_process):
    process, url, scratch = server_process
    for name, data, acceptable in CASES:
        if name.endswith(".pdf"):
            reply = httpx.post(f"{url}/v1/agent", json={"question": "What?", "images": [data_url(data, name)]}, timeout=120)
            assert reply.status_code == 400, (name, reply.text)
            continue
        reply = ask(url, [{"type": "image_url", "image_url": {"url": data_url(data, name)}}, {"type": "text", "text": "Read."}])
        assert reply.status_code == (200 if acceptable else 400), (name, reply.text)
        if not acceptable:
            assert reply.json()["error"]["message"]
    over_cap = httpx.post(f"{url}/v1/agent", json={"question": "What?", "images": [data_url(pdf_bytes(3), "x.pdf")]}, timeout=60)
    assert over_cap.status_code == 400 and "limit" in over_cap.json()["error"]["message"]
    huge = ask(url, [{"type": "text", "text": "word " * 1_500_000}])  # 7.5 MB: under the body limit, over the context
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "context_length_exceeded", huge.text
    too_big = ask(url, [{"type": "text", "text": "word " * 2_200_000}])  # 11 MB: over the 10 MB body limit
    assert too_big.status_code == 413 and too_big.json()["error"]["message"] == "The request body is larger than this server's limit of 10 MB."
    assert ask(url, "Still there?").status_code == 200 and process.poll() is None
    assert list(scratch.iterdir()) == [], "the server left temporary files"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_twenty_concurrent_clients_get_answers_or_503(server_process):
    process, url, _ = server_process

    def one(index: int) -> int:
        return ask(url, f"Question {index}?", max_tokens=16, timeout=120).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(one, range(20)))
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 4, statuses


def test_memory_stays_flat_over_300_requests(server_process):
    process, url, _ = server_process
    for index in range(50):
        assert ask(url, f"Warm up {index}").status_code == 200
    before = rss_mb(process.pid)
    for index in range(250):
        assert ask(url, f"Request {index}").status_code == 200
    assert rss_mb(process.pid) < before * 1.10


def test_the_page_shows_each_bad_file_as_an_error_and_goes_on(tiny_model, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from qwenvl_agent.ui import state

    monkeypatch.setenv(state.MODEL_ENV, tiny_model)
    monkeypatch.setattr(sys, "argv", ["app.py", "--engine", "torch", "--max-new-tokens", "16"])
    app = AppTest.from_file(str(Path(state.__file__).with_name("app.py")), default_timeout=120)
    app.run()
    files = [(name.split("/")[-1], data, "application/pdf" if name.endswith(".pdf") else "image/png") for name, data, _ in CASES]
    app.sidebar.get("file_uploader")[0].set_value(files).run()
    assert not app.exception
    errors = " ".join(e.value for e in app.sidebar.error)
    for name, _, acceptable in CASES:
        if not acceptable:
            assert name in errors, name
    app.chat_input(key="question").set_value("What is in the files?").run()
    assert not app.exception
    assert len(app.chat_message) >= 2
