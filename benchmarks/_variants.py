"""What the variant benchmarks (stage1_variants.py, stage2_variants.py) share: the command
line that names the runs and the real data, and the segmenter arm they score a set by."""

from __future__ import annotations

import argparse
from pathlib import Path

from synthmed.evaluation.distribution import brightness_outliers, intensity_kl
from synthmed.evaluation.downstream import score_model
from synthmed.training.data.dataset import PairedData
from synthmed.training.segmenter import SegmenterBudget, train_segmenter


def f1(sources: list[PairedData], val: PairedData, test: PairedData, seed: int) -> float:
    """F1 on the test images at the threshold chosen on the validation images, for a U-Net
    trained on `sources` with `synthmed evaluate`'s budget and segmenter seed `seed`."""
    model = train_segmenter(sources, SegmenterBudget(), seed=seed, progress=False)
    return score_model(model, val, test)[0]["f1_at_threshold"]


def oracle_scores(
    pairs: PairedData,
    real: PairedData,
    split: tuple[PairedData, PairedData],
    seeds: list[int],
    real_f1: list[float],
    region: object,
) -> dict:
    """A stage II's renders of the real training masks judged as the oracle arm: F1 per
    segmenter seed, its ratio to the real arm's F1 of the same seed, the intensity KL to the
    real training images inside `region` (the common field of view), and the share of renders
    darker or brighter than every real image."""
    val, test = split
    scores = [f1([pairs], val, test, s) for s in seeds]
    return {
        "f1": scores,
        "ratio": [a / b for a, b in zip(scores, real_f1, strict=True)],
        "kl": intensity_kl(real.images, pairs.images, region)["mean"],
        "outliers": brightness_outliers(real.images, pairs.images, region),
    }


def _named_run(text: str) -> tuple[str, Path]:
    """--run NAME=RUN."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=RUN_FOLDER, got {text!r}")
    return name, Path(path)


def variant_parser(
    description: str, role: str, out: str, *, held_out: bool = True
) -> argparse.ArgumentParser:
    """--real, --real-test (with `held_out`), one --run NAME=RUN per `role` run, --size,
    --seed, --repeats and --out (default `out`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--real", type=Path, required=True, help="The real training pairs.")
    if held_out:
        parser.add_argument("--real-test", type=Path, required=True, help="Held-out real pairs.")
    parser.add_argument(
        "--run", action="append", required=True, type=_named_run, help=f"NAME={role}_RUN"
    )
    parser.add_argument("--size", type=int, default=64, help="The runs' image size.")
    parser.add_argument("--repeats", type=int, default=3, help="Segmenter seeds per arm.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(out))
    return parser
