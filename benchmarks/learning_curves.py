"""Does training learn? Stage II L1 and stage I vessel fraction before and after a short run.

    python benchmarks/learning_curves.py [--size 64] [--steps 300] [--count 200]

Trains stage I and stage II with the default settings on retina phantoms and reports, from the
EMA generator in eval mode (what export uses): stage II's L1 to the target photographs (in
[0, 1] pixel units) and stage I's vessel-pixel fraction next to the data's. Prints a table and
writes benchmarks/results/learning_curves.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _machine import header, machine

from synthmed.training.config import TrainConfig
from synthmed.training.data.phantom import write_phantom_dataset
from synthmed.training.train import Trainer


def run(kind: str, data: Path, size: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(kind=kind, data=str(data), size=size, steps=steps, sample_every=steps)
        trainer = Trainer(cfg, Path(out), resume=False, progress=True)
        before, _ = trainer.task.evaluate(trainer.ema.module.eval(), trainer.fixed)
        start = time.perf_counter()
        result = trainer.run()
        return {
            "kind": kind,
            "steps": steps,
            "before": before,
            "after": result.eval_metrics,
            "first_step_losses": _first_row(Path(out) / "losses.csv"),
            "last_step_losses": result.last_losses,
            "data_vessel_fraction": result.data_real_fraction,
            "seconds": time.perf_counter() - start,
        }


def _first_row(path: Path) -> dict[str, float]:
    header, first = path.read_text().splitlines()[:2]
    return {k: float(v) for k, v in zip(header.split(","), first.split(","), strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--count", type=int, default=200)
    default_out = Path(__file__).parent / "results" / "learning_curves.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "retina"
        write_phantom_dataset("retina", data, args.count, args.size, 0)
        rows = [run(kind, data, args.size, args.steps) for kind in ("stage2", "stage1")]
    s2, s1 = rows
    recorded = machine()
    print(f"\n{header(recorded)}")
    print(f"retina phantoms {args.size}x{args.size}, {args.count} images, {args.steps} steps each")
    print(f"{'metric':44s} {'start':>8s} {'end':>8s}")
    print(
        f"{'stage II L1 to target (EMA, eval)':44s} {s2['before']['eval_l1']:8.4f} "
        f"{s2['after']['eval_l1']:8.4f}"
    )
    print(
        f"{'stage II L1, training batch':44s} {s2['first_step_losses']['l1']:8.4f} "
        f"{s2['last_step_losses']['l1']:8.4f}"
    )
    print(
        f"{'stage I vessel fraction (EMA, eval)':44s} {s1['before']['eval_fake_fraction']:8.4f} "
        f"{s1['after']['eval_fake_fraction']:8.4f}"
    )
    print(
        f"{'stage I vessel fraction, training batch':44s} "
        f"{s1['first_step_losses']['fake_fraction']:8.4f} "
        f"{s1['last_step_losses']['fake_fraction']:8.4f}"
    )
    print(f"{'data vessel fraction (whole image)':44s} {s1['data_vessel_fraction']:8.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"size": args.size, "count": args.count, "machine": recorded, "rows": rows}, indent=2
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
