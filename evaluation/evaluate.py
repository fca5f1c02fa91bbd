"""`synthmed evaluate` from top to bottom: load, measure, then write the report atomically.

The measurements, in the order the report shows them:
1. downstream segmentation (downstream.py): real vs synthetic vs both vs the oracle (stage II
   on the real masks), and small-data, each trained `repeats` times;
2. distribution distances: intensity KL (distribution.py), stage I mask statistics
   (mask_statistics.py) and mask diversity, coverage and precision (mask_diversity.py),
   FID/KID when a local Inception ONNX file is given (fid.py);
3. the privacy audit (privacy.py).
Every set is compared with the same yardstick: held-out real images, measured the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed import __version__
from synthmed.atomic import staged_folder
from synthmed.errors import UserInputError
from synthmed.evaluation.distribution import common_fov, intensity_histograms, intensity_kl
from synthmed.evaluation.downstream import DownstreamResult, check_repeats, run_downstream
from synthmed.evaluation.inputs import (
    DUAL,
    FOLDER,
    HELD_OUT,
    ORACLE,
    REAL_TRAIN,
    SINGLE,
    EvaluationData,
    load_evaluation_data,
)
from synthmed.evaluation.mask_diversity import MaskDiversity, mask_diversity
from synthmed.evaluation.mask_statistics import MaskStatistics, mask_statistics
from synthmed.evaluation.privacy import (
    DEFAULT_COPY_FACTOR,
    PrivacyAudit,
    audit_space,
    pixel_vectors,
)
from synthmed.training.segmenter import SegmenterBudget, embed

# The set labels live beside the data (inputs.py) and are re-exported here with the rest.
__all__ = [
    "DUAL",
    "FOLDER",
    "HELD_OUT",
    "ORACLE",
    "REAL_TRAIN",
    "SINGLE",
    "EvaluateOptions",
    "Evaluation",
    "check_options",
    "compared_sets",
    "prepare_output",
    "run_evaluation",
    "write_evaluation",
]


@dataclass(frozen=True)
class EvaluateOptions:
    """Everything `synthmed evaluate` takes; see its --help for each option's meaning.

    The synthetic set: `synthetic`, else class `label` of `cstylegan2`, else the dual GAN
    `stage1` + `stage2` (None: the bundled demo models); `oracle` adds stage II on the real
    masks for a dual GAN. Every segmenter arm is trained `repeats` times.
    """

    real: Path
    real_test: Path | None = None
    synthetic: Path | None = None
    stage1: Path | None = None
    stage2: Path | None = None
    cstylegan2: Path | None = None
    label: str | None = None
    truncation: float | None = None
    count: int = 500
    single: Path | None = None
    size: int | None = None
    validation_fraction: float = 0.2
    seed: int = 0
    repeats: int = 1
    oracle: bool = True
    budget: SegmenterBudget = field(default_factory=SegmenterBudget)
    small_data: tuple[int, ...] = ()
    inception: Path | None = None
    fid: bool = False
    copy_factor: float = DEFAULT_COPY_FACTOR


@dataclass
class Evaluation:
    """All measurements of one run, before they are written."""

    options: EvaluateOptions
    data: EvaluationData
    region: np.ndarray
    kl: dict[str, dict[str, float]]
    histograms: dict[str, np.ndarray]
    masks: dict[str, MaskStatistics]
    diversity: MaskDiversity
    downstream: DownstreamResult
    privacy: dict[str, PrivacyAudit]
    fid: dict[str, dict[str, float]] | None

    def metrics(self) -> dict[str, Any]:
        """Everything measured, as JSON-ready data (metrics.json)."""
        d, o = self.data, self.options
        return {
            "synthmed_version": __version__,
            "size": d.size,
            "seed": o.seed,
            "repeats": o.repeats,
            "inputs": {
                "real_train": {"path": str(o.real), "images": len(d.real_train)},
                "validation": {"images": len(d.validation)},
                "test": {"path": str(o.real_test or o.real), "images": len(d.test)},
                "synthetic": {
                    "label": d.synthetic_label,
                    "source": d.synthetic_source,
                    "images": len(d.synthetic),
                },
                "cstylegan2": d.conditional.as_dict() if d.conditional is not None else None,
                "oracle": _oracle_inputs(d),
                "single_gan": d.single_source,
                "common_fov_pixels": int(self.region.sum()),
            },
            "segmenter_budget": o.budget.as_dict(),
            "downstream": [r.row() for r in self.downstream.full],
            "small_data": [r.row() for r in self.downstream.small_data],
            "intensity_kl": self.kl,
            "mask_statistics": {k: v.summary() for k, v in self.masks.items()},
            "mask_diversity": self.diversity.summary(),
            "fid": self.fid,
            "privacy": {
                label: {
                    **audit.summary(),
                    "flagged_samples": audit.flagged_rows(d.real_train.names),
                }
                for label, audit in self.privacy.items()
            },
        }


def _oracle_inputs(data: EvaluationData) -> dict[str, object]:
    """The oracle set in metrics.json: what made it, or why there is none."""
    if data.oracle is None:
        return {"label": ORACLE, "images": 0, "absent": data.oracle_note}
    return {"label": ORACLE, "images": len(data.oracle), "source": data.oracle_note}


def compared_sets(data: EvaluationData) -> dict[str, torch.Tensor]:
    """The image sets measured against the real training images, by label: held-out real
    (the floor), the synthetic set (dual GAN or conditional class), the oracle set (stage II
    on the real training masks) and the single-GAN baseline's, when there are."""
    sets = {
        HELD_OUT: torch.cat([data.validation.images, data.test.images]),
        data.synthetic_label: data.synthetic.images,
    }
    if data.oracle is not None:
        sets[ORACLE] = data.oracle.images
    if data.single is not None:
        sets[SINGLE] = data.single
    return sets


