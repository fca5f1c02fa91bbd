"""Check an exported ONNX graph against the PyTorch model it came from, with onnxruntime.

Export is only trusted once verified: the graph runs on several batch sizes from one file and
every UINT8 output must match PyTorch. The rule, for each output and batch size: the fraction
of values that differ by more than `tolerance` grey levels must not exceed `max_fraction`.
A mask value is 0 or 255, so any flipped mask pixel counts. Defaults: fp32 graphs 1 grey level
and 0.1 %; fp16 graphs (checked against the fp32 PyTorch model) 8 grey levels and 1 %.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from synthmed.errors import SynthmedError

TOLERANCES = {"fp32": (1, 1e-3), "fp16": (8, 1e-2)}


class ExportVerificationError(SynthmedError):
    """The exported graph does not match PyTorch within the tolerance."""


@dataclass(frozen=True)
class Check:
    """One output at one batch size."""

    model: str
    output: str
    batch: int
    max_abs_diff: int
    mismatch_fraction: float
    tolerance: int
    max_fraction: float

    @property
    def ok(self) -> bool:
        """Whether this output is within the tolerance."""
        return self.mismatch_fraction <= self.max_fraction


def verify(
    name: str,
    onnx_path: Path,
    reference: nn.Module,
    make_inputs: Callable[[int], dict[str, np.ndarray]],
    *,
    batch_sizes: Sequence[int],
    tolerance: int,
    max_fraction: float,
) -> list[Check]:
    """Run `onnx_path` and `reference` on the same inputs; raise on the first failure."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    checks = []
    for batch in batch_sizes:
        inputs = make_inputs(batch)
        got = session.run(output_names, inputs)
        with torch.no_grad():
            expected = reference(*(torch.from_numpy(v) for v in inputs.values()))
        expected = expected if isinstance(expected, tuple) else (expected,)
        for output, a, b in zip(output_names, got, expected, strict=True):
            b = b.numpy()
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ExportVerificationError(
                    f"{name}: output {output} at batch {batch} is {a.dtype}{list(a.shape)}, "
                    f"PyTorch gives {b.dtype}{list(b.shape)}"
                )
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            check = Check(
                name,
                output,
                batch,
                int(diff.max(initial=0)),
                float((diff > tolerance).mean()),
                tolerance,
                max_fraction,
            )
            checks.append(check)
            if not check.ok:
                raise ExportVerificationError(
                    f"{name}: output {output} at batch {batch} differs from PyTorch in "
                    f"{check.mismatch_fraction:.4%} of values by more than {tolerance} grey "
                    f"levels (allowed {max_fraction:.4%}; max difference {check.max_abs_diff}); "
                    "nothing was written"
                )
    return checks
