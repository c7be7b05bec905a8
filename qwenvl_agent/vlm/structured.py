"""Structured output by JSON: ``with_structured_output``'s "json_schema" and "json_mode" methods, a chat model
bound to a ``response_format`` (its reply constrained to the schema's grammar) and a parser of its reply.
The "function_calling" method is LangChain's own, a forced call of a tool named for the schema."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LanguageModelInput
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from pydantic import BaseModel

from .reply_grammar import json_schema_of

STRUCTURED_METHODS = ("function_calling", "json_schema", "json_mode")


def check_method(method: str) -> str:
    if method not in STRUCTURED_METHODS:
        raise ValueError(f"method must be one of {', '.join(STRUCTURED_METHODS)}; got {method!r}.")
    return method


def json_structured_output(
    llm: BaseChatModel,
    schema: dict[str, Any] | type | None,
    *,
    include_raw: bool,
    method: str,
    kwargs: dict[str, Any],
) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
    """``llm``'s replies as ``schema`` by ``method`` "json_schema" or "json_mode" (see
    ``ChatQwenVL.with_structured_output``)."""
    if kwargs:
        raise ValueError(f"Received unsupported arguments {kwargs}")
    if schema is None and method == "json_schema":
        raise ValueError('method="json_schema" needs a schema: a pydantic model, a TypedDict or a JSON schema.')
    response_format = json_schema_of({"type": "json_object"} if method == "json_mode" else schema)
    bound = llm.bind(
        response_format=response_format,
        ls_structured_output_format={"kwargs": {"method": method}, "schema": response_format},
    )
    is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
    parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([failed], exception_key="parsing_error")
