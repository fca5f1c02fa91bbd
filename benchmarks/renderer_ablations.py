"""What in a real photograph does the segmenter learn from? Ablations of the phantom renderer.

    python benchmarks/renderer_ablations.py --real-test HELD_OUT [--count 500] [--repeats 3]

Stage II's oracle arm asks how well a segmenter learns from stage II's images of the real
masks. This benchmark asks the question from the other side: the training phantoms (seed
--seed, the demo's) are rendered again with one property of the photograph removed, every
mask unchanged, and a U-Net is trained on each version with `synthmed evaluate`'s budget and
tested on the held-out real phantoms. A property whose removal costs F1 is one a stage II
must reproduce; one whose removal costs nothing is not where stage II's gap can be.

    real         the phantoms as they are
    near-mask    vessel contrast only within 1 px of the mask (no faint vessels beyond it)
    one-darkness every vessel as dark as the mean (no artery/vein difference)
    no-choroid   no choroidal ridge pattern in the background
    no-texture   no background texture at all (no choroid, mottle or blotches)
    flat-vessels vessel contrast 0.85 on mask pixels, 0 elsewhere: no width-dependent
                 contrast, no anti-aliased edges (what a map of the binary mask alone draws
                 at its simplest)
    no-sensor-noise  no per-pixel sensor noise (still quantised to 8 bits)
    no-blur      no optical blur before the sensor noise

The renderer's private drawing functions are replaced in this process only; the random draws
are kept, so each phantom keeps its layout, its mask and everything not ablated.
Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _machine import header, machine
from _variants import f1
from scipy.ndimage import binary_dilation

import synthmed.training.data.phantom as phantom
from synthmed.evaluation.downstream import spread
from synthmed.evaluation.inputs import split_held_out
from synthmed.training.data.dataset import load_paired_data

_draw_vessels, _smooth_noise, _finish = (
    phantom._draw_vessels,
    phantom._smooth_noise,
    phantom._finish,
)
# _fundus_shading's calls to _smooth_noise, by their `cells` argument at size S: blotches 5,
# choroidal ridges 18, mottle max(4, S // 6).
_CHOROID = 18


def _near_mask(segments: list, size: int) -> tuple[np.ndarray, np.ndarray]:
    coverage, contrast = _draw_vessels(segments, size)
    return coverage, contrast * binary_dilation(coverage >= 0.5, iterations=1)


def _one_darkness(segments: list, size: int) -> tuple[np.ndarray, np.ndarray]:
    return _draw_vessels([(*s[:5], 0.85) for s in segments], size)


def _flat_vessels(segments: list, size: int) -> tuple[np.ndarray, np.ndarray]:
    coverage, _ = _draw_vessels(segments, size)
    return coverage, np.where(coverage >= 0.5, 0.85, 0.0).astype(np.float32)


def _without_noise(drop: Callable[[int, int], bool]) -> Callable:
    def noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
        field = _smooth_noise(rng, size, cells)  # drawn anyway, so later draws stay put
        return field * 0 if drop(size, cells) else field

    return noise


def _no_sensor_noise(
    rgb: np.ndarray, rng: np.random.Generator, blur: float, noise: float
) -> np.ndarray:
    return _finish(rgb, rng, blur, 0.0)  # draws the same normals, scaled by 0


def _no_blur(rgb: np.ndarray, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
    return _finish(rgb, rng, 0.0, noise)


ABLATIONS: dict[str, dict[str, Callable]] = {
    "real": {},
    "near-mask": {"_draw_vessels": _near_mask},
    "one-darkness": {"_draw_vessels": _one_darkness},
    "no-choroid": {"_smooth_noise": _without_noise(lambda size, cells: cells == _CHOROID)},
    "no-texture": {
        "_smooth_noise": _without_noise(
            lambda size, cells: cells in (5, _CHOROID, max(4, size // 6))
        )
    },
    "flat-vessels": {"_draw_vessels": _flat_vessels},
    "no-sensor-noise": {"_finish": _no_sensor_noise},
    "no-blur": {"_finish": _no_blur},
}


def render(name: str, out: Path, count: int, size: int, seed: int) -> None:
    """Write the training phantoms with ablation `name` applied."""
    replaced = ABLATIONS[name]
    originals = {attr: getattr(phantom, attr) for attr in replaced}
    try:
        for attr, function in replaced.items():
            setattr(phantom, attr, function)
        phantom.write_phantom_dataset("retina", out, count, size, seed)
    finally:
        for attr, function in originals.items():
            setattr(phantom, attr, function)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-test", type=Path, required=True, help="Held-out real pairs.")
    parser.add_argument("--count", type=int, default=500, help="Training phantoms.")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=2026, help="The training phantoms' seed.")
    parser.add_argument("--repeats", type=int, default=3, help="Segmenter seeds per arm.")
    parser.add_argument("--only", action="append", choices=list(ABLATIONS), help="Subset.")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/renderer_ablations.json")
    )
    args = parser.parse_args()
    print(header())
    held = load_paired_data(args.real_test, args.size, progress=False)
    val, test = split_held_out(held, 0.2, 0)
    names = ["real", *[n for n in args.only or ABLATIONS if n != "real"]]
    rows = {}
    print("| renderer | segmenter F1 | F1 / real F1 |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="synthmed-ablation-") as work:
        for name in names:
            render(name, Path(work) / name, args.count, args.size, args.seed)
            data = load_paired_data(Path(work) / name, args.size, progress=False)
            scores = [f1([data], val, test, s) for s in range(args.repeats)]
            rows[name] = {"f1": scores}
            if name != "real":
                ratios = [a / b for a, b in zip(scores, rows["real"]["f1"], strict=True)]
                rows[name]["ratio"] = ratios
            ratio = rows[name].get("ratio", [1.0] * args.repeats)
            print(
                "| {} | {:.3f} ± {:.3f} | {:.3f} ± {:.3f} |".format(
                    name, *spread(scores), *spread(ratio)
                ),
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "count": args.count, "size": args.size, "seed": args.seed}
    args.out.write_text(json.dumps({**result, "ablations": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
