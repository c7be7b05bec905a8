"""Remote backends: planner and tools on an OpenAI-compatible server, through LangChain's ChatOpenAI. Tested
for real against ``qwenvl serve`` started as a separate process on the tiny checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from documents import draw_invoice, png_bytes
from processes import free_port, qwenvl_process

pytest.importorskip("fastapi")
pytest.importorskip("langchain_openai")

from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402

from qwenvl_agent.agent import DocumentAssistant  # noqa: E402
from qwenvl_agent.agent.backends import chat_model  # noqa: E402
from qwenvl_agent.tools import ImageStore, make_tools  # noqa: E402

KEY = "remote-key"


@pytest.fixture(scope="module")
def remote(tiny_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("remote") / "serve.log"
    arguments = ["serve", "--model", tiny_model, "--engine", "torch", "--port", str(port), "--api-key", KEY]
    url = f"http://127.0.0.1:{port}"
    with qwenvl_process(arguments, log, f"{url}/health"):
        yield f"{url}/v1", tiny_model


def remote_model(remote, **options):
    base_url, model = remote
    return chat_model("openai", model=model, base_url=base_url, api_key=KEY, max_tokens=options.get("max_tokens", 8))


def test_chatopenai_talks_to_qwenvl_serve_with_an_image(remote):
    llm = remote_model(remote)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + __import__("base64").b64encode(png_bytes(draw_invoice())).decode()}}
    reply = llm.invoke([HumanMessage(content=[image, {"type": "text", "text": "What is the total?"}])])
    assert isinstance(reply.content, str) and reply.usage_metadata["input_tokens"] > 64
    streamed = list(llm.stream("Hello"))
    assert streamed and all(isinstance(chunk.content, str) for chunk in streamed)


def test_the_tools_and_the_agent_run_on_the_remote_model(remote):
    llm = remote_model(remote)
    store = ImageStore()
    store.add(draw_invoice())
    describe = {t.name: t for t in make_tools(llm, store, ocr_engine="vlm")}["describe_image"]
    message = describe.invoke({"name": "describe_image", "args": {"image_id": "img-1"}, "id": "c", "type": "tool_call"})
    assert message.status == "success"
    result = DocumentAssistant(llm, max_steps=3).ask("What is the invoice total?", images=[draw_invoice()])
    assert isinstance(result.answer, str)


def test_the_agent_takes_the_backend_options_in_place_of_a_model_object(remote):
    from langchain_openai import ChatOpenAI

    from qwenvl_agent.agent import AgentError, build_agent

    base_url, model = remote
    assistant = DocumentAssistant(model, backend="openai", base_url=base_url, api_key=KEY, max_steps=2)
    assert isinstance(assistant.model, ChatOpenAI) and assistant.model.openai_api_base == base_url
    result = assistant.ask("What is the invoice total?", images=[draw_invoice()])
    assert isinstance(result.answer, str) and result.answer
    graph = build_agent(model, backend="openai", base_url=base_url, api_key=KEY, max_steps=1)
    assert graph.invoke({"messages": [HumanMessage("Hello")]})["messages"][-1].type == "ai"

    wrong_key = DocumentAssistant(model, backend="openai", base_url=base_url, api_key="wrong", max_steps=2)
    with pytest.raises(AgentError, match="model server did not answer the request.*401"):
        wrong_key.ask("What is the invoice total?")
    with pytest.raises(ValueError, match="either a chat model object or the backend options"):
        DocumentAssistant(remote_model(remote), backend="openai", base_url=base_url)


def test_qwenvl_ask_with_the_openai_backend(remote, tmp_path):
    base_url, model = remote
    image = tmp_path / "invoice.png"
    image.write_bytes(png_bytes(draw_invoice()))
    command = [sys.executable, "-m", "qwenvl_agent.cli", "ask", str(image), "-q", "What is the total?", "--json",
               "--backend", "openai", "--base-url", base_url, "--api-key", KEY, "--model", model, "--max-steps", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["error"] is None and isinstance(result["answer"], str)


def test_a_remote_planner_does_not_load_a_local_tools_model_until_a_tool_needs_it(remote, tmp_path):
    from qwenvl_agent.vlm import ChatQwenVL
    from qwenvl_agent.vlm.registry import loaded_runtimes
    from qwenvl_agent.vlm.testing import make_tiny_checkpoint

    base_url, model = remote
    local = str(make_tiny_checkpoint(tmp_path / "tools-model", seed=3))
    vlm = ChatQwenVL(model=local, engine="torch")

    def loaded() -> bool:
        return any(runtime.model_id == local for runtime in loaded_runtimes())

    assistant = DocumentAssistant(model, backend="openai", base_url=base_url, api_key=KEY, vlm=vlm, max_steps=1)
    result = assistant.ask("Hello, who are you?")  # the planner answers; no tool, so no local model
    assert result.steps == [] and isinstance(result.answer, str)
    assert not loaded()
    assert assistant.warm() is None and loaded()  # asked for: the tools' model loads and keeps the chart's format
    chart = {tool.name: tool for tool in make_tools(vlm, ImageStore())}["read_chart"]
    assert vlm.warm_prefix([SystemMessage(chart.system_prompt)]).source == "memory"
