"""``qwenvl serve`` on the tiny checkpoint: malformed image URLs and paths, and PDFs whose pages are too big,
are 400s in the OpenAI error shape, refused before any work, never 500s."""

from __future__ import annotations

import httpx
import pytest
from test_pdf_pages import pdf_of_sizes

pytest.importorskip("fastapi")
from test_server import AUTH, Served, data_url, image, text, user  # noqa: E402

from qwenvl_agent.server.app import ServerSettings  # noqa: E402


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    settings = ServerSettings(model=tiny_model, engine="torch", api_key="test-key", allow_remote_images=True,
                              allow_local_files=str(allowed), max_images=3, max_pdf_pages=3)
    server = Served(settings)
    yield server
    server.stop()


def bad_request(served, path: str, body: dict) -> dict:
    reply = httpx.post(f"{served.url}{path}", json=body, headers=AUTH, timeout=60)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"], error
    return error


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com:99999/x.png", "invalid port"),
        ("http://[::1/x.png", "not a valid URL"),
        ("http://" + "a" * 70 + ".example.com/x.png", "not a valid host name"),
        ("~nosuchuser/x.png", "no user 'nosuchuser'"),
        ("/tmp/a\x00b.png", "only from files inside"),
    ],
)
def test_a_malformed_image_url_or_path_is_a_400(served, url, reason):
    error = bad_request(served, "/v1/chat/completions", {"messages": user(text("Read it."), image(url))})
    assert reason in error["message"] and error["param"] == "messages[0].content[1]"


def test_a_malformed_file_url_for_the_agent_is_a_400(served):
    error = bad_request(served, "/v1/agent", {"question": "What is it?", "images": ["http://example.com:99999/x.pdf"]})
    assert "invalid port" in error["message"] and error["param"] == "images[0]"


def test_a_pdf_with_a_huge_page_is_a_400_before_anything_is_rendered(served, monkeypatch):
    from qwenvl_agent.tools import pdf as pdf_module

    renders = []
    monkeypatch.setattr(pdf_module, "_rendered", lambda *args, **kwargs: renders.append(args))
    pdf = data_url(pdf_of_sizes((600, 800), (20000, 20000)), "application/pdf")
    error = bad_request(served, "/v1/agent", {"question": "What is on the poster?", "images": [pdf]})
    assert "page 2 " in error["message"].lower() and "40000x40000 pixels" in error["message"]
    assert renders == []


def test_messages_whose_every_part_is_empty_are_answered_as_a_blank_prompt_not_a_500(served):
    # Found by the schema fuzzer: only a system message, its text parts empty (LangChain drops empty blocks).
    body = {"messages": [{"role": "system", "content": [{"type": "text", "text": ""}, {"type": "text", "text": ""}]}],
            "max_tokens": 3}
    reply = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] <= 3
