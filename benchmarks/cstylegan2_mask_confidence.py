"""The conditional StyleGAN2's masks binarised with stage I's hysteresis: a candidate, measured
before it enters the exported graph.

    python benchmarks/cstylegan2_mask_confidence.py --run RUN --real REAL --real-test HELD_OUT \
        [--label retina] [--confidence 0 0.1 0.2 0.3] [--count 500] [--seed 0] --out DIR

The generator's mask channel is exported as output > 0. Trained with `--binary-fakes` it
draws its vessels and, beside them, specks whose outputs barely cross 0 (segments +600 % in
docs/quality.md), as stage I's DCGAN did before its masks were binarised with hysteresis
(training/mask_confidence.py). For each confidence c this writes samples 0..count-1 of class
--label (seed --seed: the latents `synthmed evaluate --cstylegan2` draws) to DIR/c<c>/, images
unchanged and each mask binarised as stage I's are (`conditional_to_uint8(output, c)`: a
vessel piece is kept where tanh of the mask channel exceeds c somewhere along it; c = 0 is the
exported mask), and
prints the masks' diversity, coverage, precision and geometry against the real masks. Score a
folder with `synthmed evaluate --synthetic DIR/c0.2 --real REAL --real-test HELD_OUT
--no-oracle --repeats 3`. Writes DIR/mask_confidence.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _machine import header, machine
from PIL import Image

from synthmed.evaluation.distribution import common_fov
from synthmed.evaluation.mask_diversity import mask_diversity
from synthmed.evaluation.mask_statistics import count_pieces, mask_statistics
from synthmed.latents import latents
from synthmed.training.data.dataset import load_paired_data
from synthmed.training.pixels import conditional_to_uint8
from synthmed.training.sample import ConditionalSampler

BATCH = 64


def write_samples(
    sampler: ConditionalSampler, label: str, confidence: float, count: int, seed: int, out: Path
) -> np.ndarray:
    """Samples 0..count-1 written to out/images and out/masks; returns the bool masks."""
    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    masks = []
    for start in range(0, count, BATCH):
        indices = range(start, min(start + BATCH, count))
        output = sampler.outputs(latents(seed, indices, sampler.z_dim), label)
        images, vessels = conditional_to_uint8(output, confidence)
        for i, pixels, vessel in zip(indices, images.numpy(), vessels.numpy(), strict=True):
            Image.fromarray(pixels).save(out / "images" / f"{i:06d}.png")
            Image.fromarray(vessel).save(out / "masks" / f"{i:06d}.png")
            masks.append(vessel > 0)
    return np.stack(masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="Conditional StyleGAN2 run.")
    parser.add_argument("--label", default="0", help="Class name or index.")
    parser.add_argument("--real", type=Path, required=True, help="That class's training pairs.")
    parser.add_argument("--real-test", type=Path, required=True, help="Held-out pairs.")
    parser.add_argument("--confidence", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(header())
    sampler = ConditionalSampler(args.run)
    size = sampler.info.model_config.size
    real = load_paired_data(args.real, size)
    held = load_paired_data(args.real_test, size)
    region = common_fov(real.fov)
    real_masks, held_masks = (d.masks[:, 0].numpy().astype(bool) for d in (real, held))
    real_stats = mask_statistics(real_masks, region)
    real_pieces = float(np.mean([count_pieces(m & region) for m in real_masks]))
    print(f"real training masks: {real_pieces:.2f} pieces per mask")
    print(
        "| confidence | pieces/mask | pairwise IoU / real | coverage | precision "
        "| vessel fraction | branch points | segments | width |"
    )
    print("|---:" * 9 + "|")
    rows = {}
    with torch.inference_mode():
        for confidence in args.confidence:
            folder = args.out / f"c{confidence:g}"
            masks = write_samples(
                sampler, args.label, confidence, args.count, args.seed, folder
            ) & region  # fmt: skip
            stats = mask_statistics(masks, region)
            summary = mask_diversity(
                masks, real_masks, held_masks, region,
                real_statistics=real_stats, synthetic_statistics=stats, seed=args.seed,
            ).summary()  # fmt: skip
            pieces = float(np.mean([count_pieces(m) for m in masks]))
            rows[f"{confidence:g}"] = {"folder": str(folder), "pieces_per_mask": pieces, **summary}
            geometry = summary["geometry_difference_percent"]
            print(
                f"| {confidence:g} | {pieces:.2f} | {summary['pairwise_iou_ratio']:.2f} "
                f"| {summary['coverage']:.3f} | {summary['precision']:.3f} | "
                + " | ".join(f"{geometry[k]:+.0f} %" for k in geometry)
                + " |"
            )
    result = {
        "machine": machine(),
        "run": str(args.run),
        "label": args.label,
        "count": args.count,
        "seed": args.seed,
        "real_pieces_per_mask": real_pieces,
        "confidences": rows,
    }
    (args.out / "mask_confidence.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'mask_confidence.json'}")


if __name__ == "__main__":
    main()
