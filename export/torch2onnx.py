"""Export trained runs to ONNX, verify them against PyTorch, and only then publish the folder.

    OUT/synthmed_stage1.onnx   z -> mask
    OUT/synthmed_stage2.onnx   mask, z -> image
    OUT/synthmed_fused.onnx    z -> image, mask        (when both stages are given)
    OUT/synthmed_single.onnx   z -> image              (the baseline, with --single)
    OUT/synthmed_cstylegan2.onnx  z, class, truncation -> image, mask  (with --cstylegan2)
    OUT/export_manifest.json   files, hashes, I/O contract, provenance, verification results

Everything is written into a temporary folder beside OUT and renamed into place after every
graph passed `onnx.checker`'s full check and the onnxruntime parity check, so a failed or
interrupted export leaves nothing behind. Weights come from each run's EMA generator.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

import synthmed
from synthmed.atomic import staged_folder
from synthmed.contract import (
    CONDITIONAL,
    EXPORT_MANIFEST,
    FUSED,
    MODELS,
    SINGLE,
    STAGE1,
    STAGE2,
    Provenance,
)
from synthmed.errors import SynthmedError, UserInputError
from synthmed.export.graphs import (
    ConditionalGraph,
    FusedGraph,
    SingleGraph,
    Stage1Graph,
    Stage2Graph,
)
from synthmed.export.verify import TOLERANCES, Check, verify
from synthmed.hashing import sha256_file
from synthmed.latents import latents
from synthmed.training.checkpoint import GeneratorInfo, check_pair, latent_size, load_generator
from synthmed.training.models import CStyleGAN2Config

OPSETS = range(17, 22)
DEFAULT_OPSET = 18
# The largest batch the graphs promise to accept; TensorRT profiles and Triton configs use it.
MAX_BATCH = 1024


class ExportError(SynthmedError):
    """The PyTorch -> ONNX conversion itself failed."""


@dataclass
class ExportResult:
    """What was exported and how it verified."""

    out: Path
    models: dict[str, Path]
    checks: list[Check] = field(default_factory=list)


@dataclass
class _Loaded:
    """A run's fp32 reference generator, the generator to export, and its checkpoint info."""

    model: nn.Module
    export: nn.Module
    info: GeneratorInfo

    @property
    def nz(self) -> int:
        """Latent size (generators that take z)."""
        return self.info.model_config.nz


@dataclass
class _Job:
    name: str
    graph: nn.Module
    reference: nn.Module
    make_inputs: Callable[[int], dict[str, np.ndarray]]
    sources: list[GeneratorInfo]


def _latent_inputs(nz: int) -> Callable[[int], dict[str, np.ndarray]]:
    # Latents of the product's own sampling scheme, seeded by batch size for variety.
    return lambda batch: {"z": latents(batch, range(batch), nz)}


def _stage2_inputs(stage1: nn.Module | None, size: int, nz: int) -> Callable[[int], dict]:
    """Real stage I masks when stage I is exported too, else random binary fields; with the
    latents they came from."""

    def make(batch: int) -> dict[str, np.ndarray]:
        z = latents(batch, range(batch), nz)
        if stage1 is not None:
            with torch.no_grad():
                mask = Stage1Graph(stage1)(torch.from_numpy(z)).numpy()
        else:
            rng = np.random.default_rng(batch)
            mask = ((rng.random((batch, size, size)) < 0.1) * 255).astype(np.uint8)
        return {"mask": mask, "z": z}

    return make


def _conditional_inputs(config: CStyleGAN2Config) -> Callable[[int], dict[str, np.ndarray]]:
    """Latents, every class in turn, and truncation from 1 (none) down to 0.5."""

    def make(batch: int) -> dict[str, np.ndarray]:
        return {
            "z": latents(batch, range(batch), config.z_dim),
            "class": np.arange(batch, dtype=np.int64) % config.num_classes,
            "truncation": np.linspace(1.0, 0.5, batch, dtype=np.float32),
        }

    return make


