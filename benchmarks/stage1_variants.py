"""Stage I variants judged in mask space: diversity, coverage, precision and vessel geometry.

    python benchmarks/stage1_variants.py --real REAL --real-test HELD_OUT \
        --run demo=training/demo_models/stage1 --run diffaug=runs/s1-diffaug [--count 500]

A run may also be a conditional StyleGAN2 (`synthmed train stylegan2`): its first class's
masks are judged, as a StyleGAN2 mask generator.

For each run, the EMA generator (as exported) draws the masks of samples 0..count-1 from the
latents `synthmed generate` uses (seed --seed). Against the real training masks and the
held-out ones, inside the common field of view, it reports what `synthmed evaluate` reports
for stage I (evaluation/mask_diversity.py): mean pairwise IoU within the set and its ratio to
the real masks' (target: at most 1.15), coverage (held-out mask -> nearest synthetic one),
precision (synthetic -> nearest training mask), and the difference of each geometry statistic
from the real masks' (target: within 20 %). These cost seconds. With `--stage2 RUN`, also the
full pipeline's train-synthetic-test-real F1: that stage II renders every mask, and a U-Net is
trained on the pairs `--repeats` times exactly as in benchmarks/stage2_variants.py, beside the
real pairs with the same seeds. Prints a table, writes JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from _machine import header, machine
from _pipeline_models import flops
from _variants import f1, variant_parser

from synthmed.evaluation.distribution import common_fov
from synthmed.evaluation.downstream import spread
from synthmed.evaluation.inputs import split_held_out, stage2_on_masks
from synthmed.evaluation.mask_diversity import mask_diversity
from synthmed.evaluation.mask_statistics import mask_statistics
from synthmed.latents import latents
from synthmed.training.checkpoint import load_generator, read_generator_info
from synthmed.training.data.dataset import PairedData, load_paired_data
from synthmed.training.sample import ConditionalSampler


def gflop_per_mask(run: Path) -> float | None:
    """The stage I generator's GFLOP per mask (None for a conditional StyleGAN2 run)."""
    if read_generator_info(run).role == "cstylegan2":
        return None
    generator, info = load_generator(run, role="stage1")
    return flops(generator, torch.zeros(1, info.model_config.nz)) / 1e9


@torch.no_grad()
def stage1_masks(run: Path, count: int, seed: int) -> np.ndarray:
    """Bool masks [count, S, S] of samples 0..count-1, in batches of 64: a stage I run's, or
    the masks a conditional StyleGAN2 draws for its first class (a StyleGAN2 mask generator)."""
    batches = [range(i, min(i + 64, count)) for i in range(0, count, 64)]
    if read_generator_info(run).role == "cstylegan2":
        sampler = ConditionalSampler(run)
        return np.concatenate([sampler.sample(seed, b, 0)[1] for b in batches]) > 0
    generator, info = load_generator(run, role="stage1")
    nz = info.model_config.nz
    masks = [generator.mask(torch.from_numpy(latents(seed, b, nz))) for b in batches]
    return torch.cat(masks)[:, 0].numpy().astype(bool)


def _pairs(masks: np.ndarray) -> PairedData:
    """Masks [N, S, S] as a PairedData for stage II to render (images filled in by it)."""
    tensor = torch.from_numpy(masks.astype(np.uint8))[:, None]
    names = [f"{i:06d}" for i in range(len(masks))]
    images = torch.zeros(len(masks), 3, *masks.shape[1:], dtype=torch.uint8)
    return PairedData(names, images, tensor, torch.ones_like(tensor), "stage1")


def main() -> None:
    parser = variant_parser(
        __doc__.split("\n\n")[0], "STAGE1", "benchmarks/results/stage1_variants.json"
    )
    parser.add_argument("--count", type=int, default=500, help="Masks drawn per run.")
    parser.add_argument("--stage2", type=Path, help="Stage II run for the full-pipeline F1.")
    args = parser.parse_args()
    print(header())
    real = load_paired_data(args.real, args.size, progress=False)
    held = load_paired_data(args.real_test, args.size, progress=False)
    region = common_fov(real.fov)
    real_masks, held_masks = (d.masks[:, 0].numpy().astype(bool) for d in (real, held))
    real_stats = mask_statistics(real_masks, region)
    seeds = [args.seed + r for r in range(args.repeats)]
    if args.stage2:
        stage2, _ = load_generator(args.stage2, role="stage2")
        val, test = split_held_out(held, 0.2, args.seed)
        real_f1 = [f1([real], val, test, s) for s in seeds]
        print(f"real pairs: F1 {spread(real_f1)[0]:.3f} ± {spread(real_f1)[1]:.3f}")
    rows = {}
    tstr_columns = " | F1 | F1 / real F1" if args.stage2 else ""
    print(
        "| stage I | GFLOP/mask | pairwise IoU (ratio to real) | coverage | precision "
        f"| vessel fraction | branch points | segments | width{tstr_columns} |"
    )
    print("|---" + "|---:" * (10 if args.stage2 else 8) + "|")
    for name, run in args.run:
        masks = stage1_masks(run, args.count, args.seed) & region
        stats = mask_statistics(masks, region)
        summary = mask_diversity(
            masks, real_masks, held_masks, region,
            real_statistics=real_stats, synthetic_statistics=stats, seed=args.seed,
        ).summary()  # fmt: skip
        gflop = gflop_per_mask(run)
        rows[name] = {"run": str(run), "gflop_per_mask": gflop, **summary}
        geometry = summary["geometry_difference_percent"]
        tstr = ""
        if args.stage2:
            # The served pipeline's noise: sample i's latent renders sample i's mask.
            pairs = stage2_on_masks(stage2, _pairs(masks), args.seed, progress=False)
            scores = [f1([pairs], val, test, s) for s in seeds]
            ratios = [a / b for a, b in zip(scores, real_f1, strict=True)]
            rows[name].update(f1=scores, f1_ratio=ratios)
            tstr = " | {:.3f} ± {:.3f} | {:.3f} ± {:.3f}".format(*spread(scores), *spread(ratios))
        print(
            f"| {name} | {'-' if gflop is None else f'{gflop:.3f}'} "
            f"| {summary['pairwise_iou']['synthetic']:.3f} "
            f"({summary['pairwise_iou_ratio']:.2f}) | {summary['coverage']:.3f} "
            f"| {summary['precision']:.3f} | "
            + " | ".join(f"{geometry[k]:+.0f} %" for k in geometry)
            + tstr
            + " |"
        )
    first = next(iter(rows.values()))
    print(
        f"real training masks: pairwise IoU {first['pairwise_iou']['real_train']:.3f}; "
        f"held-out -> training nearest IoU {first['nearest_reference']:.3f} (coverage's reference)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "count": args.count, "seed": args.seed, "runs": rows}
    if args.stage2:
        result.update(stage2=str(args.stage2), real_f1=real_f1)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
