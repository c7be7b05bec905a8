"""``response_format`` on ``qwenvl serve``'s chat completions, through the real OpenAI Python client against the
served app on loopback: the tiny checkpoint samples noise at temperature 1, so a reply that parses and validates
was made so by the grammar."""

from __future__ import annotations

import json
from enum import Enum

import pytest
from pydantic import BaseModel, Field

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
from served import Served  # noqa: E402

from qwenvl_agent.server.app import ServerSettings  # noqa: E402

KEY = "test-key"
RUNS = 30


class Status(str, Enum):
    PAID = "paid"
    OPEN = "未付"


class Item(BaseModel):
    name: str
    amount: float


class Receipt(BaseModel):
    shop: str = Field(description="商店的名字")
    status: Status
    items: list[Item] = Field(min_length=1, max_length=2)
    total: float


@pytest.fixture(scope="module")
def client(tiny_model):
    server = Served(ServerSettings(model=tiny_model, engine="torch", api_key=KEY, max_tokens=400))
    yield openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
    server.stop()


def ask(client, seed: int, **options):
    return client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "收据: the receipt as JSON."}], temperature=1.0, seed=seed,
        max_tokens=160, **options,
    )


def test_a_json_schema_response_format_always_gives_json_of_the_schema(client):
    response_format = {"type": "json_schema",
                       "json_schema": {"name": "receipt", "schema": Receipt.model_json_schema(), "strict": True}}
    for seed in range(RUNS):
        reply = ask(client, seed, response_format=response_format)
        message = reply.choices[0].message
        assert message.tool_calls is None
        Receipt.model_validate_json(message.content)
    free = [ask(client, seed, response_format={"type": "text"}).choices[0].message.content for seed in range(10)]
    assert not any(_valid(text) for text in free)  # the same model without the grammar: noise


def _valid(text: str) -> bool:
    try:
        Receipt.model_validate_json(text)
    except ValueError:
        return False
    return True


def test_the_clients_own_parse_helper_gets_the_pydantic_object(client):
    for seed in range(10):
        parsed = client.chat.completions.parse(
            model="tiny", messages=[{"role": "user", "content": "The receipt."}], response_format=Receipt,
            temperature=1.0, seed=seed, max_tokens=160,
        ).choices[0].message.parsed
        assert isinstance(parsed, Receipt)


def test_json_object_gives_a_json_object(client):
    for seed in range(10):
        content = ask(client, seed, response_format={"type": "json_object"}).choices[0].message.content
        assert isinstance(json.loads(content), dict)


def test_a_streamed_json_schema_reply_joins_into_valid_json(client):
    response_format = {"type": "json_schema", "json_schema": {"name": "receipt", "schema": Receipt.model_json_schema()}}
    for seed in range(5):
        stream = ask(client, seed, response_format=response_format, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        Receipt.model_validate_json(text)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 5, "maximum": 1}}}},
         "The JSON schema cannot be used: Unsatisfiable schema: minimum (5) is greater than maximum (1)"),
        ({"response_format": {"type": "json_schema"}}, "response_format json_schema needs the schema"),
        ({"response_format": {"type": "json_object"},
          "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]},
         "response_format json_schema or json_object cannot be combined with tools"),
    ],
    ids=["unsatisfiable", "no-schema", "with-tools"],
)
def test_a_response_format_that_cannot_be_honoured_is_a_400_naming_it(client, options, message):
    with pytest.raises(openai.BadRequestError) as raised:
        ask(client, 0, **options)
    error = raised.value.body
    assert error["param"] == "response_format" and error["message"].startswith(message), error
