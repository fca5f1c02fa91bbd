"""The CPU a process runs on: its model and the vector extensions that set its speed and its
rounding.

Machines of one kind differ: an AMD EPYC with AVX-512 and VNNI ran fp32 GEMM 2.3x faster than
an AVX2-only one, and PyTorch's CPU kernels pick other code paths (and sum in another order)
on each. Benchmarks print it above their tables, and training records it in config.json
beside the thread count, so that two runs that should agree bit for bit can be checked for
having run alike. Needs no third-party package (numpy only as a fallback).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# Flags as Linux's /proc/cpuinfo spells them, grouped by the extension they make up.
EXTENSIONS = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "BF16": ("avx512_bf16", "amx_bf16"),  # bf16 arithmetic in hardware: --precision bf16
}
FLAGS = tuple(flag for flags in EXTENSIONS.values() for flag in flags)
# numpy's names for the same flags (numpy's runtime CPU dispatch table).
NUMPY_FLAGS = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512VNNI": "avx512_vnni",
               "AVXVNNI": "avx_vnni"}  # fmt: skip


def _proc_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str | None, set[str] | None]:
    """Model name and flags of the first processor listed, or None for what is missing."""
    try:
        text = path.read_text()
    except OSError:
        return None, None
    model: str | None = None
    flags: set[str] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    return model, flags


def _numpy_flags() -> set[str] | None:
    """The flags numpy detected at import: the same facts where there is no /proc/cpuinfo."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features  # numpy 2
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features  # numpy 1
        except ImportError:
            return None
    return {flag for name, flag in NUMPY_FLAGS.items() if features.get(name)}


@functools.cache
def cpu() -> dict:
    """{"model", "cores", "flags": {flag: bool or None}, "flags_from"}: /proc/cpuinfo on Linux,
    else platform.processor() and numpy's detection; None where nothing could tell. Read once
    per process (training records it at every checkpoint); treat the dict as read-only."""
    model, flags = _proc_cpuinfo()
    source = "/proc/cpuinfo" if flags is not None else None
    if flags is None:
        flags = _numpy_flags()
        source = "numpy" if flags is not None else None
    return {
        "model": model or platform.processor() or platform.machine() or "unknown",
        "cores": os.cpu_count() or 1,
        "flags": {flag: None if flags is None else flag in flags for flag in FLAGS},
        "flags_from": source,
    }


def has_bf16(info: dict) -> bool:
    """Whether `cpu()`'s dict shows bf16 arithmetic in hardware (AVX-512 BF16 or AMX); without
    it oneDNN emulates bf16 and autocast trains slower than fp32."""
    return any(info["flags"][flag] for flag in EXTENSIONS["BF16"])


def extensions(info: dict) -> str:
    """'AVX2 yes, AVX-512 yes (avx512f), VNNI yes (avx512_vnni, avx_vnni)' for `cpu()`'s dict."""
    if info["flags_from"] is None:
        return "vector extensions unknown"
    parts = []
    for name, flags in EXTENSIONS.items():
        present = [f for f in flags if info["flags"][f]]
        detail = f" ({', '.join(present)})" if present and name != "AVX2" else ""
        parts.append(f"{name} {'yes' if present else 'no'}{detail}")
    return ", ".join(parts)
