"""What machine a figure was measured on (CPU model, cores, the flags that decide int8 speed), and
whether it has a CUDA device.

Speed ratios depend on the hardware (int8 gains several times with AVX-512 VNNI or AMX and can
lose without them), so every benchmark and evaluation prints this next to its figures.
:func:`cuda_unavailable_reason` is the one "is there a GPU" probe: the torch backend, the build
steps of the CUDA variants and ``slimgate serve`` all ask it, so that the gateway never imports
torch itself (torch is imported here only when the question is asked).
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


def cuda_unavailable_reason() -> str | None:
    """None when torch sees a usable CUDA device, else why not (in words a person can act on)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build of torch"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (torch.cuda.is_available() is false)"
    return None


def cuda_device_name() -> str | None:
    """The first CUDA device's name, or None where there is none."""
    if cuda_unavailable_reason() is not None:
        return None
    import torch

    return str(torch.cuda.get_device_name(0))
