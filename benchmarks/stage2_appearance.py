"""How stage II's photographs differ from the real ones, where the segmenter looks.

    python benchmarks/stage2_appearance.py --real REAL --run demo=training/demo_models/stage2 \
        [--count 200]

benchmarks/renderer_ablations.py shows which properties of a photograph a segmenter learns
from: the vessels' contrast profile (flattening it costs 23 % of F1) and the background
texture (removing it costs 10 %). This measures both on stage II's renders of the real
training masks, beside the real photographs of the same masks (green channel, where vessels
show most):

- vessel contrast, 1 - pixel / local background, by how thick the mask is around the pixel
  (mask pixels among its 3x3 neighbours: thin 1-3, mid 4-6, thick 7-9) and on the one- and
  two-pixel rings outside the mask; mean, spread and 5th / 95th percentiles over pixels;
- background texture: the radially averaged power spectrum of the vessel-free centre of the
  field of view (vessels dilated by 2 px replaced by the patch median, illumination removed
  by a 15 px median filter), summed in three bands of wavelength, as a ratio to the real one;
  and at the patch's highest frequency, a period of 2 px: diagonally (the checkerboard of a
  stride-2 transposed convolution) and along rows and columns.

Prints a table, writes JSON.
"""

from __future__ import annotations

import json

import numpy as np
from _machine import header, machine
from _variants import variant_parser
from scipy.ndimage import binary_dilation, median_filter, uniform_filter

from synthmed.evaluation.inputs import stage2_on_masks
from synthmed.training.checkpoint import load_generator
from synthmed.training.data.dataset import PairedData, load_paired_data

# Texture bands by wavelength in pixels (spectrum radius r on a P-px patch: P / r px).
BANDS = {"coarse (> 8 px)": (1, 4), "mid (4-8 px)": (4, 8), "fine (2-4 px)": (8, 16)}
# Percentiles of each pixel class's contrast: how far the palest and darkest pixels reach.
TAILS = (5, 95)
CHECKERBOARD, NYQUIST = "period 2 px, diagonal (checkerboard)", "period 2 px, rows and columns"


def pixel_classes(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel classes: mask pixels by thickness, and the rings just outside the mask."""
    neighbours = uniform_filter(mask.astype(np.float32), 3) * 9
    one = binary_dilation(mask)
    return {
        "thin": mask & (neighbours < 3.5),
        "mid": mask & (neighbours >= 3.5) & (neighbours < 6.5),
        "thick": mask & (neighbours >= 6.5),
        "ring 1 px": one & ~mask,
        "ring 2 px": binary_dilation(mask, iterations=2) & ~one,
    }


def contrast_profile(data: PairedData) -> dict[str, dict[str, float]]:
    """Mean, std and the TAILS percentiles of the green channel's vessel contrast per pixel
    class: a segmenter learns a vessel's edge from the spread of its pixels, not from their
    mean (docs/quality.md, rows 69-71)."""
    pooled: dict[str, list[np.ndarray]] = {}
    for image, mask, fov in zip(data.images, data.masks, data.fov, strict=True):
        green = image[1].numpy().astype(np.float32)
        mask, fov = mask[0].numpy() > 0, fov[0].numpy() > 0
        background = ~binary_dilation(mask, iterations=2) & fov
        weight = uniform_filter(background.astype(np.float32), 9)
        local = uniform_filter(np.where(background, green, 0), 9) / np.maximum(weight, 1e-3)
        contrast = 1 - green / np.maximum(local, 1)
        for name, where in pixel_classes(mask).items():
            pooled.setdefault(name, []).append(contrast[where & fov & (weight > 0.2)])
    values = {name: np.concatenate(v) for name, v in pooled.items()}
    return {
        name: {
            "mean": float(v.mean()),
            "std": float(v.std()),
            **{f"p{q}": float(np.percentile(v, q)) for q in TAILS},
        }
        for name, v in values.items()
    }


def texture_power(data: PairedData) -> dict[str, float]:
    """Mean background power per band, and at a period of 2 px, over the images (green
    channel, centre patch)."""
    size = data.images.shape[-1]
    lo, hi = size // 4, size - size // 4
    patch = hi - lo
    yy, xx = np.indices((patch, patch))
    radius = np.hypot(yy - patch // 2, xx - patch // 2).astype(int)
    totals = dict.fromkeys([*BANDS, CHECKERBOARD, NYQUIST], 0.0)
    for image, mask in zip(data.images, data.masks, strict=True):
        green = image[1].numpy().astype(np.float32)[lo:hi, lo:hi] / 255
        keep = ~binary_dilation(mask[0].numpy() > 0, iterations=2)[lo:hi, lo:hi]
        if keep.sum() < patch:
            continue
        flat = np.where(keep, green, np.median(green[keep]))
        flat = flat - median_filter(flat, 15)
        power = np.abs(np.fft.fftshift(np.fft.fft2(flat))) ** 2
        for name, (r0, r1) in BANDS.items():
            ring = (radius >= r0 * patch / 32) & (radius < r1 * patch / 32)
            totals[name] += float(power[ring].mean())
        # After fftshift, row and column 0 hold the frequency of period 2 px.
        totals[CHECKERBOARD] += float(power[0, 0])
        totals[NYQUIST] += float((power[0, 1:].mean() + power[1:, 0].mean()) / 2)
    return {name: total / len(data) for name, total in totals.items()}


def _contrast_cell(stats: dict[str, float]) -> str:
    """mean ± std (5th / 95th percentile)."""
    tails = " / ".join(f"{stats[f'p{q}']:.3f}" for q in TAILS)
    return f"{stats['mean']:.3f} ± {stats['std']:.3f} ({tails})"


def main() -> None:
    parser = variant_parser(
        __doc__.split("\n\n")[0],
        "STAGE2",
        "benchmarks/results/stage2_appearance.json",
        held_out=False,
    )
    parser.add_argument("--count", type=int, default=200, help="Training pairs compared.")
    args = parser.parse_args()
    print(header())
    real = load_paired_data(args.real, args.size, progress=False)
    n = args.count
    real = PairedData(real.names[:n], real.images[:n], real.masks[:n], real.fov[:n], "real")
    sets = {"real": real}
    for name, run in args.run:
        stage2, _ = load_generator(run, role="stage2")
        sets[name] = stage2_on_masks(stage2, real, args.seed, progress=False)
    result = {name: {"contrast": contrast_profile(d), "texture": texture_power(d)}
              for name, d in sets.items()}  # fmt: skip
    names = list(sets)
    tails = " / ".join(f"{q}th" for q in TAILS)
    print(f"\n| green-channel vessel contrast: mean ± std ({tails} percentile) | "
          + " | ".join(names) + " |")  # fmt: skip
    print("|---" + "|---:" * len(names) + "|")
    for cls in result["real"]["contrast"]:
        cells = [result[n]["contrast"][cls] for n in names]
        print(f"| {cls} | " + " | ".join(_contrast_cell(c) for c in cells) + " |")
    print("\n| background texture power, ratio to real | " + " | ".join(names[1:]) + " |")
    print("|---" + "|---:" * (len(names) - 1) + "|")
    for band, real_power in result["real"]["texture"].items():
        ratios = [result[n]["texture"][band] / real_power for n in names[1:]]
        print(f"| {band} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "count": args.count, **result}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
