"""Which Triton settings make the served pipeline fastest on this CPU: one sweep, one run.

    python benchmarks/serving_settings.py [--configs default] [--seconds 3] [--rounds 2]

For each variant of the repository options (onnxruntime threads per instance, spin-waiting,
instances per model, dynamic-batching queue delay), writes a python-backend repository, starts
tritonserver and measures the `synthmed` ensemble through the gRPC client at a few
(batch, concurrency) points, next to in-process onnxruntime measured in the same run. The
winner becomes `RepositoryOptions`' default; the rest is the record of what did not help.
Prints a table headed by the CPU and its vector extensions, and writes
benchmarks/results/serving_settings.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path

from _machine import header, machine
from _measure import measure, report, triton_request
from _pipeline_models import CONFIGS, prepare

from synthmed.contract import ENSEMBLE
from synthmed.latents import latents
from synthmed.serving.repository import RepositoryOptions, write_repository
from synthmed.serving.runtime import InProcessRuntime
from synthmed.serving.server import TritonServer, free_ports

CORES = os.cpu_count() or 1
VARIANTS = {
    "default (spinning off, all threads, preferred 8/16/32, 2 ms)": RepositoryOptions(),
    "spinning on": RepositoryOptions(cpu_spinning=True),
    "preferred batch 8 only": RepositoryOptions(preferred_batch_sizes=(8,)),
    "1 thread per instance, 2 instances": RepositoryOptions(cpu_threads=1, instances=2),
    "no queue delay": RepositoryOptions(max_queue_delay_us=0),
    "10 ms queue delay": RepositoryOptions(max_queue_delay_us=10_000),
}
POINTS = ((1, 4), (8, 1), (8, 4))  # (batch, concurrency)


def _in_process(name: str, repo: Path, seconds: float) -> list[dict]:
    """The reference: the same two graphs as two in-process onnxruntime sessions."""
    runtime = InProcessRuntime(repo, threads=CORES)
    rows = []
    for batch in sorted({b for b, _ in POINTS}):
        z = latents(0, range(batch), runtime.nz)
        call = lambda z=z: lambda i: runtime.run(z)  # noqa: E731
        m = report(measure(name, "in-process onnxruntime", call, batch, seconds=seconds))
        rows.append({"variant": "in-process onnxruntime", **m.summary()})
    return rows


def _served(name: str, url: str, variant: str, options: RepositoryOptions, seconds: float):
    """The ensemble at every (batch, concurrency) point on a server with these options."""
    rows = []
    for batch, concurrency in POINTS:
        request = triton_request(url, ENSEMBLE, batch)
        m = report(measure(name, "triton ensemble", request, batch, concurrency=concurrency,
                           seconds=seconds))  # fmt: skip
        rows.append({"variant": variant, "options": dataclasses.asdict(options), **m.summary()})
    return rows


def _best_of(rows: list[dict]) -> list[dict]:
    """Per variant and point, the fastest round (noise only slows a run down)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["variant"], r["batch"], r["concurrency"])
        if key not in best or r["images_per_s"] > best[key]["images_per_s"]:
            best[key] = r
    return list(best.values())


def _sweep(name: str, work: Path, seconds: float, rounds: int) -> list[dict]:
    """Every variant's server up at once (idle ones cost memory, not CPU), measured in
    interleaved rounds so that a slow spell of the machine hits every variant alike."""
    models = prepare(name, work, int8=False, calibration_count=0)
    write_repository(models.onnx, work / "reference", RepositoryOptions())
    servers = {}
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        for i, (variant, options) in enumerate(VARIANTS.items()):
            write_repository(models.onnx, work / f"variant{i}", options)
            http, grpc, metrics = free_ports()
            server = TritonServer(work / f"variant{i}", http_port=http, grpc_port=grpc,
                                  metrics_port=metrics, echo_log=False)  # fmt: skip
            servers[variant] = stack.enter_context(server).url("grpc")
        for r in range(rounds):
            print(f"[{name}] round {r + 1} of {rounds}", flush=True)
            rows += _in_process(name, work / "reference", seconds)
            for variant, url in servers.items():
                print(f"[{name}] {variant}", flush=True)
                rows += _served(name, url, variant, VARIANTS[variant], seconds)
    return _best_of(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=["default"])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2, help="Best of this many.")
    default_out = Path(__file__).parent / "results" / "serving_settings.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    recorded = machine()
    print(header(recorded), flush=True)
    results: dict = {"machine": recorded, "points": POINTS, "rounds": args.rounds, "configs": {}}
    with tempfile.TemporaryDirectory(prefix="synthmed-settings-") as tmp:
        for name in args.configs:
            results["configs"][name] = _sweep(name, Path(tmp) / name, args.seconds, args.rounds)
    print(f"\n{header(recorded)}")
    print(f"{'variant':40s} {'batch':>5s} {'conc':>4s} {'images/s':>9s} {'p99 ms':>8s}")
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
