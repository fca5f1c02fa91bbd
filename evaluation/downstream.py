"""Train on synthetic, test on real: the dual-GAN paper's table, and its small-data variant.

Arms, each a fresh segmentation U-Net with the same budget and initial weights:
(a) real training pairs, (b) synthetic pairs, (c) real + synthetic (half of each batch from
each), and, for a dual GAN, the oracle: stage II's images of the real training masks, which
scores stage II with stage I taken out. The threshold of each arm is chosen on the held-out
real validation images; every score is measured on the held-out real test images. The
small-data mode repeats (a) and (c) with the first 5, 10, 20 ... real images of a seeded
shuffle (nested subsets), which is where synthetic data should help if it helps anywhere.

One training run is one draw: a few hundred steps on a small U-Net move F1 by a few hundredths
from seed to seed, as much as the differences under test. So every arm is trained `repeats`
times, repeat r with segmenter seed `seed + r` and, in the small-data mode, the real images
shuffled with seed `seed + r`; scores are reported as mean and sample standard deviation.
Within one repeat every arm starts from the same weights, so an arm's F1 divided by the real
arm's F1 of the same repeat cancels part of that noise.
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
ORACLE_ARM = "oracle"
# The score arms are compared by, as a ratio to the real arm.
HEADLINE = "f1_at_threshold"


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


@dataclass
class ArmResult:
    """One arm trained once per repeat: its data, its scores on the real test set in each
    repeat, its F1 relative to the real arm of the same repeat, and a few predictions of the
    first repeat."""

    arm: str
    real_images: int
    synthetic_images: int
    runs: list[dict[str, float]]
    examples: np.ndarray = field(repr=False)
    f1_ratios: list[float] = field(default_factory=list)

    def mean(self, key: str) -> float:
        """A score's mean over repeats."""
        return spread([run[key] for run in self.runs])[0]

    def std(self, key: str) -> float:
        """A score's sample standard deviation over repeats (0 for one repeat)."""
        return spread([run[key] for run in self.runs])[1]

    def row(self) -> dict[str, object]:
        """For tables and metrics.json: each score's mean (under its own name) and `_std`,
        the F1 ratio to the real arm, and every repeat's values."""
        out: dict[str, object] = {
            "arm": self.arm,
            "real_images": self.real_images,
            "synthetic_images": self.synthetic_images,
            "repeats": len(self.runs),
        }
        for key in self.runs[0]:
            out[key], out[f"{key}_std"] = spread([run[key] for run in self.runs])
        out["f1_ratio_to_real"], out["f1_ratio_to_real_std"] = spread(self.f1_ratios)
        out["per_repeat"] = [
            {**run, "f1_ratio_to_real": ratio}
            for run, ratio in zip(self.runs, self.f1_ratios, strict=True)
        ]
        return out


@dataclass
class DownstreamResult:
    """The full-data arms, the small-data arms, and the first repeat's real-trained U-Net
    (for embeddings)."""

    full: list[ArmResult]
    small_data: list[ArmResult]
    real_model: SegmentationUNet


# How many test predictions to keep per arm for the report's figure.
EXAMPLES = 4


def score_model(
    model: SegmentationUNet, val: PairedData, test: PairedData
) -> tuple[dict[str, float], np.ndarray]:
    """Scores on the test set at the threshold chosen on validation, and the test predictions."""
    threshold = best_threshold(
        predict(model, val.images), val.masks[:, 0].numpy(), val.fov[:, 0].numpy()
    )
    probs = predict(model, test.images)
    scores = score_segmentation(probs, test.masks[:, 0].numpy(), test.fov[:, 0].numpy(), threshold)
    return scores.as_dict(), probs


def _run_arm(
    arm: str,
    reals: list[PairedData | None],
    synthetic: PairedData | None,
    data: EvaluationData,
    budget: SegmenterBudget,
    seed: int,
    progress: bool,
) -> tuple[ArmResult, SegmentationUNet]:
    """Train the arm once per repeat r: on reals[r] (and `synthetic`), segmenter seed seed + r.
    Returns the result and the first repeat's model."""
    runs, first = [], None
    n_real = len(reals[0]) if reals[0] is not None else 0
    n_syn = len(synthetic) if synthetic is not None else 0
    for r, real in enumerate(reals):
        sources = [s for s in (real, synthetic) if s is not None]
        desc = f"U-Net on {arm} ({n_real} real, {n_syn} synthetic)"
        if len(reals) > 1:
            desc += f", repeat {r + 1}/{len(reals)}"
        model = train_segmenter(sources, budget, seed=seed + r, desc=desc, progress=progress)
        scores, probs = score_model(model, data.validation, data.test)
        runs.append(scores)
        if first is None:
            first = model, probs[:EXAMPLES]
    assert first is not None
    return ArmResult(arm, n_real, n_syn, runs, first[1]), first[0]


def _set_ratios(results: list[ArmResult], reference: ArmResult) -> None:
    """Each result's F1 / the reference arm's F1, repeat by repeat."""
    for result in results:
        result.f1_ratios = [
            run[HEADLINE] / ref[HEADLINE] if ref[HEADLINE] else float("nan")
            for run, ref in zip(result.runs, reference.runs, strict=True)
        ]


def check_small_data(sizes: list[int], available: int) -> None:
    """Each small-data size must be positive and below the number of real training images."""
    for n in sizes:
        if not 0 < n < available:
            raise UserInputError(
                f"--small-data {n}: must be between 1 and {available - 1} (there are "
                f"{available} real training images)"
            )


def check_repeats(repeats: int) -> None:
    """At least one training run per arm."""
    if repeats < 1:
        raise UserInputError(f"--repeats must be >= 1, got {repeats}")


def run_downstream(
    data: EvaluationData,
    budget: SegmenterBudget,
    *,
    small_data: list[int],
    seed: int = 0,
    repeats: int = 1,
    progress: bool = True,
) -> DownstreamResult:
    """Train and score every arm `repeats` times; see the module docstring."""
    check_small_data(small_data, len(data.real_train))
    check_repeats(repeats)
    arms: list[tuple[str, PairedData | None, PairedData | None]] = [
        (
            arm,
            data.real_train if "real" in arm else None,
            data.synthetic if "synthetic" in arm else None,
        )
        for arm in ARMS
    ]
    if data.oracle is not None:
        arms.append((ORACLE_ARM, None, data.oracle))
    full = []
    real_model = None
    for arm, real, synthetic in arms:
        result, model = _run_arm(arm, [real] * repeats, synthetic, data, budget, seed, progress)
        full.append(result)
        if arm == "real":
            real_model = model
    assert real_model is not None
    _set_ratios(full, full[0])
    orders = [
        np.random.default_rng(seed + r).permutation(len(data.real_train)) for r in range(repeats)
    ]
    small = []
    for n in sorted(small_data):
        reals: list[PairedData | None] = [subset(data.real_train, order[:n]) for order in orders]
        pair = [
            _run_arm(arm, reals, synthetic, data, budget, seed, progress)[0]
            for arm, synthetic in (("real", None), ("real+synthetic", data.synthetic))
        ]
        _set_ratios(pair, pair[0])
        small += pair
    return DownstreamResult(full, small, real_model)
