"""Images/s that `synthmed generate` writes, by format and destination, against the server's own
rate, side by side in one run.

    python benchmarks/write_throughput.py         # 64x64 and 256x256, about 13 min on 2 cores
    python benchmarks/write_throughput.py --configs demo --rounds 1

For each configuration (`demo`: the bundled 64x64 pair; `default`: the paper-scale 256x256 pair
with random weights, see _pipeline_models.py) one local tritonserver serves the ensemble, and
each round measures, one after the other: the server's own rate (the product's gRPC client,
results dropped), `synthmed generate` to a png folder, to webdataset shards on the local disk
(PNG members, then raw `--image-codec npy` ones), and to webdataset shards on a local S3
server (SeaweedFS, tests/s3server.py). All use the
same count, batch size and concurrency; the best of `--rounds` rounds is kept (noise only ever
slows a run down). Every writer shares the two cores with the server, so "fraction of the
server's rate" is what writing costs.

Prints a table headed by the CPU and writes benchmarks/results/write_throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _machine import header, machine
from _pipeline_models import CONFIGS, BenchModels, prepare
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/s3server.py

from synthmed.cli import cli  # noqa: E402
from synthmed.client import SynthMedClient  # noqa: E402
from synthmed.serving.repository import RepositoryOptions, write_repository  # noqa: E402
from synthmed.serving.server import TritonServer, free_ports  # noqa: E402
from tests.s3server import LocalS3  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "write_throughput.json"
BATCH, CONCURRENCY = 8, 4
SHARD_SIZE = 1000
# About 15 s per measurement at 64x64 on 2 cores, so the CLI's start-up is a small share.
COUNTS = {"demo": 12000, "default": 96}
DESTINATIONS = (
    "png folder",
    "webdataset local disk",
    "webdataset npy local disk",
    "webdataset local S3",
)


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=["demo", "default"])
    parser.add_argument("--count", type=int, default=None,
                        help="Samples per measurement (default: COUNTS).")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


Rate = tuple[float, float]  # (images/s, this process's CPU ms per image)


def _timed(run: callable, count: int) -> Rate:
    """Wall-clock rate and this (client) process's CPU per image: what writing takes from
    the server when the two share the cores."""
    start, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return count / wall, 1e3 * cpu / count


def _served(url: str, count: int) -> Rate:
    """The server's own rate: the same requests as `synthmed generate`, results dropped."""
    client = SynthMedClient(url, max_in_flight=CONCURRENCY)

    def run() -> None:
        for _ in client.generate(count, seed=1, batch_size=BATCH):
            pass

    return _timed(run, count)


def _written(url: str, count: int, out: str, fmt: str, codec: str = "png") -> Rate:
    """`synthmed generate` into `out`, start to finish (connect, write, index, card)."""
    args = ["generate", "--count", str(count), "--out", out, "--url", url, "--seed", "1"]
    args += ["--batch-size", str(BATCH), "--concurrency", str(CONCURRENCY), "--format", fmt]
    if fmt == "webdataset":
        args += ["--shard-size", str(SHARD_SIZE), "--image-codec", codec]

    def run() -> None:
        result = CliRunner().invoke(cli, args)
        if result.exit_code != 0:
            raise RuntimeError(f"synthmed generate {out} failed: {result.output[-500:]}")

    return _timed(run, count)


SERVER = "server (results dropped)"


