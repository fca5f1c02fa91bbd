"""Train on synthetic, test on real: the dual-GAN paper's table, and its small-data variant.

Arms, each a fresh segmentation U-Net with the same budget and initial weights:
(a) real training pairs, (b) synthetic pairs, (c) real + synthetic (half of each batch from
each). The threshold of each arm is chosen on the held-out real validation images; every
score is measured on the held-out real test images. The small-data mode repeats (a) and (c)
with the first 5, 10, 20 ... real images of one seeded shuffle (nested subsets), which is where
synthetic data should help if it helps anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synthmed.errors import UserInputError
from synthmed.evaluation.inputs import EvaluationData, subset
from synthmed.evaluation.segmentation_metrics import best_threshold, score_segmentation
from synthmed.training.data.dataset import PairedData
from synthmed.training.models.segmentation import SegmentationUNet
from synthmed.training.segmenter import SegmenterBudget, predict, train_segmenter

ARMS = ("real", "synthetic", "real+synthetic")


@dataclass
class ArmResult:
    """One trained arm: its data, its scores on the real test set, a few predictions."""

    arm: str
    real_images: int
    synthetic_images: int
    scores: dict[str, float]
    examples: np.ndarray = field(repr=False)

    def row(self) -> dict[str, object]:
        """For tables and metrics.json."""
        return {
            "arm": self.arm,
            "real_images": self.real_images,
            "synthetic_images": self.synthetic_images,
            **self.scores,
        }


@dataclass
class DownstreamResult:
    """The full-data arms, the small-data arms, and the real-trained U-Net (for embeddings)."""

    full: list[ArmResult]
    small_data: list[ArmResult]
    real_model: SegmentationUNet


# How many test predictions to keep per arm for the report's figure.
EXAMPLES = 4


def _run_arm(
    arm: str,
    real: PairedData | None,
    synthetic: PairedData | None,
    data: EvaluationData,
    budget: SegmenterBudget,
    seed: int,
    progress: bool,
) -> tuple[ArmResult, SegmentationUNet]:
    sources = [s for s in (real, synthetic) if s is not None]
    n_real = len(real) if real is not None else 0
    n_syn = len(synthetic) if synthetic is not None else 0
    desc = f"U-Net on {arm} ({n_real} real, {n_syn} synthetic)"
    model = train_segmenter(sources, budget, seed=seed, desc=desc, progress=progress)
    val = data.validation
    threshold = best_threshold(
        predict(model, val.images), val.masks[:, 0].numpy(), val.fov[:, 0].numpy()
    )
    test = data.test
    probs = predict(model, test.images)
    scores = score_segmentation(probs, test.masks[:, 0].numpy(), test.fov[:, 0].numpy(), threshold)
    return ArmResult(arm, n_real, n_syn, scores.as_dict(), probs[:EXAMPLES]), model


def check_small_data(sizes: list[int], available: int) -> None:
    """Each small-data size must be positive and below the number of real training images."""
    for n in sizes:
        if not 0 < n < available:
            raise UserInputError(
                f"--small-data {n}: must be between 1 and {available - 1} (there are "
                f"{available} real training images)"
            )


def run_downstream(
    data: EvaluationData,
    budget: SegmenterBudget,
    *,
    small_data: list[int],
    seed: int = 0,
    progress: bool = True,
) -> DownstreamResult:
    """Train and score every arm; see the module docstring."""
    check_small_data(small_data, len(data.real_train))
    full = []
    real_model = None
    for arm in ARMS:
        real = data.real_train if "real" in arm else None
        synthetic = data.synthetic if "synthetic" in arm else None
        result, model = _run_arm(arm, real, synthetic, data, budget, seed, progress)
        full.append(result)
        if arm == "real":
            real_model = model
    assert real_model is not None
    order = np.random.default_rng(seed).permutation(len(data.real_train))
    small = []
    for n in sorted(small_data):
        real = subset(data.real_train, order[:n])
        for arm, synthetic in (("real", None), ("real+synthetic", data.synthetic)):
            small.append(_run_arm(arm, real, synthetic, data, budget, seed, progress)[0])
    return DownstreamResult(full, small, real_model)
