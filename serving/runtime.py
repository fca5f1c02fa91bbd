"""The in-process runtime: a model repository's ONNX graphs run with onnxruntime, no server.

It is what `synthmed generate` uses without a URL, and what laptops without Triton use: the
same files as the served models (stage I then stage II, exactly as the ensemble chains them;
or the conditional model alone), so a dataset made in-process equals one made through Triton.
Both runtimes are `synthmed.sampling.Generator`s, like the Triton client: `.contract`,
`generate(count)` and `generate_indices(indices)`; `run` takes raw latents.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from synthmed.contract import (
    CLASS,
    CONDITIONAL,
    DEFAULT_TRUNCATION,
    ENSEMBLE,
    IMAGE,
    MASK,
    PARAM_CLASSES,
    PARAM_DEFAULT_TRUNCATION,
    PARAM_PROVENANCE,
    STAGE1,
    STAGE2,
    TRUNCATION,
    Contract,
    Provenance,
    Z,
    parse_provenance,
)
from synthmed.errors import UserInputError
from synthmed.sampling import Generator, translate_feeds
from synthmed.serving.repository import parse_pbtxt


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


def _open(repo: Path, name: str, threads: int) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(_latest_onnx(repo, name)), session_options(threads), providers=["CPUExecutionProvider"]
    )


def _repository(repo: Path | str) -> Path:
    repo = Path(repo)
    if not repo.is_dir():
        raise UserInputError(f"{repo}: model repository does not exist")
    return repo


class InProcessRuntime(Generator):
    """Stage I and stage II sessions over one repository: the `synthmed` ensemble, in-process."""

    def __init__(self, repo: Path | str, *, threads: int = 0) -> None:
        self.repo = _repository(repo)
        self.stage1 = _open(self.repo, STAGE1, threads)
        self.stage2 = _open(self.repo, STAGE2, threads)
        self.nz = int(self.stage1.get_inputs()[0].shape[1])
        self.image_size = int(self.stage2.get_inputs()[0].shape[1])
        size = self.image_size
        self.contract = Contract(ENSEMBLE, "in-process", self.nz, size, size)

    def run(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latents float32 [B, nz] -> (images uint8 [B, H, W, 3], masks uint8 [B, H, W])."""
        feeds = {Z.name: np.ascontiguousarray(z, dtype=np.float32)}
        (mask,) = self.stage1.run([MASK.name], feeds)
        (image,) = self.stage2.run([IMAGE.name], {**feeds, MASK.name: mask})
        return image, mask

    def run_batch(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One batch of request tensors (as `Plan.inputs` makes them) -> (images, masks)."""
        return self.run(inputs[Z.name])

    def translate(self, masks: np.ndarray, *, seed: int = 0, start: int = 0) -> np.ndarray:
        """Stage II alone: uint8 masks [B, H, W] (>= 128 is vessel) -> images [B, H, W, 3],
        mask k with the texture noise of sample start + k of seed `seed` (as the clients)."""
        feeds = translate_feeds(masks, self.nz, seed, start)
        (image,) = self.stage2.run([IMAGE.name], feeds)
        return image

    def provenance(self) -> list[Provenance]:
        """The stage I and stage II runs, as the repository writer recorded them."""
        return _provenance(self.repo, (STAGE1, STAGE2))

    def location(self) -> dict:
        """The repository the graphs were read from."""
        return {"repository": str(self.repo.resolve())}


class ConditionalRuntime(Generator):
    """The class-conditional model of a repository (z, class, truncation -> image, mask)."""

    def __init__(self, repo: Path | str, *, threads: int = 0, name: str = CONDITIONAL) -> None:
        self.repo, self.name = _repository(repo), name
        self.session = _open(self.repo, name, threads)
        params = model_parameters(self.repo, name)
        self.nz = int(self.session.get_inputs()[0].shape[1])
        self.image_size = int(self.session.get_outputs()[0].shape[1])
        size = self.image_size
        self.contract = Contract(
            name,
            "in-process",
            self.nz,
            size,
            size,
            conditional=True,
            classes=tuple(json.loads(params.get(PARAM_CLASSES, "[]"))),
            default_truncation=float(params.get(PARAM_DEFAULT_TRUNCATION, str(DEFAULT_TRUNCATION))),
        )

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names: label k is classes[k]."""
        return self.contract.classes

    def run(
        self, z: np.ndarray, labels: np.ndarray, truncation: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Latents float32 [B, nz], labels int [B], psi float [B] (None: the model's default)
        -> (images uint8 [B, H, W, 3], masks uint8 [B, H, W])."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        labels = np.asarray(labels)
        if labels.size and not (0 <= labels.min() and labels.max() < len(self.classes)):
            raise UserInputError(
                f"{self.name}: labels must be in 0..{len(self.classes) - 1} "
                f"({self.contract.describe_classes()}), got {sorted(set(labels.tolist()))}"
            )
        if truncation is None:
            truncation = np.full(len(z), self.contract.default_truncation, np.float32)
        feeds = {
            Z.name: z,
            CLASS.name: np.ascontiguousarray(labels, dtype=np.int64).reshape(len(z)),
            TRUNCATION.name: np.ascontiguousarray(truncation, dtype=np.float32).reshape(len(z)),
        }
        image, mask = self.session.run([IMAGE.name, MASK.name], feeds)
        return image, mask

    def run_batch(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One batch of request tensors (as `Plan.inputs` makes them) -> (images, masks)."""
        return self.run(inputs[Z.name], inputs[CLASS.name], inputs[TRUNCATION.name])

    def provenance(self) -> list[Provenance]:
        """The training run, as the repository writer recorded it."""
        return _provenance(self.repo, (self.name,))

    def location(self) -> dict:
        """The repository the graph was read from."""
        return {"repository": str(self.repo.resolve())}


def _provenance(repo: Path, names: tuple[str, ...]) -> list[Provenance]:
    return [
        record
        for name in names
        for record in parse_provenance(model_parameters(repo, name).get(PARAM_PROVENANCE))
    ]
