"""Servers the tests start in processes of their own: a free port, waiting until one answers, stopping it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def qwenvl_command() -> list[str]:
    """The installed ``qwenvl`` script beside this Python, or the module where it is not installed."""
    script = Path(sys.executable).with_name("qwenvl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qwenvl_agent.cli"]


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the server did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """End the server and whatever it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextlib.contextmanager
def qwenvl_process(arguments: list[str], log: Path, health: str, env: dict | None = None, cwd: Path | None = None):
    """``qwenvl ARGUMENTS`` in a process group of its own, offline; yields the process once ``health``
    (a URL) answers 200, and stops it on the way out."""
    command = [*qwenvl_command(), *arguments]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_healthy(health, process, log)
        yield process
    finally:
        stop(process)
