"""What the CPU offers: its feature flags (from ``/proc/cpuinfo``) and its physical cores (from ``psutil``)."""

from __future__ import annotations

import os

import psutil


def cpuinfo() -> list[tuple[str, str]]:
    """(name, value) pairs of /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in handle)]
    except OSError:
        return []


def cpu_flags() -> set[str]:
    """The instruction-set features the CPU reports ("avx2", "amx_bf16", …); empty where unknown."""
    return next((set(value.split()) for name, value in cpuinfo() if name == "flags"), set())


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """True where the CPU multiplies bfloat16 natively (AMX-BF16 or AVX512-BF16); ``flags`` default to this
    CPU's."""
    flags = cpu_flags() if flags is None else flags
    return "amx_bf16" in flags or "avx512_bf16" in flags


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share their core's matrix units, so they add
    nothing here)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(psutil.cpu_count(logical=False) or available, available))
