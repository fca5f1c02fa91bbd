"""What stage I's hysteresis costs when served: the exported stage I graph with and without it.

    python benchmarks/stage1_graph_cost.py [--stage1 RUN] [--seconds 3] [--rounds 3]

The same weights (the bundled demo stage I by default) are exported twice with the bundled
stage II, once with the run's mask confidence (a stack of max-pools after the generator,
training/pixels.py) and once with 0 (the plain threshold). Stage I's graph and the fused
pipeline of each run in onnxruntime in-process on one thread, alternating, at batch 1, 8 and
32, so each ratio is measured side by side. Prints a table (best of the rounds) and writes
benchmarks/results/stage1_graph_cost.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from _machine import header, machine

from synthmed.export.torch2onnx import export_onnx
from synthmed.training.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2


def _plain_copy(run: Path, folder: Path) -> Path:
    """The run's weights with mask confidence 0."""
    folder.mkdir()
    shutil.copy2(run / WEIGHTS_FILE, folder / WEIGHTS_FILE)
    config = json.loads((run / CONFIG_FILE).read_text())
    config["model_config"]["mask_confidence"] = 0.0
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    return folder


def _rate(session: ort.InferenceSession, z: np.ndarray, seconds: float) -> float:
    """Images/s of one session at z's batch size, for about `seconds`."""
    session.run(None, {"z": z})
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"z": z})
        calls += 1
    return calls * len(z) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage1", type=Path, default=DEMO_STAGE1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/stage1_graph_cost.json")
    )
    args = parser.parse_args()
    print(header())
    confidence = json.loads((args.stage1 / CONFIG_FILE).read_text())["model_config"].get(
        "mask_confidence", 0.0
    )
    with tempfile.TemporaryDirectory() as work:
        graphs = {}
        for name, run in (
            (f"hysteresis {confidence}", args.stage1),
            ("plain threshold", _plain_copy(args.stage1, Path(work) / "plain")),
        ):
            out = Path(work) / name.replace(" ", "_")
            export_onnx(out, stage1=run, stage2=DEMO_STAGE2)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            for graph in ("stage1", "fused"):
                graphs[f"{graph}, {name}"] = ort.InferenceSession(
                    str(out / f"synthmed_{graph}.onnx"), options, providers=["CPUExecutionProvider"]
                )
        nz = graphs["stage1, plain threshold"].get_inputs()[0].shape[1]
        rates: dict[str, dict[int, list[float]]] = {name: {} for name in graphs}
        for batch in (1, 8, 32):
            z = np.random.default_rng(0).standard_normal((batch, nz), dtype=np.float32)
            for _ in range(args.rounds):
                for name, session in graphs.items():
                    rates[name].setdefault(batch, []).append(_rate(session, z, args.seconds))
    print("| graph | batch | with hysteresis, images/s | plain threshold, images/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for graph in ("stage1", "fused"):
        with_it, plain = (
            f"{graph}, {name}" for name in (f"hysteresis {confidence}", "plain threshold")
        )
        for batch in (1, 8, 32):
            best = max(rates[with_it][batch]), max(rates[plain][batch])
            rows.append(
                {
                    "graph": graph,
                    "batch": batch,
                    "hysteresis": best[0],
                    "plain": best[1],
                    "ratio": best[0] / best[1],
                }
            )
            print(
                f"| {graph} | {batch} | {best[0]:.0f} | {best[1]:.0f} | {best[0] / best[1]:.3f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(),
        "stage1": str(args.stage1),
        "threads": 1,
        "rows": rows,
        "all": rates,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
