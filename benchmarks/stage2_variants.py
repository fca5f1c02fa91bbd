"""Stage II variants judged by the oracle arm: how well a segmenter learns from stage II's
images of the real training masks, with stage I taken out.

    python benchmarks/stage2_variants.py --real REAL --real-test HELD_OUT \
        --run demo=training/demo_models/stage2 --run seg10=runs/seg10 [--repeats 3]

For each run: stage II (EMA generator, eval mode, as exported) renders every real training
mask; a segmentation U-Net is trained on those pairs with `synthmed evaluate`'s budget and
split, `--repeats` times (segmenter seeds 0, 1, ...), and scored on the held-out real test
images. The real arm (the real pairs themselves) is trained with the same seeds, so each
repeat's F1 ratio cancels part of the seed noise. Also the intensity KL to the real training
images and the share of renders darker or brighter than all of them (held-out real: the
floors). Prints a table, writes JSON.
"""

from __future__ import annotations

import json

import torch
from _machine import header, machine
from _pipeline_models import flops
from _variants import f1, oracle_scores, variant_parser

from synthmed.evaluation.distribution import brightness_outliers, common_fov, intensity_kl
from synthmed.evaluation.downstream import spread
from synthmed.evaluation.inputs import split_held_out, stage2_on_masks
from synthmed.training.checkpoint import load_generator
from synthmed.training.data.dataset import load_paired_data


def main() -> None:
    parser = variant_parser(
        __doc__.split("\n\n")[0], "STAGE2", "benchmarks/results/stage2_variants.json"
    )
    args = parser.parse_args()
    print(header())
    size = args.size
    real = load_paired_data(args.real, size, progress=False)
    held = load_paired_data(args.real_test, size, progress=False)
    val, test = split_held_out(held, 0.2, args.seed)
    region = common_fov(real.fov)
    seeds = [args.seed + r for r in range(args.repeats)]
    real_f1 = [f1([real], val, test, s) for s in seeds]
    held_images = torch.cat([val.images, test.images])
    floor = {
        "kl": intensity_kl(real.images, held_images, region)["mean"],
        "outliers": brightness_outliers(real.images, held_images, region),
    }
    rows = [{"variant": "real", "f1": real_f1, "ratio": [1.0] * len(seeds), **floor, "gflop": None}]
    for name, path in args.run:
        stage2, _ = load_generator(path, role="stage2")
        pairs = stage2_on_masks(stage2, real, args.seed, progress=False)
        example = torch.zeros(1, 1, size, size), torch.zeros(1, stage2.config.nz)
        gflop = flops(stage2, *example) / 1e9  # per image, as served
        scores = oracle_scores(pairs, real, (val, test), seeds, real_f1, region)
        rows.append({"variant": name, "run": str(path), **scores, "gflop": gflop})
    print(
        f"\nsize {size}, {len(real)} real training pairs, {args.repeats} repeats; "
        "real row: KL of the held-out real images (the floor)\n"
    )
    print(
        "| variant | GFLOP/image | oracle F1 | F1 / real F1 | intensity KL | brightness outliers |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        (m, s), (rm, rs) = spread(row["f1"]), spread(row["ratio"])
        gflop = "-" if row["gflop"] is None else f"{row['gflop']:.3f}"
        print(
            f"| {row['variant']} | {gflop} | {m:.3f} ± {s:.3f} | {rm:.3f} ± {rs:.3f} "
            f"| {row['kl']:.4f} | {row['outliers']:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "size": size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