def _jobs(runs: dict[str, Path | None], fp16: bool) -> list[_Job]:
    """Load the runs and pair each graph to export with its fp32 PyTorch reference."""
    dtype = torch.float16 if fp16 else torch.float32
    loaded: dict[str, _Loaded] = {}
    for role, path in runs.items():
        if path is not None:
            model, info = load_generator(path, role=role)
            export_model = copy.deepcopy(model).to(dtype) if fp16 else model
            loaded[role] = _Loaded(model, export_model, info)
    s1, s2 = loaded.get("stage1"), loaded.get("stage2")
    if s1 and s2:
        check_pair(s1.info, s2.info)

    def job(name: str, graph: type[nn.Module], runs: list[_Loaded], inputs: Callable) -> _Job:
        return _Job(
            name,
            graph(*(r.export for r in runs), dtype=dtype),
            graph(*(r.model for r in runs)),
            inputs,
            [r.info for r in runs],
        )

    jobs = []
    if s1:
        jobs.append(job(STAGE1, Stage1Graph, [s1], _latent_inputs(s1.nz)))
    if s2:
        nz = latent_size(s2.info, s1.info if s1 else None)
        inputs = _stage2_inputs(s1.model if s1 else None, s2.info.image_size, nz)
        jobs.append(job(STAGE2, Stage2Graph, [s2], inputs))
    if s1 and s2:
        jobs.append(job(FUSED, FusedGraph, [s1, s2], _latent_inputs(s1.nz)))
    if "single" in loaded:
        single_run = loaded["single"]
        jobs.append(job(SINGLE, SingleGraph, [single_run], _latent_inputs(single_run.nz)))
    if "cstylegan2" in loaded:
        run = loaded["cstylegan2"]
        inputs = _conditional_inputs(run.info.model_config)
        jobs.append(job(CONDITIONAL, ConditionalGraph, [run], inputs))
    return jobs


def _to_onnx(job: _Job, path: Path, opset: int, example: dict[str, np.ndarray]) -> None:
    """Trace `job.graph` with torch.export and write it as ONNX with a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    args = tuple(torch.from_numpy(v) for v in example.values())
    dynamic = tuple({0: batch} for _ in job.graph.input_names)
    # The exporter narrates to stdout and logs a warning per missing torchvision op; keep the
    # CLI's output to what the user needs.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                job.graph.eval(),
                args,
                dynamo=True,
                input_names=list(job.graph.input_names),
                output_names=list(job.graph.output_names),
                dynamic_shapes=dynamic,
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
            program.save(str(path))
    except Exception as e:  # the exporter raises many unrelated types; all mean the same here
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ExportError(
            f"{job.name}: torch.onnx.export failed ({type(e).__name__}: {first_line})"
        ) from e
    finally:
        exporter_log.setLevel(level)


def _annotate(job: _Job, path: Path, precision: str) -> None:
    """Record where the graph came from in its metadata, then run the full checker."""
    model = onnx.load(str(path))
    props = {
        "synthmed.version": synthmed.__version__,
        "synthmed.model": job.name,
        "synthmed.precision": precision,
        "synthmed.sources": json.dumps(
            [
                {
                    "role": info.role,
                    "model": info.model_name,
                    "model_config": asdict(info.model_config),
                    "step": info.step,
                    "weights_sha256": info.metadata.get("weights_sha256"),
                    "normalisation": info.metadata.get("normalisation"),
                    "train": info.metadata.get("train"),
                    "data_fingerprint": info.metadata.get("data", {}).get("fingerprint"),
                }
                for info in job.sources
            ],
            sort_keys=True,
        ),
    }
    onnx.helper.set_model_props(model, props)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{job.name}: onnx.checker rejected the graph ({e})") from e
    onnx.save(model, str(path))


def _io_contract(name: str, path: Path) -> dict[str, dict]:
    """Names, element types and shapes (-1 for the batch axis) of a graph's inputs/outputs,
    checked against synthmed's contract for `name` so a graph that drifted is never published."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values: Sequence[onnx.ValueInfoProto]) -> dict:
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            out[v.name] = {
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "shape": dims,
            }
        return out

    found = {"inputs": describe(graph.input), "outputs": describe(graph.output)}
    spec = MODELS[name]
    for kind, tensors in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        expected = [(t.name, t.numpy_dtype, 1 + len(t.dims)) for t in tensors]
        got = [(n, v["dtype"], len(v["shape"])) for n, v in found[kind].items()]
        if got != expected:
            raise ExportError(
                f"{name}: graph {kind} are {got}, synthmed's contract says {expected}"
            )
    return found


