"""Images/s written to disk by `synthmed generate` against the server's own throughput.

    python benchmarks/client_throughput.py [--count 2000] [--batch-size 32] [--concurrency 4]

Starts the bundled demo repository on a local tritonserver, then measures in one run, side by
side: (1) the server's rate, with requests from the same client whose results are dropped, and
(2) the full path to disk (`synthmed generate`: PNG encoding, atomic writes, manifest). The
ratio (2)/(1) says how much the writer costs. Prints a table, writes
benchmarks/results/client_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from synthmed.cli import cli
from synthmed.client import SynthMedClient
from synthmed.serving.server import TritonServer, free_ports

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    default_out = Path(__file__).parent / "results" / "client_throughput.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    http, grpc, metrics = free_ports()
    server = TritonServer(ROOT / "model_repository", http_port=http, grpc_port=grpc,
                          metrics_port=metrics, echo_log=False)  # fmt: skip
    rows = []
    with server, tempfile.TemporaryDirectory() as tmp:
        url = server.url("grpc")
        client = SynthMedClient(url, max_in_flight=args.concurrency)
        list(client.generate(args.batch_size * 4, batch_size=args.batch_size))  # warm-up
        for repeat in range(args.repeats):
            start = time.perf_counter()
            for _ in client.generate(args.count, seed=repeat, batch_size=args.batch_size):
                pass
            served = args.count / (time.perf_counter() - start)
            out = Path(tmp) / f"run{repeat}"
            start = time.perf_counter()
            result = CliRunner().invoke(cli, [
                "generate", "--count", str(args.count), "--out", str(out), "--url", url,
                "--seed", str(repeat), "--batch-size", str(args.batch_size),
                "--concurrency", str(args.concurrency),
            ])  # fmt: skip
            assert result.exit_code == 0, result.output
            to_disk = args.count / (time.perf_counter() - start)
            rows.append({"server_images_per_s": served, "to_disk_images_per_s": to_disk,
                         "ratio": to_disk / served})  # fmt: skip
            print(f"repeat {repeat}: server {served:7.1f} img/s, to disk {to_disk:7.1f} img/s, "
                  f"ratio {to_disk / served:.3f}", flush=True)  # fmt: skip
    best = {k: max(r[k] for r in rows) for k in ("server_images_per_s", "to_disk_images_per_s")}
    ratio = best["to_disk_images_per_s"] / best["server_images_per_s"]
    print(f"\n{'path':34s} {'images/s (best of ' + str(args.repeats) + ')':>24s}")
    print(f"{'server (results dropped)':34s} {best['server_images_per_s']:24.1f}")
    print(f"{'synthmed generate (PNG to disk)':34s} {best['to_disk_images_per_s']:24.1f}")
    print(f"{'ratio to disk / server':34s} {ratio:24.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"cpu": platform.machine(), "cores": __import__("os").cpu_count()},
        "model": "demo (64x64, python backend)", "count": args.count,
        "batch_size": args.batch_size, "concurrency": args.concurrency,
        "rows": rows, "best": best, "ratio_best": ratio,
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