def _feature_distances(options: EvaluateOptions, data: EvaluationData) -> dict | None:
    """FID and KID of each set against the real training images, if asked for."""
    if options.inception is None:
        return None
    from synthmed.evaluation.fid import (
        FeatureExtractor,
        frechet_distance,
        kernel_inception_distance,
    )

    extractor = FeatureExtractor(options.inception)

    def features(images: torch.Tensor) -> np.ndarray:
        return extractor(images.permute(0, 2, 3, 1).numpy())

    reference = features(data.real_train.images)
    out = {}
    for label, images in compared_sets(data).items():
        feats = features(images)
        kid_mean, kid_std = kernel_inception_distance(reference, feats)
        out[label] = {
            "fid": frechet_distance(reference, feats),
            "kid_mean": kid_mean,
            "kid_std": kid_std,
        }
    return out


def _check_generator_options(options: EvaluateOptions) -> None:
    """One source of synthetic data: a folder, a dual GAN, or one class of a cStyleGAN2."""
    if options.cstylegan2 is None:
        for name in ("label", "truncation"):
            if getattr(options, name) is not None:
                raise UserInputError(f"--{name} needs --cstylegan2 RUN (a conditional StyleGAN2)")
        return
    for name in ("synthetic", "stage1", "stage2"):
        if getattr(options, name) is not None:
            raise UserInputError(
                f"--cstylegan2 and --{name} both name the synthetic data; give one of them"
            )
    if options.truncation is not None and not np.isfinite(options.truncation):
        raise UserInputError(f"--truncation must be a finite number, got {options.truncation}")


