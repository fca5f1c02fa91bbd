"""The in-process runtime: a model repository's ONNX graphs run with onnxruntime, no server.

It is what `synthmed generate` uses without a URL, and what laptops without Triton use: the
same files as the served models (stage I then stage II, exactly as the ensemble chains them;
or the conditional model alone), so a dataset made in-process equals one made through Triton.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from synthmed.errors import UserInputError
from synthmed.serving.repository import CONDITIONAL, STAGE1, STAGE2, parse_pbtxt


def model_parameters(repo: Path | str, name: str) -> dict[str, str]:
    """The string parameters of model `name`'s config.pbtxt (provenance, classes, defaults)."""
    config = parse_pbtxt((Path(repo) / name / "config.pbtxt").read_text())
    return {key: value.string_value for key, value in config.parameters.items()}


def _latest_onnx(repo: Path, name: str) -> Path:
    """model.onnx of the newest version of `name` (what Triton's latest-1 policy serves)."""
    folder = repo / name
    if not (folder / "config.pbtxt").is_file():
        raise UserInputError(f"{repo}: no model {name} (expected {folder / 'config.pbtxt'})")
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    if config.platform == "tensorrt_plan":
        raise UserInputError(f"{folder}: a TensorRT model; the in-process runtime runs ONNX models")
    versions = sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit()), reverse=True)
    for version in versions:
        path = folder / str(version) / "model.onnx"
        if path.is_file():
            return path
    raise UserInputError(f"{folder}: no version folder holds model.onnx")


def session_options(threads: int = 0) -> ort.SessionOptions:
    """CPU session options for the pipeline's graphs: all cores unless told, full graph
    optimisation, and no spin-waiting.

    Two sessions run back to back (stage I, then stage II): with spinning on, the idle
    session's threads spin while the other computes. Measured at 64x64, batch 16, 2 cores:
    about 350 images/s with spinning, about 1,000 without (benchmarks/pipeline_throughput.py).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class InProcessRuntime:
    """Stage I and stage II sessions over one repository."""

    def __init__(self, repo: Path | str, *, threads: int = 0) -> None:
        self.repo = Path(repo)
        if not self.repo.is_dir():
            raise UserInputError(f"{self.repo}: model repository does not exist")
        options = session_options(threads)
        self.stage1 = ort.InferenceSession(
            str(_latest_onnx(self.repo, STAGE1)), options, providers=["CPUExecutionProvider"]
        )
        self.stage2 = ort.InferenceSession(
            str(_latest_onnx(self.repo, STAGE2)), options, providers=["CPUExecutionProvider"]
        )
        self.nz = int(self.stage1.get_inputs()[0].shape[1])
        self.image_size = int(self.stage2.get_inputs()[0].shape[1])

    def generate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latents float32 [B, nz] -> (images uint8 [B, H, W, 3], masks uint8 [B, H, W])."""
        (mask,) = self.stage1.run(["mask"], {"z": np.ascontiguousarray(z, dtype=np.float32)})
        return self.translate(mask), mask

    def translate(self, masks: np.ndarray) -> np.ndarray:
        """Stage II alone: uint8 masks [B, H, W] (>= 128 is vessel) -> images [B, H, W, 3]."""
        (image,) = self.stage2.run(["image"], {"mask": np.ascontiguousarray(masks, dtype=np.uint8)})
        return image


class ConditionalRuntime:
    """The class-conditional model of a repository (z, class, truncation -> image, mask)."""

    def __init__(self, repo: Path | str, *, threads: int = 0, name: str = CONDITIONAL) -> None:
        self.repo, self.name = Path(repo), name
        if not self.repo.is_dir():
            raise UserInputError(f"{self.repo}: model repository does not exist")
        self.session = ort.InferenceSession(
            str(_latest_onnx(self.repo, name)),
            session_options(threads),
            providers=["CPUExecutionProvider"],
        )
        params = model_parameters(self.repo, name)
        self.classes: tuple[str, ...] = tuple(json.loads(params.get("synthmed_classes", "[]")))
        self.default_truncation = float(params.get("default_truncation", "1.0"))
        self.nz = int(self.session.get_inputs()[0].shape[1])
        self.image_size = int(self.session.get_outputs()[0].shape[1])

    def generate(
        self, z: np.ndarray, labels: np.ndarray, truncation: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Latents float32 [B, nz], labels int [B], psi float [B] (None: the model's default)
        -> (images uint8 [B, H, W, 3], masks uint8 [B, H, W])."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        labels = np.asarray(labels)
        if labels.size and not (0 <= labels.min() and labels.max() < len(self.classes)):
            raise UserInputError(
                f"{self.name}: labels must be in 0..{len(self.classes) - 1} "
                f"({', '.join(self.classes)}), got {sorted(set(labels.tolist()))}"
            )
        if truncation is None:
            truncation = np.full(len(z), self.default_truncation, np.float32)
        feeds = {
            "z": z,
            "class": np.ascontiguousarray(labels, dtype=np.int64).reshape(len(z)),
            "truncation": np.ascontiguousarray(truncation, dtype=np.float32).reshape(len(z)),
        }
        image, mask = self.session.run(["image", "mask"], feeds)
        return image, mask
