"""Seconds per training step of each GAN on this machine, by memory layout and precision.

    python benchmarks/train_step_seconds.py [--recipe paper|demo|cstylegan2] [--sizes 64 256]
        [--steps 5]

`--recipe paper` (the default) uses the default widths, ngf = ndf = 64; `--recipe demo` the
settings `synthmed train-demo` trains with at each size (stage II with its frozen segmenter
behind the discriminator). Every kind and size is timed side by side in four settings: the
contiguous layout the models had before (NCHW) and the channels-last one the trainer now uses,
each in fp32 and, where the CPU has bf16 arithmetic, with `--precision bf16`. Prints a table
headed by the CPU and its vector extensions and writes
benchmarks/results/train_step_seconds[_RECIPE].json. One warm-up step is not timed.

`--recipe cstylegan2` times the conditional StyleGAN2 of docs/quality.md row 105 (one retina
class, `--max-channels 128`, mode seeking and binarised fakes) with ADA's p fixed at 1, where
those runs spend most of their steps, in fp32 and bf16; its trainer keeps the channels-last
layout itself, so that is the only layout timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
from _machine import header, machine

from synthmed.machine import cpu, has_bf16
from synthmed.training.config import TrainConfig
from synthmed.training.data.phantom import write_phantom_dataset
from synthmed.training.demo import ROLES, demo_configs
from synthmed.training.stylegan2_config import StyleGAN2TrainConfig
from synthmed.training.train import Trainer
from synthmed.training.train_stylegan2 import StyleGAN2Trainer

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def configs(recipe: str, data: Path, size: int, batch_size: int) -> list[TrainConfig]:
    """One TrainConfig per GAN kind: the paper-scale defaults or train-demo's recipe."""
    if recipe == "demo":
        return list(demo_configs(data, ROLES, size, 1.0).values())
    return [
        TrainConfig(kind=kind, data=str(data), size=size, batch_size=batch_size)
        for kind in ("stage1", "stage2", "single")
    ]


def measure(cfg: TrainConfig, layout: str, steps: int) -> float:
    """Mean seconds of `steps` steps after one warm-up step, the models in `layout`."""
    with tempfile.TemporaryDirectory() as run:
        # train_step alone is timed: no window of fixed statistics, and the frozen segmenter
        # (whose cost per step does not depend on how well it was trained) trained one step
        cfg = dataclasses.replace(cfg, steps=steps + 1, fixed_bn_steps=0, seg_steps=1)
        trainer = Trainer(cfg, Path(run), resume=False, progress=False)
        segmenter = getattr(trainer.task, "segmenter", None)
        for module in (trainer.generator, trainer.discriminator, segmenter):
            if module is not None:
                module.to(memory_format=LAYOUTS[layout])
        trainer.train_step(0)  # warm-up: allocator and kernel selection
        start = time.perf_counter()
        for step in range(1, steps + 1):
            trainer.train_step(step)
        return (time.perf_counter() - start) / steps


# docs/quality.md row 105's settings (`synthmed train stylegan2 --class-name retina ...`).
CSTYLEGAN2_RECIPE = {
    "z_dim": 64,
    "w_dim": 64,
    "mapping_layers": 2,
    "channel_base": 2048,
    "max_channels": 128,
    "augments": ("xflip", "translate", "cutout"),
    "mode_seeking": 1.0,
    "binary_fakes": True,
    "r1_gamma": 4.0,
}


def measure_cstylegan2(data: Path, size: int, precision: str, steps: int) -> float:
    """Mean seconds of `steps` conditional StyleGAN2 steps (lazy R1 and path length included
    at their intervals) after one warm-up step."""
    cfg = StyleGAN2TrainConfig(
        data=(str(data),),
        class_names=("retina",),
        size=size,
        steps=steps + 1,
        ada_p=1.0,
        ada_target=None,
        device="cpu",
        precision=precision,
        **CSTYLEGAN2_RECIPE,
    )
    with tempfile.TemporaryDirectory() as run:
        trainer = StyleGAN2Trainer(cfg, Path(run), resume=False, progress=False)
        trainer.train_step(0)
        start = time.perf_counter()
        for step in range(1, steps + 1):
            trainer.train_step(step)
        return (time.perf_counter() - start) / steps


def cstylegan2_rows(data: Path, size: int, steps: int, precisions: tuple[str, ...]) -> list:
    """One row per precision, the speedup against fp32."""
    rows, baseline = [], None
    for precision in precisions:
        seconds = measure_cstylegan2(data, size, precision, steps)
        baseline = baseline or seconds
        rows.append({
            "kind": "cstylegan2",
            "size": size,
            "batch_size": StyleGAN2TrainConfig.batch_size,
            "layout": "channels_last",
            "precision": precision,
            "seconds_per_step": seconds,
            "images_per_second": StyleGAN2TrainConfig.batch_size / seconds,
            "speedup": baseline / seconds,
        })  # fmt: skip
        print(
            f"cstylegan2 {size:4d}x{size:<4d} batch {StyleGAN2TrainConfig.batch_size:3d} "
            f"{precision}: {seconds:7.3f} s/step ({baseline / seconds:4.2f}x fp32)",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=("paper", "demo", "cstylegan2"), default="paper")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="paper recipe only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    suffix = "" if args.recipe == "paper" else f"_{args.recipe}"
    out = args.out or Path(__file__).parent / "results" / f"train_step_seconds{suffix}.json"
    recorded = machine(threads=torch.get_num_threads())
    print(header(recorded), flush=True)
    precisions = ("fp32", "bf16") if has_bf16(cpu()) else ("fp32",)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = Path(tmp) / f"retina{size}"
            write_phantom_dataset("retina", data, 32, size, 0)
            if args.recipe == "cstylegan2":
                rows += cstylegan2_rows(data, size, args.steps, precisions)
                continue
            for cfg in configs(args.recipe, data, size, args.batch_size):
                baseline = None
                for layout in LAYOUTS:
                    for precision in precisions:
                        run_cfg = dataclasses.replace(cfg, precision=precision, device="cpu")
                        seconds = measure(run_cfg, layout, args.steps)
                        baseline = baseline or seconds
                        rows.append(
                            {
                                "kind": cfg.kind,
                                "size": size,
                                "batch_size": cfg.batch_size,
                                "layout": layout,
                                "precision": precision,
                                "seconds_per_step": seconds,
                                "images_per_second": cfg.batch_size / seconds,
                                "speedup": baseline / seconds,
                            }
                        )
                        print(
                            f"{cfg.kind:7s} {size:4d}x{size:<4d} batch {cfg.batch_size:3d} "
                            f"{layout:13s} {precision}: {seconds:7.3f} s/step "
                            f"({cfg.batch_size / seconds:6.1f} img/s, "
                            f"{baseline / seconds:4.2f}x contiguous fp32)",
                            flush=True,
                        )
    result = {"machine": recorded, "recipe": args.recipe, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
