"""`synthmed generate`: a labelled synthetic dataset on disk, through Triton or in-process."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from synthmed.contract import CONDITIONAL, ENSEMBLE
from synthmed.errors import UserInputError

if TYPE_CHECKING:
    from synthmed.sampling import Generator

BUNDLED_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
Produce = Callable[[Sequence[int]], Iterator[tuple[int, np.ndarray, np.ndarray]]]
# --model choice -> the model it names.
MODELS = {"dual": ENSEMBLE, "cstylegan2": CONDITIONAL}


def _open_generator(
    model: str, urls: Sequence[str], protocol: str, concurrency: int, repo: Path
) -> Generator:
    """Triton when given servers, else the repository's ONNX graphs in-process: either way a
    Generator with the same contract and the same samples."""
    if urls:
        from synthmed.client.client import SynthMedClient

        return SynthMedClient(urls, protocol=protocol, model=model, max_in_flight=concurrency)
    try:
        from synthmed.serving.runtime import ConditionalRuntime, InProcessRuntime
    except ImportError as e:
        raise UserInputError(
            "generating without --url runs the models in-process and needs onnxruntime: "
            "pip install 'synthmed[serve]', or pass --url of a Triton server"
        ) from e
    return ConditionalRuntime(repo) if model == CONDITIONAL else InProcessRuntime(repo)


def _producer(
    generator: Generator, seed: int, batch_size: int, label: str | None, psi: float | None
) -> tuple[dict, Produce]:
    """What the dataset records of the generator, and the call that makes the samples."""
    contract, sources = generator.contract, generator.provenance()
    label_k, psi = contract.request(label, psi)  # the one place a label is resolved
    info = {
        "model": contract.model,
        "model_version": contract.version,
        **generator.location(),
        "sources": [asdict(p) for p in sources],
        "image_size": contract.height,
        "weights_sha256": {p.role: p.weights_sha256 for p in sources if p.role},
        # A conditional model learns from several datasets (one per class).
        "trained_on": sorted({d for p in sources for d in p.data_folders()}),
    }
    if label_k is not None:
        info.update(label=label_k, class_name=contract.classes[label_k], truncation=psi)

    def produce(indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        return generator.generate_indices(
            indices, seed=seed, label=label_k, truncation=psi, batch_size=batch_size
        )

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
@click.option(
    "--model",
    "model_kind",
    type=click.Choice(sorted(MODELS)),
    default="dual",
    show_default=True,
    help=f"dual: the two-stage GAN ensemble `{ENSEMBLE}`; cstylegan2: the class-conditional "
    f"StyleGAN2 `{CONDITIONAL}` (needs --label).",
)
@click.option(
    "--label",
    default=None,
    help="Class to generate with --model cstylegan2: a class name or index (see the error "
    "for the served model's classes).",
)
@click.option(
    "--truncation",
    type=float,
    default=None,
    help="Truncation psi with --model cstylegan2 (1.0: none; lower trades variety for "
    "typical samples).  [default: the model's, 1.0]",
)
def generate(
    count: int, out: Path, urls: tuple[str, ...], protocol: str, seed: int, batch_size: int,
    concurrency: int, fmt: str, resume: bool, force: bool, workers: int, serve: bool,
    model_repository: Path | None, model_kind: str, label: str | None, truncation: float | None,
) -> None:  # fmt: skip
    """Synthesize COUNT labelled pairs into --out: images/, masks/, manifest.jsonl, a dataset card.

    With --url (or --serve) the samples come from Triton; without, from the repository's ONNX
    models run in-process. Either way sample i is the same. Files are written atomically, so a
    killed run lists no truncated image, and --resume continues it with no holes or duplicates.
    --model cstylegan2 --label K makes every sample of class K (its mask too); the dataset
    card and manifest record the model, label, class name and truncation.
    """
    if count < 1:
        raise UserInputError(f"--count must be >= 1, got {count}")
    if batch_size < 1 or concurrency < 1:
        raise UserInputError("--batch-size and --concurrency must be >= 1")
    if seed < 0:
        raise UserInputError(f"--seed must be >= 0, got {seed}")
    if serve and urls:
        raise UserInputError("--serve starts its own server; leave out --url")
    _check_model_options(model_kind, label, truncation)
    model = MODELS[model_kind]
    repo = model_repository or BUNDLED_REPOSITORY
    with contextlib.ExitStack() as stack:
        if serve:
            urls = (stack.enter_context(_local_server(repo)).url(protocol),)
        generator = _open_generator(model, urls, protocol, concurrency, repo)
        info, produce = _producer(generator, seed, batch_size, label, truncation)
        _write(out, _run_info(info, seed, count, fmt), produce, resume, force, workers)
    click.echo(f"wrote {count} synthetic image/mask pairs to {out}")


def _check_model_options(model_kind: str, label: str | None, truncation: float | None) -> None:
    """--label and --truncation belong to the conditional model; it cannot go without a label."""
    if model_kind == "cstylegan2" and label is None:
        raise UserInputError("--model cstylegan2 needs --label (a class name or index)")
    if model_kind != "cstylegan2":
        given = [f for f, v in (("--label", label), ("--truncation", truncation)) if v is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise UserInputError(
                f"{' and '.join(given)} {verb} to --model cstylegan2 only, got --model {model_kind}"
            )


def _local_server(repo: Path):  # noqa: ANN202 (a TritonServer, imported lazily)
    """A tritonserver for `repo` on free loopback ports (a context manager: start, stop)."""
    from synthmed.serving.server import TritonServer, free_ports

    http, grpc, metrics = free_ports()
    return TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, echo_log=False)


def _run_info(info: dict, seed: int, count: int, fmt: str):
    """The run's identity for the dataset writer: generator, weights, data it learned from."""
    from synthmed.client.dataset import RunInfo

    data = info.pop("trained_on")
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
