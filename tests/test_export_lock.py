"""Two processes that need the same OpenVINO export: one exports, the other waits and uses that export, and
neither deletes a folder the other is using."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from qwenvl_agent.vlm.testing import make_tiny_checkpoint

# Each process runs the real ensure_exported; only the exporter child (minutes and gigabytes for a real
# model) is a stand-in that takes a second and records which process exported.
PROCESS = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from qwenvl_agent.vlm import openvino_export

    def export(source, out, weights, log_path):
        with open(sys.argv[2], "a") as record:
            record.write(f"{os.getpid()}\\n")
        time.sleep(1.5)
        (out / openvino_export.IR_FILE).write_text(str(os.getpid()))

    openvino_export._run_child = export
    openvino_export.require_openvino = lambda: None
    openvino_export._check_exporter_version = lambda: None
    target = openvino_export.ensure_exported(Path(sys.argv[1]), "int8")
    time.sleep(2.0)  # the folder is in use: loaded, say
    print(target, (target / openvino_export.IR_FILE).read_text(), os.getpid())
    """
)


def test_two_processes_export_a_model_once_and_keep_each_others_folder(tmp_path):
    source = make_tiny_checkpoint(tmp_path / "model")
    record = tmp_path / "exports.txt"
    env = {**os.environ, "QWENVL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", PROCESS, str(source), str(record)]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    for process, (_, err) in zip(processes, results):
        assert process.returncode == 0, err
    exporters = record.read_text().split()
    assert len(exporters) == 1, f"the model was exported {len(exporters)} times"
    outputs = [out.split() for out, _ in results]
    assert outputs[0][0] == outputs[1][0], "both use the same folder"
    # Each process read, after using it for a while, the export the one exporter wrote: nothing replaced it.
    assert outputs[0][1] == outputs[1][1] == exporters[0]
    assert (Path(outputs[0][0]) / "openvino_language_model.xml").read_text() == exporters[0]
