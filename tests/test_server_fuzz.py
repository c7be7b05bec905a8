"""Schemathesis against ``qwenvl serve`` on the tiny checkpoint: requests generated from ``/openapi.json`` for
every route. No answer may be a 5xx or break the schema the server publishes, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from processes import free_port, qwenvl_process

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

EXAMPLES_PER_ROUTE = 20
ROUTES = {"GET /health", "GET /v1/models", "POST /v1/chat/completions", "POST /v1/agent", "POST /v1/audio/transcriptions",
          "POST /v1/audio/speech"}


@pytest.fixture(scope="module")
def fuzzed_server(tiny_model, tmp_path_factory):
    from speech import random_whisper

    port = free_port()
    log = tmp_path_factory.mktemp("fuzz-log") / "serve.log"
    arguments = ["serve", "--model", tiny_model, "--engine", "torch", "--port", str(port), "--max-tokens", "8", "--max-new-tokens", "8",
                 "--max-pdf-pages", "2", "--max-images", "2", "--asr-model", random_whisper(tmp_path_factory.mktemp("whisper"))]
    url = f"http://127.0.0.1:{port}"
    with qwenvl_process(arguments, log, f"{url}/health") as process:
        yield process, url, log


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_route_answers_within_its_schema(fuzzed_server, mode):
    """Data that fits the schema (positive) and data that does not (negative), for every operation in it."""
    from schemathesis.generation.modes import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    _, url, _ = fuzzed_server
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} == ROUTES
    for operation in operations:
        if mode == "negative" and operation.method.upper() == "GET":
            continue  # a GET without parameters: nothing to get wrong
        @given(case=operation.as_strategy(GenerationMode(mode)))
        @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)
        def answers_within_the_schema(case):
            # Data that fits the schema may still be refused with a 400 by what the schema cannot say (an image
            # URL that is not an image, this server's max_tokens, a tool message without its call's id).
            case.call_and_validate(timeout=60, excluded_checks=[positive_data_acceptance])

        answers_within_the_schema()


def test_the_server_still_serves_after_the_fuzzing(fuzzed_server):
    process, url, log = fuzzed_server
    reply = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
                       timeout=60)
    assert reply.status_code == 200 and process.poll() is None
    assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "ok"
    assert "is ready (engine torch" in log.read_text()  # the start-up load, in the log
