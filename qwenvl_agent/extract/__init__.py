"""``qwenvl extract``: the fields of a schema from many documents into a table, each value with where it is
written, null where the document does not show it (see ``grounding`` for the rule)."""

from .documents import SUPPORTED_SUFFIXES, DocumentInputError, NamedDocument, expand_inputs
from .grounding import Source
from .output import OutputError, ResultWriter, csv_text, done_documents
from .run import ExtractionResult, Extractor, extract
from .schema import SchemaError, json_schema, nullable, parse_fields

__all__ = [
    "SUPPORTED_SUFFIXES",
    "DocumentInputError",
    "ExtractionResult",
    "Extractor",
    "NamedDocument",
    "OutputError",
    "ResultWriter",
    "SchemaError",
    "Source",
    "csv_text",
    "done_documents",
    "expand_inputs",
    "extract",
    "json_schema",
    "nullable",
    "parse_fields",
]
