"""Which Triton settings make the served pipeline fastest on this CPU: one sweep, one run.

    python benchmarks/serving_settings.py [--configs default] [--seconds 4]

For each variant of the repository options (onnxruntime threads per instance, spin-waiting,
instances per model, dynamic-batching queue delay), writes a python-backend repository, starts
tritonserver and measures the `synthmed` ensemble through the gRPC client at a few
(batch, concurrency) points, next to in-process onnxruntime measured in the same run. The
winner becomes `RepositoryOptions`' default; the rest is the record of what did not help.
Prints a table and writes benchmarks/results/serving_settings.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

from _measure import measure, report, triton_request
from _pipeline_models import CONFIGS, prepare

from synthmed.latents import latents
from synthmed.serving.repository import RepositoryOptions, write_repository
from synthmed.serving.runtime import InProcessRuntime
from synthmed.serving.server import TritonServer, free_ports

CORES = os.cpu_count() or 1
VARIANTS = {
    "spinning on, all threads": RepositoryOptions(cpu_spinning=True),
    "spinning off, all threads": RepositoryOptions(cpu_spinning=False),
    "spinning off, 1 thread per instance": RepositoryOptions(cpu_threads=1),
    "spinning off, 1 thread, 2 instances": RepositoryOptions(cpu_threads=1, instances=2),
    "spinning off, no queue delay": RepositoryOptions(max_queue_delay_us=0),
    "spinning off, 10 ms queue delay": RepositoryOptions(max_queue_delay_us=10_000),
}
POINTS = ((1, 4), (8, 1), (8, 4))  # (batch, concurrency)


def _in_process(name: str, repo: Path, seconds: float) -> list[dict]:
    """The reference: the same two graphs as two in-process onnxruntime sessions."""
    runtime = InProcessRuntime(repo, threads=CORES)
    rows = []
    for batch in sorted({b for b, _ in POINTS}):
        z = latents(0, range(batch), runtime.nz)
        call = lambda z=z: lambda i: runtime.generate(z)  # noqa: E731
        m = report(measure(name, "in-process onnxruntime", call, batch, seconds=seconds))
        rows.append({"variant": "in-process onnxruntime", **m.summary()})
    return rows


def _served(name: str, repo: Path, variant: str, options: RepositoryOptions, seconds: float):
    """The ensemble at every (batch, concurrency) point on a server with these options."""
    rows = []
    http, grpc, metrics = free_ports()
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                      echo_log=False) as server:  # fmt: skip
        for batch, concurrency in POINTS:
            request = triton_request(server.url("grpc"), "synthmed", batch)
            m = report(measure(name, "triton ensemble", request, batch,
                               concurrency=concurrency, seconds=seconds))  # fmt: skip
            rows.append({"variant": variant, "options": dataclasses.asdict(options),
                         **m.summary()})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=["default"])
    parser.add_argument("--seconds", type=float, default=4.0)
    default_out = Path(__file__).parent / "results" / "serving_settings.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    results: dict = {"cores": CORES, "points": POINTS, "configs": {}}
    with tempfile.TemporaryDirectory(prefix="synthmed-settings-") as tmp:
        for name in args.configs:
            work = Path(tmp) / name
            models = prepare(name, work, int8=False, calibration_count=0)
            write_repository(models.onnx, work / "reference", RepositoryOptions())
            rows = _in_process(name, work / "reference", args.seconds)
            for i, (variant, options) in enumerate(VARIANTS.items()):
                print(f"[{name}] {variant}", flush=True)
                write_repository(models.onnx, work / f"variant{i}", options)
                rows += _served(name, work / f"variant{i}", variant, options, args.seconds)
            results["configs"][name] = rows
    print(f"\n{'variant':40s} {'batch':>5s} {'conc':>4s} {'images/s':>9s} {'p99 ms':>8s}")
    for name, rows in results["configs"].items():
        print(f"[{name}]")
        for r in rows:
            print(f"{r['variant']:40s} {r['batch']:5d} {r['concurrency']:4d} "
                  f"{r['images_per_s']:9.2f} {r['p99_ms']:8.1f}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
