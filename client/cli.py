"""`synthmed generate`: a labelled synthetic dataset on disk, through Triton or in-process."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import click
import numpy as np

from synthmed.errors import UserInputError

BUNDLED_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
Produce = Callable[[Sequence[int]], Iterator[tuple[int, np.ndarray, np.ndarray]]]


def _through_triton(
    urls: Sequence[str], protocol: str, seed: int, batch_size: int, concurrency: int
):
    from synthmed.client.client import SynthMedClient

    client = SynthMedClient(urls, protocol=protocol, max_in_flight=concurrency)
    sources = client.provenance()
    info = {
        "model": client.model,
        "model_version": client.contract.version,
        "servers": list(client.urls),
        "sources": sources,
        "image_size": client.contract.height,
    }

    def produce(indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        return client.generate(len(indices), seed=seed, indices=indices, batch_size=batch_size)

    return info, produce


def _in_process(repo: Path, seed: int, batch_size: int):
    import json

    from synthmed.latents import latents

    try:
        from synthmed.serving.repository import STAGE1, STAGE2, parse_pbtxt
        from synthmed.serving.runtime import InProcessRuntime
    except ImportError as e:
        raise UserInputError(
            "generating without --url runs the models in-process and needs onnxruntime: "
            "pip install 'synthmed[serve]', or pass --url of a Triton server"
        ) from e

    runtime = InProcessRuntime(repo)
    sources = []
    for name in (STAGE1, STAGE2):
        config = parse_pbtxt((repo / name / "config.pbtxt").read_text())
        value = (
            config.parameters["synthmed_provenance"].string_value
            if "synthmed_provenance" in config.parameters
            else ""
        )
        sources += json.loads(value) if value else [{"model": name}]
    info = {
        "model": "synthmed",
        "model_version": "in-process",
        "repository": str(repo.resolve()),
        "sources": sources,
        "image_size": runtime.image_size,
    }

    def produce(indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, len(indices), batch_size):
            batch = list(indices[start : start + batch_size])
            images, masks = runtime.generate(latents(seed, batch, runtime.nz))
            yield from zip(batch, images, masks, strict=True)

    return info, produce


@click.command("generate")
@click.option("--count", type=int, required=True, help="Number of (image, mask) pairs.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset folder.")
@click.option("--url", "urls", multiple=True, help="Triton host:port; repeat to share the load.")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Sample i depends on (seed, i)."
)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--concurrency", type=int, default=4, show_default=True, help="In flight per server.")
@click.option(
    "--format", "fmt", type=click.Choice(["png", "npz"]), default="png", show_default=True
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--force", is_flag=True, help="Replace the dataset in --out.")
@click.option(
    "--workers", type=int, default=0, show_default=True, help="Encoding threads (0: all)."
)
@click.option(
    "--serve",
    is_flag=True,
    help="Start a local tritonserver on --model-repository for this run and generate through it.",
)
@click.option(
    "--model-repository",
    type=click.Path(path_type=Path),
    default=None,
    help="Repository for --serve or in-process runs (default: the bundled demo).",
)
def generate(
    count: int, out: Path, urls: tuple[str, ...], protocol: str, seed: int, batch_size: int,
    concurrency: int, fmt: str, resume: bool, force: bool, workers: int, serve: bool,
    model_repository: Path | None,
) -> None:  # fmt: skip
    """Synthesize COUNT labelled pairs into --out: images/, masks/, manifest.jsonl, a dataset card.

    With --url (or --serve) the samples come from Triton; without, from the repository's ONNX
    models run in-process. Either way sample i is the same. Files are written atomically, so a
    killed run lists no truncated image, and --resume continues it with no holes or duplicates.
    """
    if count < 1:
        raise UserInputError(f"--count must be >= 1, got {count}")
    if batch_size < 1 or concurrency < 1:
        raise UserInputError("--batch-size and --concurrency must be >= 1")
    if seed < 0:
        raise UserInputError(f"--seed must be >= 0, got {seed}")
    if serve and urls:
        raise UserInputError("--serve starts its own server; leave out --url")
    repo = model_repository or BUNDLED_REPOSITORY
    with contextlib.ExitStack() as stack:
        if serve:
            urls = (stack.enter_context(_local_server(repo)).url(protocol),)
        if urls:
            info, produce = _through_triton(urls, protocol, seed, batch_size, concurrency)
        else:
            info, produce = _in_process(repo, seed, batch_size)
        _write(out, _run_info(info, seed, count, fmt), produce, resume, force, workers)
    click.echo(f"wrote {count} synthetic image/mask pairs to {out}")


def _local_server(repo: Path):  # noqa: ANN202 (a TritonServer, imported lazily)
    """A tritonserver for `repo` on free loopback ports (a context manager: start, stop)."""
    from synthmed.serving.server import TritonServer, free_ports

    http, grpc, metrics = free_ports()
    return TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, echo_log=False)


def _run_info(info: dict, seed: int, count: int, fmt: str):
    """The run's identity for the dataset writer: generator, weights, data it learned from."""
    from synthmed.client.dataset import RunInfo

    info["weights_sha256"] = {
        s["role"]: s.get("weights_sha256") for s in info["sources"] if "role" in s
    }
    data = sorted({str(s.get("data")) for s in info["sources"] if s.get("data")})
    # The card's reproduce command: the same run, minus how this particular process began it.
    args = [a for a in sys.argv[1:] if a not in ("--resume", "--force")]
    command = shlex.join(["synthmed", *args])
    return RunInfo(
        seed=seed, count=count, format=fmt, generator=info,
        trained_on="; ".join(data) or "unknown", command=command,
    )  # fmt: skip


def _write(out: Path, run, produce: Produce, resume: bool, force: bool, workers: int) -> None:  # noqa: ANN001
    """Write the run's pending samples, with a progress bar in images/s."""
    from tqdm import tqdm

    from synthmed.client.dataset import DatasetWriter

    with DatasetWriter(out, run, resume=resume, force=force, workers=workers) as writer:
        pending = writer.pending()
        done = run.count - len(pending)
        with tqdm(total=run.count, initial=done, desc="generate", unit="img") as bar:
            for index, image, mask in produce(pending):
                writer.submit(index, image, mask)
                bar.update(1)