def _provenance(info: GeneratorInfo) -> Provenance:
    """The record that identifies a source run wherever the model goes (see contract)."""
    return Provenance(
        role=info.role,
        step=info.step,
        weights_sha256=info.metadata.get("weights_sha256"),
        data_fingerprint=info.metadata.get("data", {}).get("fingerprint"),
        data=(info.metadata.get("train") or {}).get("data"),
    )


def _check_request(out: Path, opset: int, force: bool, runs: list[Path | None]) -> None:
    if not any(runs):
        raise UserInputError(
            "nothing to export: give --stage1 and/or --stage2, --single, or --cstylegan2"
        )
    if opset not in OPSETS:
        raise UserInputError(
            f"--opset {opset} is not supported (expected {OPSETS[0]} to {OPSETS[-1]})"
        )
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserInputError(f"{out}: folder is not empty; pass --force to replace it")


def export_onnx(
    out: Path | str,
    *,
    stage1: Path | None = None,
    stage2: Path | None = None,
    single: Path | None = None,
    cstylegan2: Path | None = None,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    tolerance: int | None = None,
    max_fraction: float | None = None,
    batch_sizes: Sequence[int] = (1, 3, 16),
    force: bool = False,
    report: Callable[[str], None] = lambda line: None,
) -> ExportResult:
    """Export, check and verify the given runs into `out` (see the module docstring)."""
    out = Path(out)
    runs = {"stage1": stage1, "stage2": stage2, "single": single, "cstylegan2": cstylegan2}
    runs = {role: path for role, path in runs.items() if path is not None}
    _check_request(out, opset, force, list(runs.values()))
    precision = "fp16" if fp16 else "fp32"
    default_tolerance, default_fraction = TOLERANCES[precision]
    tolerance = default_tolerance if tolerance is None else tolerance
    max_fraction = default_fraction if max_fraction is None else max_fraction
    jobs = _jobs(runs, fp16)
    # The folder replaces `out` only once every graph has verified.
    with staged_folder(out) as staging:
        result = ExportResult(out, {})
        manifest = {
            "synthmed_version": synthmed.__version__,
            "opset": opset,
            "precision": precision,
            "max_batch": MAX_BATCH,
            "tolerance": {"grey_levels": tolerance, "max_fraction": max_fraction},
            "models": {},
        }
        for job in jobs:
            path = staging / f"{job.name}.onnx"
            report(f"{job.name}: exporting")
            _to_onnx(job, path, opset, job.make_inputs(2))
            _annotate(job, path, precision)
            tensors = _io_contract(job.name, path)
            checks = verify(
                job.name,
                path,
                job.reference,
                job.make_inputs,
                batch_sizes=batch_sizes,
                tolerance=tolerance,
                max_fraction=max_fraction,
            )
            result.checks += checks
            result.models[job.name] = out / path.name
            manifest["models"][job.name] = {
                "file": path.name,
                "sha256": sha256_file(path),
                **tensors,
                "provenance": [asdict(_provenance(info)) for info in job.sources],
                "verification": [asdict(c) for c in checks],
                **_classes(job),
            }
            worst = max(c.max_abs_diff for c in checks)
            report(f"{job.name}: OK at batch sizes {list(batch_sizes)}, max difference {worst}")
        (staging / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def _classes(job: _Job) -> dict[str, list]:
    """For a conditional model, the label -> class name table and which classes are gray."""
    config = job.sources[0].model_config
    if not isinstance(config, CStyleGAN2Config):
        return {}
    return {"classes": list(config.classes), "grayscale_classes": list(config.grayscale_classes)}
