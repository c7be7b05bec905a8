"""What a folder holding an OpenVINO IR says about itself, read without OpenVINO: whether it is one, the model it
was exported from, and the format of its weights."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import WrongModelError

IR_FILE = "openvino_language_model.xml"
DONE_FILE = "qwenvl-export.json"


def is_openvino_ir(path: Path) -> bool:
    return (path / IR_FILE).is_file()


def check_model_type(ir_path: Path) -> None:
    """``WrongModelError`` unless the IR in ``ir_path`` is of a Qwen3-VL model."""
    try:
        model_type = json.loads((ir_path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise WrongModelError(f"{ir_path} holds an OpenVINO IR without a readable config.json ({exc}).") from exc
    if model_type != "qwen3_vl":
        raise WrongModelError(
            f"{ir_path} holds an OpenVINO IR of a {model_type!r} model, not Qwen3-VL (model_type 'qwen3_vl'). "
            "Pass a Qwen3-VL checkpoint or IR, for example Qwen/Qwen3-VL-2B-Instruct."
        )


def ir_weights(ir_path: Path, requested: str) -> str:
    """The weights of an IR: as recorded by our export, else as NNCF's weight compression recorded them at the
    end of the language model's XML (a published IR), else what was asked for."""
    try:
        return json.loads((ir_path / DONE_FILE).read_text())["weights"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        with (ir_path / IR_FILE).open("rb") as xml:
            xml.seek(0, os.SEEK_END)
            xml.seek(max(0, xml.tell() - 65536))
            tail = xml.read().decode("utf-8", "replace")
    except OSError:
        return requested
    found = re.search(r'<weight_compression>.*?<mode value="(int4|int8)', tail, re.S)
    return found.group(1) if found else requested
