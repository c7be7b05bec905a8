"""What to extract: a schema given as a pydantic model, a TypedDict, a JSON schema or the ``--fields`` syntax,
turned into one JSON schema whose top-level fields may each be null (a field the document does not show)."""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic import BaseModel

# The --fields types and their JSON schema.
FIELD_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date", "description": "a date, written YYYY-MM-DD"},
}
_NAME = re.compile(r"^[A-Za-z_][\w]*$", re.UNICODE)
SCHEMA_TITLE = "extracted_fields"


class SchemaError(ValueError):
    """A schema or a ``--fields`` list that cannot be used; the message names the problem."""


def parse_fields(text: str) -> dict[str, Any]:
    """``"invoice_number, total:number, date:date"`` as a JSON schema: comma-separated ``name[:type]`` with
    the types string (the default), number, integer, boolean and date."""
    properties: dict[str, Any] = {}
    for position, item in enumerate(text.split(","), start=1):
        item = item.strip()
        if not item:
            raise SchemaError(f"--fields: field {position} is empty (two commas in a row, or a comma at the end?).")
        name, _, kind = (part.strip() for part in item.partition(":"))
        kind = kind.lower() or "string"
        if not _NAME.match(name):
            raise SchemaError(f"--fields: {name!r} is not a field name: use letters, digits and _, not starting with a digit.")
        if kind not in FIELD_TYPES:
            raise SchemaError(f"--fields: {name} has the type {kind!r}; the types are {', '.join(FIELD_TYPES)}.")
        if name in properties:
            raise SchemaError(f"--fields: {name} is named twice.")
        properties[name] = dict(FIELD_TYPES[kind])
    return {"title": SCHEMA_TITLE, "type": "object", "properties": properties, "required": list(properties)}


def json_schema(schema: Any) -> dict[str, Any]:
    """The JSON schema of ``schema``: a pydantic model, a TypedDict, a JSON schema dict, or a ``--fields``
    string. Its top level must be an object with properties."""
    if isinstance(schema, str):
        return parse_fields(schema)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        result = schema.model_json_schema()
    elif isinstance(schema, dict):
        result = copy.deepcopy(schema)
    elif isinstance(schema, type) and hasattr(schema, "__annotations__") and hasattr(schema, "__total__"):
        from pydantic import TypeAdapter

        result = TypeAdapter(schema).json_schema()
    else:
        raise SchemaError(f"A schema is a pydantic model, a TypedDict, a JSON schema dict or a fields string; got {type(schema).__name__}.")
    if result.get("type", "object") != "object" or not isinstance(result.get("properties"), dict) or not result["properties"]:
        raise SchemaError("The schema must describe an object with at least one property (the fields to extract).")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError as InvalidSchema

    try:
        Draft202012Validator.check_schema(result)
    except InvalidSchema as exc:
        raise SchemaError(f"The schema is not a valid JSON schema: {exc.message}") from exc
    result.setdefault("title", SCHEMA_TITLE)
    return result


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema every row follows: each top-level field required, and each may be null (not in the document)."""
    result = copy.deepcopy(schema)
    result["properties"] = {
        name: {"anyOf": [field, {"type": "null"}], **({"description": field["description"]} if "description" in field else {})}
        for name, field in result["properties"].items()
    }
    result["required"] = list(result["properties"])
    result["additionalProperties"] = False
    result["type"] = "object"
    return result


def field_kind(field: dict[str, Any], definitions: dict[str, Any] | None = None) -> str:
    """A top-level field's kind for grounding: string, date, number, integer, boolean, or other."""
    if "$ref" in field and definitions:
        field = definitions.get(field["$ref"].split("/")[-1], field)
    if "anyOf" in field:  # Optional[X] from pydantic: the non-null branch
        branches = [b for b in field["anyOf"] if b.get("type") != "null"]
        field = branches[0] if len(branches) == 1 else {}
    kind = field.get("type")
    if kind == "string":
        return "date" if field.get("format") == "date" else "string"
    return kind if kind in ("number", "integer", "boolean") else "other"


def validation_errors(values: Any, schema: dict[str, Any]) -> list[str]:
    """What is wrong with ``values`` against ``schema`` (nothing: an empty list)."""
    from jsonschema import Draft202012Validator

    problems = []
    for error in sorted(Draft202012Validator(schema).iter_errors(values), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in error.path) or "the reply"
        problems.append(f"{where}: {error.message}")
    return problems
