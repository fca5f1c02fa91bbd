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

from synthmed.client.dataset import FORMATS, DatasetWriter, RunInfo
from synthmed.client.shards import (
    CODECS,
    DEFAULT_CODEC,
    DEFAULT_SHARD_SIZE,
    JOB_COUNT_ENV,
    JOB_INDEX_ENV,
    WEBDATASET,
    Part,
    ShardWriter,
)
from synthmed.client.storage import redact
from synthmed.contract import CONDITIONAL, ENSEMBLE
from synthmed.errors import DataError, UserInputError

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
@click.option(
    "--out",
    required=True,
    help="Dataset folder or fsspec URL (s3://bucket/prefix, file:///data/x, ...).",
)
@click.option("--url", "urls", multiple=True, help="Triton host:port; repeat to share the load.")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Sample i depends on (seed, i)."
)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--concurrency", type=int, default=4, show_default=True, help="In flight per server.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice([*FORMATS, WEBDATASET]),
    default="png",
    show_default=True,
    help=f"png/npz: one file per sample in a folder; {WEBDATASET}: tar shards (--shard-size).",
)
@click.option(
    "--shard-size",
    type=int,
    default=None,
    help=f"Samples per {WEBDATASET} shard.  [default: {DEFAULT_SHARD_SIZE}]",
)
@click.option(
    "--image-codec",
    type=click.Choice(CODECS),
    default=None,
    help=f"How {WEBDATASET} shards store image and mask: png (compact) or npy (raw arrays, "
    f"about 2x the bytes, a tenth of the CPU).  [default: {DEFAULT_CODEC}]",
)
@click.option(
    "--shard",
    "part",
    default=None,
    metavar="K/N",
    help=f"Write only process K's share (of N) of the {WEBDATASET} dataset, beside the other "
    f"processes' [default: ${JOB_INDEX_ENV}/${JOB_COUNT_ENV} when set, as in a Kubernetes "
    "Indexed Job].",
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
    count: int, out: str, urls: tuple[str, ...], protocol: str, seed: int, batch_size: int,
    concurrency: int, fmt: str, shard_size: int | None, image_codec: str | None,
    part: str | None, resume: bool, force: bool, workers: int, serve: bool,
    model_repository: Path | None, model_kind: str, label: str | None, truncation: float | None,
) -> None:  # fmt: skip
    """Synthesize COUNT labelled pairs into --out: images/, masks/, manifest.jsonl, a dataset card.

    With --url (or --serve) the samples come from Triton; without, from the repository's ONNX
    models run in-process. Either way sample i is the same. Files are written atomically, so a
    killed run lists no truncated image, and --resume continues it with no holes or duplicates.
    --format webdataset writes tar shards instead, to a folder or an fsspec URL such as
    s3://bucket/prefix; with --shard K/N many processes write one dataset together (a rerun of
    the same command continues its own shards), and `synthmed dataset verify` checks the whole.
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
    shards = {"shard_size": shard_size, "codec": image_codec, "part": part}
    open_writer = _writer_for(out, fmt, shards, resume, force, workers)
    model = MODELS[model_kind]
    repo = model_repository or BUNDLED_REPOSITORY
    with contextlib.ExitStack() as stack:
        if serve:
            urls = (stack.enter_context(_local_server(repo)).url(protocol),)
        generator = _open_generator(model, urls, protocol, concurrency, repo)
        info, produce = _producer(generator, seed, batch_size, label, truncation)
        written = _write(open_writer(_run_info(info, seed, count, fmt)), produce)
    click.echo(f"wrote {written} synthetic image/mask pairs to {out}")


def _writer_for(
    out: str, fmt: str, shards: dict, resume: bool, force: bool, workers: int
) -> Callable[[RunInfo], DatasetWriter | ShardWriter]:
    """Check the output options before any server starts; returns how to open the writer
    once the generator (and so the run's identity) is known. `shards`: the webdataset-only
    options as given (None: not given)."""
    if fmt != WEBDATASET:
        options = {"shard_size": "--shard-size", "codec": "--image-codec", "part": "--shard"}
        for key, option in options.items():
            if shards[key] is not None:
                raise UserInputError(f"{option} applies to --format {WEBDATASET} only")
        if Part.from_env() is not None:
            raise UserInputError(
                f"${JOB_INDEX_ENV} is set (a Kubernetes Indexed Job): its pods share one "
                f"dataset only with --format {WEBDATASET}"
            )
        return lambda run: DatasetWriter(out, run, resume=resume, force=force, workers=workers)
    part = Part.parse(shards["part"]) if shards["part"] is not None else Part.from_env()
    size = DEFAULT_SHARD_SIZE if shards["shard_size"] is None else shards["shard_size"]
    if size < 1:
        raise UserInputError(f"--shard-size must be >= 1, got {size}")
    codec = shards["codec"] or DEFAULT_CODEC
    return lambda run: ShardWriter(
        out, run, shard_size=size, codec=codec, part=part, resume=resume, force=force,
        workers=workers,
    )  # fmt: skip


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


def _run_info(info: dict, seed: int, count: int, fmt: str) -> RunInfo:
    """The run's identity for the dataset writer: generator, weights, data it learned from."""
    data = info.pop("trained_on")
    # The card's reproduce command: the same run, minus how this particular process began it.
    args = _without_process_options(sys.argv[1:])
    command = shlex.join(["synthmed", *args])
    return RunInfo(
        seed=seed, count=count, format=fmt, generator=info,
        trained_on="; ".join(data) or "unknown", command=command,
    )  # fmt: skip


def _without_process_options(args: list[str]) -> list[str]:
    """Drop --resume, --force and --shard K/N: they say how one process took part, not what
    the dataset is. A password inside a URL (--out ftp://user:secret@...) is never recorded."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--resume", "--force") or arg.startswith("--shard="):
            continue
        elif arg == "--shard":
            skip = True
        else:
            kept.append(redact(arg))
    return kept


def _write(writer: DatasetWriter | ShardWriter, produce: Produce) -> int:
    """Write the writer's pending samples, with a progress bar in images/s; how many."""
    from tqdm import tqdm

    with writer:
        pending = writer.pending()
        with tqdm(total=len(pending), desc="generate", unit="img") as bar:
            for index, image, mask in produce(pending):
                writer.submit(index, image, mask)
                bar.update(1)
    return len(pending)


@click.group("dataset")
def dataset() -> None:
    """Inspect datasets that `synthmed generate` wrote."""


@dataset.command("verify")
@click.argument("url")
@click.option("--workers", type=int, default=8, show_default=True, help="Shards read at once.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify_cmd(url: str, workers: int, quiet: bool) -> None:
    """Check the dataset at URL (a folder or fsspec URL) against its run.json: every requested
    sample exactly once, every shard's sha256 (webdataset), every file decodes to an image and
    its mask. Names the missing sample ranges; exits non-zero unless complete and intact."""
    from synthmed.client.verify import verify

    verdict = verify(url, workers=workers, progress=not quiet)
    for problem in verdict.problems:  # the report; the verdict is the one line on stderr
        click.echo(f"problem: {problem}")
    if not verdict.ok:
        raise DataError(verdict.summary())
    click.echo(verdict.summary())
