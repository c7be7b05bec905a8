"""What the benchmark ran on: CPU, the flags that decide speed, cores, memory and library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time

from qwenvl_agent.vlm.runtime import _cpu_flags, _cpuinfo, physical_cores

# The instruction-set features that change CPU inference speed.
FLAGS_THAT_MATTER = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def machine_facts() -> dict:
    flags = _cpu_flags()
    cpu = next((value for name, value in _cpuinfo() if name == "model name"), platform.processor() or "unknown CPU")
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = float("nan")
    return {
        "cpu": cpu,
        "cores": physical_cores(),
        "flags": [flag for flag in FLAGS_THAT_MATTER if flag in flags],
        "memory_gb": round(memory_gb, 1),
        "date": time.strftime("%Y-%m-%d"),
        "versions": {name: _version(name) for name in ("torch", "transformers", "openvino", "optimum-intel", "qwenvl-agent")},
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
