"""Turn a Qwen3-VL checkpoint into an OpenVINO IR with int8 or int4 weights, once, in a cache folder.

The export runs optimum-intel's exporter in a child process (``python -m qwenvl_agent.vlm.openvino_export``):
it needs the full-precision model in memory, which the child gives back to the system when it ends,
and its progress and log stay out of the caller's way. The parent shows a progress bar over the
export's phases. A folder that already holds an IR (a published ``…-ov`` model) is used as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import EngineError
from .ir import DONE_FILE, IR_FILE, is_openvino_ir  # noqa: F401  (IR_FILE, is_openvino_ir: importable from here too)

WEIGHTS = ("int8", "int4")
_PHASE = "qwenvl-export phase "
_PHASES = ("reading the checkpoint", "converting it and compressing the weights", "saving the IR")
# optimum-intel 2.2's Qwen3-VL exporter refuses transformers above 5.0.0 (running an IR does not).
_EXPORTER_MAX_TRANSFORMERS = (5, 0, 0)
_export_lock = threading.Lock()


def openvino_available() -> bool:
    """Whether OpenVINO and optimum-intel are installed (checked without importing them)."""
    try:
        return importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("optimum.intel") is not None
    except (ImportError, ValueError):
        return False


def require_openvino() -> None:
    if not openvino_available():
        raise EngineError(
            "The OpenVINO engine needs OpenVINO and optimum-intel, which are not installed. Install them with "
            "pip install 'qwenvl-agent[openvino]', or use engine='torch'."
        )


def cache_root() -> Path:
    """Where qwenvl-agent keeps what it builds: ``$QWENVL_CACHE``, else ``$XDG_CACHE_HOME/qwenvl-agent``."""
    if os.environ.get("QWENVL_CACHE"):
        return Path(os.environ["QWENVL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "qwenvl-agent"


def export_folder(source: Path, weights: str) -> Path:
    """The cache folder of ``source``'s export: named after the model, the exact files and the weights, so a
    changed checkpoint is exported again rather than served stale."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(str(source.resolve()).encode())
    for name in sorted(os.listdir(source)):
        if name.endswith((".json", ".safetensors", ".jinja", ".txt")):
            stat = (source / name).stat()
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_root() / "openvino" / f"{source.resolve().name}-{digest.hexdigest()}-{weights}"


def check_weights(weights: str) -> str:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}.")
    return weights