def check_options(options: EvaluateOptions) -> None:
    """Refuse inconsistent options before any slow work starts."""
    _check_generator_options(options)
    if options.fid and options.inception is None:
        raise UserInputError(
            "--fid needs --inception FILE, a local ONNX Inception feature extractor; "
            "synthmed never downloads weights (see docs/evaluation.md)"
        )
    if options.inception is not None and not Path(options.inception).is_file():
        raise UserInputError(f"--inception {options.inception}: file does not exist")
    if options.copy_factor <= 0:
        raise UserInputError(f"--copy-factor must be > 0, got {options.copy_factor}")
    check_repeats(options.repeats)


def _mask_measures(
    data: EvaluationData, region: np.ndarray, seed: int
) -> tuple[dict[str, MaskStatistics], MaskDiversity]:
    """Stage I's masks against the real ones: statistics per set, then diversity, coverage
    and precision. The oracle's masks are the real training masks, so it has no row here."""
    real_train = data.real_train.masks[:, 0].numpy()
    synthetic = data.synthetic.masks[:, 0].numpy()
    held_out = torch.cat([data.validation.masks, data.test.masks])[:, 0].numpy()
    masks = {
        REAL_TRAIN: mask_statistics(real_train, region),
        data.synthetic_label: mask_statistics(synthetic, region),
    }
    diversity = mask_diversity(
        synthetic,
        real_train,
        held_out,
        region,
        real_statistics=masks[REAL_TRAIN],
        synthetic_statistics=masks[data.synthetic_label],
        seed=seed,
    )
    return masks, diversity


def run_evaluation(options: EvaluateOptions, *, progress: bool = True) -> Evaluation:
    """Load every input and take every measurement (the slow part)."""
    check_options(options)
    data = load_evaluation_data(
        real=options.real,
        real_test=options.real_test,
        synthetic=options.synthetic,
        stage1=options.stage1,
        stage2=options.stage2,
        count=options.count,
        single=options.single,
        size=options.size,
        validation_fraction=options.validation_fraction,
        seed=options.seed,
        cstylegan2=options.cstylegan2,
        label=options.label,
        truncation=options.truncation,
        oracle=options.oracle,
        progress=progress,
    )
    options.budget.check(data.size)
    region = common_fov(data.real_train.fov)
    sets = compared_sets(data)
    held_out = sets[HELD_OUT]
    kl = {
        label: intensity_kl(data.real_train.images, images, region)
        for label, images in sets.items()
    }
    histograms = {REAL_TRAIN: intensity_histograms(data.real_train.images, region)}
    histograms |= {label: intensity_histograms(images, region) for label, images in sets.items()}
    masks, diversity = _mask_measures(data, region, options.seed)
    downstream = run_downstream(
        data,
        options.budget,
        small_data=list(options.small_data),
        seed=options.seed,
        repeats=options.repeats,
        progress=progress,
    )
    model = downstream.real_model
    train_pixels, train_features = (
        pixel_vectors(data.real_train.images),
        embed(model, data.real_train.images),
    )
    held_pixels, held_features = pixel_vectors(held_out), embed(model, held_out)
    privacy = {}
    for label, images in sets.items():
        if label == HELD_OUT:
            continue
        privacy[label] = PrivacyAudit(
            audit_space(pixel_vectors(images), held_pixels, train_pixels, options.copy_factor),
            audit_space(embed(model, images), held_features, train_features, options.copy_factor),
            options.copy_factor,
        )
    fid = _feature_distances(options, data)
    return Evaluation(
        options, data, region, kl, histograms, masks, diversity, downstream, privacy, fid
    )


def prepare_output(out: Path, force: bool) -> None:
    """Refuse to overwrite a non-empty folder (or a file) unless `force`."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserInputError(f"--out {out}: folder is not empty; pass --force to replace it")


def write_evaluation(evaluation: Evaluation, out: Path, command: str = "") -> Path:
    """Write report.md, report.html, metrics.json and figures, replacing `out` at once."""
    from synthmed.evaluation.report import write_report

    out = Path(out)
    with staged_folder(out) as staging:
        metrics = {**evaluation.metrics(), "command": command}
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_report(evaluation, staging, command)
    return out
