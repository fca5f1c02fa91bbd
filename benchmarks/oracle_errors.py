"""Where a segmenter trained on stage II's images misses what one trained on real ones finds.

    python benchmarks/oracle_errors.py --real REAL --real-test HELD_OUT \
        --run demo=training/demo_models/stage2 [--repeats 3]

The oracle arm of stage2_variants.py gives one number; this breaks it down. For the real
pairs and for each stage II run's renders of the real training masks, a U-Net is trained with
`synthmed evaluate`'s budget (segmenter seeds 0, 1, ...) and thresholded on the validation
images, then its test predictions are counted by where the pixel is:

- recall on vessel pixels by how thick the mask is around them (stage2_appearance.py's
  classes: thin, mid, thick) and by distance to the optic disc (within a sixth of the side of
  the brightest 5x5 patch, where the thick trunks leave it, or away from it);
- false positives per test image on the one- and two-pixel rings outside the mask and
  farther out;
- the chosen threshold (a segmenter unsure on real photographs picks a low one).

Prints a table (mean ± std over repeats), writes JSON.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from _machine import header, machine
from _variants import variant_parser
from scipy.ndimage import uniform_filter
from stage2_appearance import pixel_classes

from synthmed.evaluation.downstream import score_model, spread
from synthmed.evaluation.inputs import split_held_out, stage2_on_masks
from synthmed.training.checkpoint import load_generator
from synthmed.training.data.dataset import PairedData, load_paired_data
from synthmed.training.segmenter import SegmenterBudget, train_segmenter


def near_disc(images: torch.Tensor) -> np.ndarray:
    """Bool [N, S, S]: within S/6 of each image's brightest 5x5 patch (the optic disc)."""
    size = images.shape[-1]
    yy, xx = np.indices((size, size))
    out = np.zeros((len(images), size, size), bool)
    for i, image in enumerate(images):
        brightness = uniform_filter(image.float().mean(0).numpy(), 5)
        cy, cx = np.unravel_index(brightness.argmax(), brightness.shape)
        out[i] = np.hypot(yy - cy, xx - cx) <= size / 6
    return out


def error_counts(
    sources: list[PairedData], val: PairedData, test: PairedData, seed: int
) -> dict[str, float]:
    """One segmenter's threshold, precision, recall by pixel class and false positives."""
    model = train_segmenter(sources, SegmenterBudget(), seed=seed, progress=False)
    scores, probs = score_model(model, val, test)
    threshold = scores["threshold"]
    found = probs > threshold
    truth, fov = test.masks[:, 0].numpy() > 0, test.fov[:, 0].numpy() > 0
    classes = [pixel_classes(mask) for mask in truth]
    disc = near_disc(test.images)
    vessel = truth & fov

    def recall(where: np.ndarray) -> float:
        return float((found & where).sum() / max(where.sum(), 1))

    out = {
        "threshold": float(threshold),
        "precision": float((found & vessel).sum() / max((found & fov).sum(), 1)),
        "recall": recall(vessel),
    }
    for name in ("thin", "mid", "thick"):
        out[f"recall {name}"] = recall(np.stack([c[name] for c in classes]) & fov)
    out["recall near disc"] = recall(vessel & disc)
    out["recall away from disc"] = recall(vessel & ~disc)
    rings = np.stack([c["ring 1 px"] | c["ring 2 px"] for c in classes])
    out["FP/image on 1-2 px rings"] = float((found & rings & fov).sum() / len(test))
    out["FP/image farther out"] = float((found & ~truth & ~rings & fov).sum() / len(test))
    return out


def main() -> None:
    parser = variant_parser(
        __doc__.split("\n\n")[0], "STAGE2", "benchmarks/results/oracle_errors.json"
    )
    args = parser.parse_args()
    print(header())
    real = load_paired_data(args.real, args.size, progress=False)
    held = load_paired_data(args.real_test, args.size, progress=False)
    val, test = split_held_out(held, 0.2, args.seed)
    arms = {"real": real}
    for name, path in args.run:
        stage2, _ = load_generator(path, role="stage2")
        arms[name] = stage2_on_masks(stage2, real, args.seed, progress=False)
    seeds = [args.seed + r for r in range(args.repeats)]
    result = {
        name: [error_counts([data], val, test, seed) for seed in seeds]
        for name, data in arms.items()
    }
    names = list(arms)
    print(f"\nsize {args.size}, {args.repeats} repeats, {len(test)} test images\n")
    print("| segmenter trained on | " + " | ".join(names) + " |")
    print("|---" + "|---:" * len(names) + "|")
    for key in result["real"][0]:
        cells = [spread([run[key] for run in result[n]]) for n in names]
        digits = 1 if key.startswith("FP") else 3
        row = " | ".join(f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in cells)
        print(f"| {key} | {row} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "size": args.size, "arms": result}
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
