"""What machine a figure was measured on: CPU model, core count and the flags that decide int8 speed.

Speed ratios depend on the hardware (int8 gains several times with AVX-512 VNNI or AMX and can
lose without them), so every benchmark and evaluation prints this next to its figures.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction-set extensions that change how fast the variants run.
RELEVANT = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> list[str]:
    flags: set[str] = set()
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return sorted(f for f in flags if "vnni" in f or f.startswith("amx") or f in ("avx512f", "avx2"))


def describe() -> str:
    """One line: ``AMD EPYC, 2 cores, flags avx2 avx512_vnni avx512f``."""
    flags = " ".join(cpu_flags()) or "none of avx2/avx512/vnni/amx"
    return f"{cpu_model()}, {os.cpu_count()} cores, flags {flags}"
