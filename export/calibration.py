"""Real inputs for INT8 calibration: latents for stage I, stage I's own masks (and their
latents) for stage II.

Calibrating stage II on random noise would set its activation ranges for inputs it never
sees; feeding it the masks the exported stage I actually draws (through onnxruntime) gives
ranges that hold in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from synthmed.contract import STAGE1
from synthmed.errors import UserInputError
from synthmed.latents import latents

CALIBRATION_SEED = 20_240_601


def calibration_batches(
    onnx_path: Path, batches: int, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """`batches` input dicts of `batch_size` rows for the graph at `onnx_path`."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    if list(inputs) == ["z"]:
        nz = inputs["z"].shape[1]
        for b in range(batches):
            yield {"z": latents(CALIBRATION_SEED, range(b * batch_size, (b + 1) * batch_size), nz)}
        return
    stage1_path = onnx_path.with_name(f"{STAGE1}.onnx")
    if not stage1_path.is_file():
        raise UserInputError(
            f"{onnx_path}: INT8 calibration of stage II needs stage I's masks, "
            f"but {stage1_path.name} is not beside it"
        )
    stage1 = ort.InferenceSession(str(stage1_path), providers=["CPUExecutionProvider"])
    nz = stage1.get_inputs()[0].shape[1]
    for b in range(batches):
        z = latents(CALIBRATION_SEED, range(b * batch_size, (b + 1) * batch_size), nz)
        (mask,) = stage1.run(["mask"], {"z": z})
        yield {"mask": mask, "z": z}
