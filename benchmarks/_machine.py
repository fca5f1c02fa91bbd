"""The machine a benchmark ran on: the CPU and its vector extensions (synthmed.machine, which
training's config.json records too) and the versions of the numeric libraries.

Machines of one kind differ: an AMD EPYC with AVX-512 and VNNI ran fp32 GEMM 2.3x faster than
an AVX2-only one, and int8 gains 2.4x with VNNI but 1.5x without. So every benchmark that prints
a table prints `header()` above it and stores `machine()` in its JSON.
"""

from __future__ import annotations

import platform
import sys

from synthmed.machine import cpu, extensions

LIBRARIES = ("numpy", "torch", "onnxruntime", "openvino")


def machine(**extra: object) -> dict:
    """What a benchmark's JSON records: CPU model, cores, vector flags, Python and the versions
    of the numeric libraries this process has imported; `extra` adds fields (e.g. threads)."""
    info = cpu()
    versions = {
        name: getattr(sys.modules[name], "__version__", "?")
        for name in LIBRARIES
        if name in sys.modules
    }
    return {
        "cpu": info["model"],
        "cores": info["cores"],
        "cpu_flags": info["flags"],
        "cpu_flags_from": info["flags_from"],
        "vector_extensions": extensions(info),
        "python": platform.python_version(),
        **versions,
        **extra,
    }


def header(recorded: dict | None = None) -> str:
    """One line for the top of a printed table, from `machine()` (measured now if not given):
    'CPU: AMD EPYC, 2 cores; AVX2 yes, AVX-512 yes (avx512f), VNNI yes (avx512_vnni); ...'."""
    m = recorded or machine()
    versions = ", ".join(f"{name} {m[name]}" for name in LIBRARIES if name in m)
    return (
        f"CPU: {m['cpu']}, {m['cores']} cores; {m['vector_extensions']}; "
        f"Python {m['python']}" + (f", {versions}" if versions else "")
    )


if __name__ == "__main__":
    print(header())