@contextlib.contextmanager
def _placed(cores: set[int] | None) -> Iterator[None]:
    """Run the block on `cores`: this thread, and every thread and process it starts (Linux
    threads and children inherit their creator's CPU affinity). None: all cores."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _placements() -> dict[str, tuple[set[int] | None, set[int] | None]]:
    """(server cores, client cores) per placement: sharing every core, as on one machine,
    and split, the server on one core and the client (with the S3 server) on the others, as
    when the client runs beside a remote server."""
    cores = sorted(os.sched_getaffinity(0))
    placements = {"shared": (None, None)}
    if len(cores) >= 2:
        placements["split"] = ({cores[0]}, set(cores[1:]))
    return placements


def run_config(
    models: BenchModels, repo: Path, count: int, work: Path, rounds: int, placement: str
) -> dict:
    """One configuration and placement: serve it and measure every destination `rounds` times."""
    name = models.name
    server_cores, client_cores = _placements()[placement]
    rates: dict[str, list[Rate]] = {k: [] for k in (SERVER, *DESTINATIONS)}
    http, grpc, metrics = free_ports()
    with contextlib.ExitStack() as stack:
        with _placed(server_cores):
            server = stack.enter_context(
                TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)
            )
        stack.enter_context(_placed(client_cores))
        s3 = stack.enter_context(LocalS3(work / f"s3-{name}-{placement}"))
        os.environ.update(s3.env)  # what `synthmed generate --out s3://...` reads
        bucket = s3.make_bucket(f"bench-{name}")
        url = server.url("grpc")
        _served(url, BATCH * CONCURRENCY * 2)  # warm-up
        for r in range(rounds):
            rates[SERVER].append(_served(url, count))
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                rates["png folder"].append(_written(url, count, f"{tmp}/png", "png"))
                rates["webdataset local disk"].append(
                    _written(url, count, f"{tmp}/wds", "webdataset")
                )
                rates["webdataset npy local disk"].append(
                    _written(url, count, f"{tmp}/npy", "webdataset", "npy")
                )
            rates["webdataset local S3"].append(
                _written(url, count, f"{bucket}/round{r}", "webdataset")
            )
            latest = ", ".join(f"{k} {v[-1][0]:.1f}" for k, v in rates.items())
            print(f"  [{name}, {placement}] round {r + 1}: {latest}", flush=True)
    server_rate = max(rate for rate, _ in rates[SERVER])
    rows = []
    for destination, measured in rates.items():
        best = max(measured)  # the fastest round, with its CPU
        rows.append({
            "destination": destination, "images_per_s": best[0], "fraction_of_server":
            best[0] / server_rate, "client_cpu_ms_per_image": best[1],
            "per_round": [{"images_per_s": a, "client_cpu_ms_per_image": b} for a, b in measured],
        })  # fmt: skip
    return {
        "name": name, "description": models.description, "count": count,
        "placement": placement, "server_cores": sorted(server_cores or os.sched_getaffinity(0)),
        "client_cores": sorted(client_cores or os.sched_getaffinity(0)), "rows": rows,
    }  # fmt: skip


def _table(config: dict) -> str:
    lines = [
        f"{config['name']}: {config['description']}, {config['count']} samples, batch {BATCH}, "
        f"{CONCURRENCY} in flight, shards of {SHARD_SIZE}; server on cores "
        f"{config['server_cores']}, client on cores {config['client_cores']}",
        f"{'destination':<28} {'images/s':>10} {'x server':>9} {'client CPU ms/img':>18}",
    ]
    for row in config["rows"]:
        rate, fraction = row["images_per_s"], row["fraction_of_server"]
        cpu = row["client_cpu_ms_per_image"]
        lines.append(f"{row['destination']:<28} {rate:>10.1f} {fraction:>9.3f} {cpu:>18.2f}")
    return "\n".join(lines)


def main() -> None:
    args = _options()
    recorded = machine()
    print(header(recorded), flush=True)
    results = {"machine": recorded, "command": "python benchmarks/write_throughput.py",
               "configs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="synthmed-write-") as tmp:
        work = Path(tmp)
        for name in args.configs:
            models = prepare(name, work / name, int8=False, calibration_count=0)
            for placement, (server_cores, _) in _placements().items():
                # onnxruntime pins its intra-op threads to cores of its own choosing, whatever
                # the process's affinity: a server confined to some cores gets that many threads.
                threads = len(server_cores) if server_cores else 0
                repo = work / name / f"repository-{placement}"
                write_repository(models.onnx, repo, RepositoryOptions(cpu_threads=threads))
                count = args.count or COUNTS[name]
                config = run_config(models, repo, count, work, args.rounds, placement)
                results["configs"][f"{name}, {placement}"] = config
    print(f"\n{header(recorded)}\n")
    print("\n\n".join(_table(c) for c in results["configs"].values()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
