"""Seconds per training step of each GAN on this machine, at 64x64 and 256x256.

    python benchmarks/train_step_seconds.py [--sizes 64 256] [--steps 5] [--batch-size 16]

Uses the default (paper-scale) widths, ngf = ndf = 64, on retina phantoms; prints a table and
writes benchmarks/results/train_step_seconds.json; the table's header names the CPU and its
vector extensions. One warm-up step is not timed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _machine import header, machine

from synthmed.training.config import TrainConfig
from synthmed.training.data.phantom import write_phantom_dataset
from synthmed.training.train import Trainer


def measure(kind: str, size: int, data: Path, steps: int, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as run:
        cfg = TrainConfig(
            kind=kind, data=str(data), size=size, steps=steps + 1, batch_size=batch_size
        )
        trainer = Trainer(cfg, Path(run), resume=False, progress=False)
        trainer.train_step(0)  # warm-up: allocator and kernel selection
        start = time.perf_counter()
        for step in range(1, steps + 1):
            trainer.train_step(step)
        return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "train_step_seconds.json"
    )
    args = parser.parse_args()
    recorded = machine(threads=torch.get_num_threads())
    print(header(recorded), flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = Path(tmp) / f"retina{size}"
            write_phantom_dataset("retina", data, 32, size, 0)
            for kind in ("stage1", "stage2", "single"):
                seconds = measure(kind, size, data, args.steps, args.batch_size)
                rows.append(
                    {
                        "kind": kind,
                        "size": size,
                        "batch_size": args.batch_size,
                        "seconds_per_step": seconds,
                        "images_per_second": args.batch_size / seconds,
                    }
                )
                print(
                    f"{kind:7s} {size:4d}x{size:<4d} batch {args.batch_size:3d}: "
                    f"{seconds:7.3f} s/step "
                    f"({args.batch_size / seconds:6.1f} img/s)",
                    flush=True,
                )
    result = {
        "machine": recorded,
        "config": {"ngf": 64, "ndf": 64, "nz": 100, "norm": "batch", "data": "retina phantoms"},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
