"""The face of ``ChatQwenVL`` that users read: every field documented in the class docstring under its real
name and type, an example per feature that is valid Python, and typed signatures (``bind_tools`` as
LangChain's own)."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import typing

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from qwenvl_agent import ChatQwenVL
from qwenvl_agent.vlm import chat_model

SECTIONS = (
    "Setup", "Key init args", "Instantiate", "Invoke", "Stream", "Async", "Images", "Tool calling",
    "Structured output", "Engines",
)
DOC = inspect.getdoc(ChatQwenVL)
# Names that LangChain's own signature imports for type checking only.
LANGCHAIN_NAMES = {"AIMessage": AIMessage, "BaseTool": BaseTool, "LanguageModelInput": LanguageModelInput, "Runnable": Runnable}
# An entry of a "Key init args" section: the field's name and type, its description indented below.
ENTRY = re.compile(r"^    (\w+): (.+)$")


def documented_fields() -> dict[str, str]:
    """name → type, for every entry under a "Key init args" heading of the class docstring."""
    fields: dict[str, str] = {}
    inside = False
    for line in DOC.splitlines():
        if line and not line.startswith(" "):  # a section heading
            inside = line.startswith("Key init args")
            continue
        entry = ENTRY.match(line)
        if inside and entry:
            assert entry[1] not in fields, f"{entry[1]} is documented twice"
            fields[entry[1]] = entry[2]
    return fields


def own_fields() -> set[str]:
    return set(ChatQwenVL.model_fields) - set(BaseChatModel.model_fields)


def test_every_field_is_documented_under_its_name_with_its_declared_type():
    documented = documented_fields()
    assert set(documented) == own_fields(), (
        f"undocumented: {sorted(own_fields() - set(documented))}; "
        f"documented but not a field: {sorted(set(documented) - own_fields())}"
    )
    declared = typing.get_type_hints(ChatQwenVL, include_extras=False)  # checks the annotations resolve
    for name, type_text in documented.items():
        assert name in declared
        assert type_text == ChatQwenVL.__annotations__[name], f"{name}: documented {type_text!r}"


def test_each_alias_is_named_next_to_its_field():
    aliased = {name: field.alias for name, field in ChatQwenVL.model_fields.items() if name in own_fields() and field.alias}
    assert aliased == {"max_tokens": "max_new_tokens", "stop": "stop_sequences"}
    for name, alias in aliased.items():
        entry = DOC.split(f"    {name}: ", 1)[1].split("\n    ", 2)[1]  # the description below the entry
        assert f"``{alias}``" in entry, f"{name}'s alias {alias} is not mentioned where {name} is described"


def test_every_feature_has_its_section_with_an_example():
    headings = [line.rstrip(":") for line in DOC.splitlines() if line and not line.startswith(" ")]
    for section in SECTIONS:
        assert any(h == section or h.startswith(section + " ") for h in headings), f"no {section!r} section"
    for section in ("Setup", "Instantiate", "Invoke", "Stream", "Async", "Images", "Tool calling", "Structured output", "Engines"):
        body = re.search(rf"^{section}:\n((?:(?: {{4}}.*)?\n)+)", DOC + "\n", re.M)[1]  # up to the next heading
        assert ".. code-block::" in body, f"the {section} section has no example"


def python_examples() -> list[str]:
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:(?: {8}.*)?\n)+)", DOC + "\n")
    return [textwrap.dedent(block) for block in blocks]


def test_the_examples_are_valid_python():
    examples = python_examples()
    assert len(examples) >= 8
    for example in examples:
        # The async example awaits at top level, as in a notebook.
        compile(example, "<ChatQwenVL docstring>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_examples_use_only_real_field_names_and_engine_values():
    """An example that passes an argument ChatQwenVL does not have would fail at once for the reader."""
    known = set(ChatQwenVL.model_fields) | {f.alias for f in ChatQwenVL.model_fields.values() if f.alias}
    for example in python_examples():
        for call in ast.walk(ast.parse(example)):
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "ChatQwenVL":
                given = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
                assert set(given) <= known, f"unknown argument in {ast.unparse(call)}"
                ChatQwenVL(**given)  # valid values too: constructing loads nothing


def class_functions() -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(inspect.getsource(chat_model))
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "ChatQwenVL"]
    return [node for node in cls.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("function", class_functions(), ids=lambda f: f.name)
def test_every_method_is_typed(function):
    args = function.args
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, (args.vararg, args.kwarg))]
    untyped = [p.arg for p in params if p.annotation is None and p.arg not in ("self", "cls")]
    assert not untyped, f"{function.name}: untyped {untyped}"
    assert function.returns is not None, f"{function.name} has no return type"


def test_bind_tools_has_langchains_signature():
    ours = inspect.signature(ChatQwenVL.bind_tools)
    theirs = inspect.signature(BaseChatModel.bind_tools)
    assert [(p.name, p.kind) for p in ours.parameters.values()] == [(p.name, p.kind) for p in theirs.parameters.values()]
    hints = typing.get_type_hints(ChatQwenVL.bind_tools)
    base = typing.get_type_hints(BaseChatModel.bind_tools, localns=LANGCHAIN_NAMES)
    assert hints["return"] == base["return"]  # Runnable[LanguageModelInput, AIMessage]
    assert hints["tools"] == base["tools"]
    # Every tool_choice LangChain's signature allows, ours allows too (and the dict and bool forms besides).
    assert set(typing.get_args(base["tool_choice"])) <= set(typing.get_args(hints["tool_choice"]))
