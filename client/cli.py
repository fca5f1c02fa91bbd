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
# --model choice -> the Triton model it names (the repository writer's names).
MODELS = {"dual": "synthmed", "cstylegan2": "synthmed_cstylegan2"}


def _conditional_info(classes: Sequence[str], label: int | None, psi: float | None) -> dict:
    """What a dataset records of a conditional request: label, class name and psi."""
    if label is None:
        return {}
    return {"label": label, "class_name": classes[label], "truncation": psi}


def _through_triton(
    urls: Sequence[str], protocol: str, model: str, seed: int, batch_size: int,
    concurrency: int, label: str | None, truncation: float | None,
):  # fmt: skip
    from synthmed.client.client import SynthMedClient
    from synthmed.client.conditional import request_settings

    client = SynthMedClient(urls, protocol=protocol, model=model, max_in_flight=concurrency)
    label_k, psi = request_settings(client.contract, label, truncation)
    info = {
        "model": client.model,
        "model_version": client.contract.version,
        "servers": list(client.urls),
        "sources": client.provenance(),
        "image_size": client.contract.height,
        **_conditional_info(client.classes, label_k, psi),
    }

    def produce(indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        return client.generate(
            len(indices), seed=seed, label=label_k, truncation=psi, indices=indices,
            batch_size=batch_size,
        )  # fmt: skip

    return info, produce


def _sources(repo: Path, names: Sequence[str]) -> list[dict]:
    """Provenance of the repository models `names` (the writer's synthmed_provenance)."""
    import json

    from synthmed.serving.runtime import model_parameters

    sources = []
    for name in names:
        value = model_parameters(repo, name).get("synthmed_provenance", "")
        sources += json.loads(value) if value else [{"model": name}]
    return sources


def _in_process(
    repo: Path, model: str, seed: int, batch_size: int, label: str | None,
    truncation: float | None,
):  # fmt: skip
    from synthmed.latents import latents

    try:
        from synthmed.serving.repository import CONDITIONAL, STAGE1, STAGE2
        from synthmed.serving.runtime import ConditionalRuntime, InProcessRuntime
    except ImportError as e:
        raise UserInputError(
            "generating without --url runs the models in-process and needs onnxruntime: "
            "pip install 'synthmed[serve]', or pass --url of a Triton server"
        ) from e
    if model == CONDITIONAL:
        return _conditional_in_process(
            ConditionalRuntime(repo), seed, batch_size, label, truncation
        )
    runtime = InProcessRuntime(repo)
    info = {
        "model": model,
        "model_version": "in-process",
        "repository": str(repo.resolve()),
        "sources": _sources(repo, (STAGE1, STAGE2)),
        "image_size": runtime.image_size,
    }

    def produce(indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, len(indices), batch_size):
            batch = list(indices[start : start + batch_size])
            images, masks = runtime.generate(latents(seed, batch, runtime.nz))
            yield from zip(batch, images, masks, strict=True)

    return info, produce


def _conditional_in_process(
    runtime, seed: int, batch_size: int, label: str | None, truncation: float | None
):  # noqa: ANN001 (a ConditionalRuntime, imported lazily)
    from synthmed.client.conditional import batch_inputs, request_settings
    from synthmed.client.contract import Contract

    size = runtime.image_size
    contract = Contract(
        runtime.name, "in-process", runtime.nz, size, size, conditional=True,
        classes=runtime.classes, default_truncation=runtime.default_truncation,
    )  # fmt: skip
    label_k, psi = request_settings(contract, label, truncation)
    info = {
        "model": runtime.name,
        "model_version": "in-process",
        "repository": str(runtime.repo.resolve()),
        "sources": _sources(runtime.repo, (runtime.name,)),
        "image_size": size,
        **_conditional_info(runtime.classes, label_k, psi),
    }

    def produce(indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, len(indices), batch_size):
            batch = list(indices[start : start + batch_size])
            inputs = batch_inputs(seed, batch, runtime.nz, label_k, psi)
            images, masks = runtime.generate(inputs["z"], inputs["class"], inputs["truncation"])
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
@click.option(
    "--model",
    "model_kind",
    type=click.Choice(sorted(MODELS)),
    default="dual",
    show_default=True,
    help="dual: the two-stage GAN ensemble `synthmed`; cstylegan2: the class-conditional "
    "StyleGAN2 `synthmed_cstylegan2` (needs --label).",
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
        if urls:
            info, produce = _through_triton(
                urls, protocol, model, seed, batch_size, concurrency, label, truncation
            )
        else:
            info, produce = _in_process(repo, model, seed, batch_size, label, truncation)
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

    info["weights_sha256"] = {
        s["role"]: s.get("weights_sha256") for s in info["sources"] if "role" in s
    }
    # A conditional model learns from several datasets (one per class): a list.
    data = sorted({str(d) for s in info["sources"] if s.get("data") for d in _as_list(s["data"])})
    # The card's reproduce command: the same run, minus how this particular process began it.
    args = [a for a in sys.argv[1:] if a not in ("--resume", "--force")]
    command = shlex.join(["synthmed", *args])
    return RunInfo(
        seed=seed, count=count, format=fmt, generator=info,
        trained_on="; ".join(data) or "unknown", command=command,
    )  # fmt: skip


def _as_list(value: object) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


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