def ensure_exported(source: Path, weights: str) -> Path:
    """The IR folder of ``source`` with ``weights``, exporting it first if the cache does not hold it."""
    target = export_folder(source, check_weights(weights))
    if (target / DONE_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One export per folder across threads and processes: another process that exports the same model
    # waits and uses that export, rather than exporting again and replacing a folder that may be in use.
    with _export_lock, _folder_lock(target):
        if (target / DONE_FILE).is_file():
            return target
        require_openvino()
        _check_exporter_version()
        partial = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
        log_path = target.parent / f"{target.name}.log"
        try:
            _run_child(source, partial, weights, log_path)
            (partial / DONE_FILE).write_text(json.dumps({"source": str(source), "weights": weights}) + "\n")
            if target.exists():  # an export left unfinished (no DONE_FILE) by a process that died
                shutil.rmtree(target)
            partial.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
            partial.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


@contextlib.contextmanager
def _folder_lock(target: Path) -> Iterator[None]:
    """A file lock beside ``target`` (released by the system if its holder dies), saying so when it waits."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(target.parent / f"{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"Waiting for another process that is exporting {target.name} to OpenVINO…", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _check_exporter_version() -> None:
    import transformers

    version = tuple(int(part) for part in transformers.__version__.split(".")[:3] if part.isdigit())
    if version > _EXPORTER_MAX_TRANSFORMERS:
        raise EngineError(
            f"Exporting Qwen3-VL to OpenVINO needs transformers 4.57 to 5.0 (optimum-intel's exporter refuses "
            f"{transformers.__version__}). Install the tested set with pip install 'qwenvl-agent[openvino]', or "
            "point model= at a folder that already holds an OpenVINO IR (such as a published …-int4-ov model), "
            "or use engine='torch'."
        )


def _run_child(source: Path, out: Path, weights: str, log_path: Path) -> None:
    from tqdm.auto import tqdm

    print(
        f"Exporting {source.name} to OpenVINO with {weights} weights, once: about 3 minutes and 16 GB of memory "
        f"for the 2B model, seconds for a small one. Into {out.parent}.",
        file=sys.stderr,
        flush=True,
    )
    command = [sys.executable, "-m", __name__, str(source), str(out), "--weights", weights]
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log, tqdm(total=len(_PHASES), desc="OpenVINO export", unit="phase") as bar:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert child.stdout is not None
        for line in child.stdout:
            log.write(line)
            if line.startswith(_PHASE):
                number, _, text = line[len(_PHASE) :].strip().partition(" ")
                bar.n = int(number) - 1
                bar.set_description(f"OpenVINO export: {text}")
                bar.refresh()
        code = child.wait()
        bar.n = len(_PHASES) if code == 0 else bar.n
        bar.refresh()
    if code != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-12:])
        raise EngineError(
            f"Exporting {source} to OpenVINO ({weights}) failed after {time.monotonic() - started:.0f} s. The last "
            f"lines of its log ({log_path}):\n{tail}\nUse engine='torch' meanwhile, or export the model yourself "
            f"with optimum-cli export openvino --task image-text-to-text --weight-format {weights} and pass that folder."
        )


def _stage(source: Path, folder: Path) -> Path:
    """A folder that mirrors ``source`` by links, with the config in the form the exporter reads: transformers
    5 writes ``rope_parameters`` where the exporter (and the published checkpoint) use ``rope_scaling``."""
    stage = folder / source.resolve().name
    stage.mkdir()
    for item in source.iterdir():
        (stage / item.name).symlink_to(item.resolve())
    config = json.loads((source / "config.json").read_text())
    text = config.get("text_config", {})
    if "rope_parameters" in text and "rope_scaling" not in text:
        rope = dict(text.pop("rope_parameters"))
        text["rope_theta"] = rope.pop("rope_theta", 5_000_000.0)
        text["rope_scaling"] = rope
        (stage / "config.json").unlink()
        (stage / "config.json").write_text(json.dumps(config, indent=2))
    return stage


def _int4_group_size(stage: Path) -> int:
    """int4 weights are quantised in groups of 128 input channels; a model whose layers are narrower (the
    tests' tiny one) gets the largest power of two that divides them."""
    text = json.loads((stage / "config.json").read_text()).get("text_config", {})
    widths = [text.get("hidden_size", 128), text.get("intermediate_size", 128)]
    group = 128
    while group > 1 and any(width % group for width in widths):
        group //= 2
    return group


def _phase(number: int) -> None:
    print(f"{_PHASE}{number} {_PHASES[number - 1]}", flush=True)


def _export(source: Path, out: Path, weights: str) -> None:
    """The child's work: stage, export with compressed weights, save the IR with the processor files."""
    from optimum.intel import OVModelForVisualCausalLM
    from transformers import AutoProcessor

    with tempfile.TemporaryDirectory() as folder:
        _phase(1)
        stage = _stage(source, Path(folder))
        processor = AutoProcessor.from_pretrained(stage)
        _phase(2)
        # A plain {"bits": …} lets optimum-intel apply its tuned settings for models it knows (int4 for
        # Qwen3-VL-2B: asymmetric, group 128); the vision parts and embeddings get int8 either way.
        quantization: dict = {"bits": 4 if weights == "int4" else 8}
        if weights == "int4" and _int4_group_size(stage) != 128:
            quantization["group_size"] = _int4_group_size(stage)
        model = OVModelForVisualCausalLM.from_pretrained(stage, export=True, compile=False, quantization_config=quantization)
        _phase(3)
        model.save_pretrained(out)
        processor.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qwenvl_agent.vlm.openvino_export")
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--weights", choices=WEIGHTS, default="int8")
    args = parser.parse_args(argv)
    _export(Path(args.source), Path(args.out), args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
