"""Write a Triton model repository from an export: the dual GAN and/or the conditional model.

    REPO/synthmed_stage1/config.pbtxt + 1/model.onnx (or model.plan, or model.py + model.onnx)
    REPO/synthmed_stage2/...
    REPO/synthmed_fused/...       z -> image, mask in one model (runtimes without ensembles)
    REPO/synthmed/config.pbtxt    the ensemble: z -> stage I -> stage II -> image, mask
    REPO/synthmed_cstylegan2/...  z, class, truncation -> image, mask (class-conditional)

The dual-GAN models are written when the export holds both stages, the conditional model when
it holds `synthmed_cstylegan2`; an export may hold either or both.

Configs are built as `ModelConfig` protobufs (tritonclient's model_config_pb2) and printed
with protobuf's text format, so every field name is checked by the schema rather than by a
string template. Three backends: `onnxruntime` and `tensorrt` for Triton's native GPU
backends (NVIDIA's container), `python` for a Triton build with only the python backend (the
pip-installed server, CPU machines), which runs the same ONNX file with onnxruntime.

Every composing model carries `model_warmup`, so Triton reports it READY only once each
instance has run a request, and the first clients do not pay for lazy set-up; the instance
kind (CPU or GPU) follows the backend unless asked for, since CPU-only nodes need KIND_CPU.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from synthmed.atomic import replace_dir, staged_folder, write_text_atomic
from synthmed.contract import (
    CONDITIONAL,
    ENSEMBLE,
    EXPORT_MANIFEST,
    FUSED,
    IMAGE,
    MASK,
    MODELS,
    PARAM_ALLOW_SPINNING,
    PARAM_CLASSES,
    PARAM_GRAYSCALE_CLASSES,
    PARAM_INTRA_OP_THREADS,
    PARAM_ONNX_FILE,
    PARAM_PROVENANCE,
    STAGE1,
    STAGE2,
    Z,
    parse_provenance,
    provenance_json,
)
from synthmed.errors import UserInputError

BACKENDS = ("onnxruntime", "tensorrt", "python")
INSTANCE_KINDS = ("cpu", "gpu")
# The python backend's model.py runs onnxruntime's CPU provider only (a CUDA provider inside
# the python backend has crashed its stub for others), so its instances are CPU instances;
# the native backends run on the GPU unless told otherwise. Triton refuses KIND_GPU on a node
# without GPUs, whatever the backend: CPU-only nodes need `cpu`.
_DEFAULT_KIND = {"onnxruntime": "gpu", "tensorrt": "gpu", "python": "cpu"}
_KINDS = {"cpu": mc.ModelInstanceGroup.KIND_CPU, "gpu": mc.ModelInstanceGroup.KIND_GPU}
PYTHON_MODEL = Path(__file__).with_name("python_backend") / "model.py"
_DTYPES = {
    "float32": mc.TYPE_FP32,
    "float16": mc.TYPE_FP16,
    "uint8": mc.TYPE_UINT8,
    "int64": mc.TYPE_INT64,
}
_MODEL_FILE = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}


@dataclass(frozen=True)
class RepositoryOptions:
    """How the models are served: batching, instances (count and kind), warm-up, backend and
    version.

    `max_inflight_requests` bounds how far a fast stage I may run ahead of a slow stage II
    inside the ensemble; the field exists from Triton 25.11 on, so it is left out (0) unless
    asked for, or older servers (such as the pip-installed 2.51) would refuse the config.
    """

    backend: str = "python"
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = 2000
    instances: int = 1
    tensorrt_accelerator: bool = False
    max_inflight_requests: int = 0
    version: int = 1
    fused: bool = True
    cpu_threads: int = 0  # python backend: onnxruntime intra-op threads per instance (0: all)
    cpu_spinning: bool = False  # python backend: let idle onnxruntime threads spin-wait
    instance_kind: str | None = None  # "cpu" or "gpu"; None: the backend's own (_DEFAULT_KIND)
    warmup: bool = True  # model_warmup on every composing model (see _warmup)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserInputError(
                f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.instance_kind not in (None, *INSTANCE_KINDS):
            raise UserInputError(
                f"--instance-kind must be one of {', '.join(INSTANCE_KINDS)}, "
                f"got {self.instance_kind!r}"
            )
        if self.max_batch_size < 1 or self.instances < 1 or self.version < 1:
            raise UserInputError("--max-batch-size, --instances and --version must be >= 1")
        too_big = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if too_big:
            raise UserInputError(
                f"preferred batch sizes {too_big} are outside 1..--max-batch-size "
                f"{self.max_batch_size}"
            )
        if self.tensorrt_accelerator and self.backend != "onnxruntime":
            raise UserInputError("--tensorrt-accelerator applies to the onnxruntime backend only")
        if self.backend == "tensorrt" and self.kind == "cpu":
            raise UserInputError(
                "--instance-kind cpu cannot serve --backend tensorrt: a TensorRT plan runs on a "
                "GPU only (use --backend onnxruntime or python on CPU nodes)"
            )
        if self.backend == "python" and self.kind == "gpu":
            raise UserInputError(
                "--instance-kind gpu does not apply to --backend python: its model.py runs "
                "onnxruntime on the CPU (use --backend onnxruntime or tensorrt for GPU instances)"
            )
        if self.tensorrt_accelerator and self.kind == "cpu":
            # Triton loads the accelerator block on a CPU instance and ignores it.
            raise UserInputError(
                "--tensorrt-accelerator needs GPU instances but --instance-kind cpu asks for CPU "
                "ones: drop one of the two"
            )

    @property
    def kind(self) -> str:
        """The instance kind written: the one asked for, else the backend's own."""
        return self.instance_kind or _DEFAULT_KIND[self.backend]


@dataclass
class ServedModel:
    """One served model: its I/O from the export manifest and where its file comes from."""

    name: str
    inputs: dict[str, dict]
    outputs: dict[str, dict]
    source: Path
    extra_files: list[Path] = field(default_factory=list)
    provenance: str = "[]"  # JSON: the contract's Provenance record of each source run
    defaults: dict[str, tuple[str, str]] = field(default_factory=dict)  # input -> (key, value)
    parameters: dict[str, str] = field(default_factory=dict)  # extra config parameters


def _tensors(cls: type, specs: dict[str, dict]) -> list:
    """model_config_pb2 inputs/outputs from {name: {dtype, shape}}, batch axis dropped.

    A per-sample scalar (ONNX shape [B]) has no dims left once the batch axis goes, and
    Triton wants at least one: the API shape is [B, 1] (`dims: [1]`), and `reshape: []`
    makes Triton hand the backend [B] (Triton's model-configuration docs, "Reshape"). Some
    python-backend releases ignored `reshape` (server issue #5759), so our model.py also
    reshapes each feed to the graph's rank itself.
    """
    tensors = []
    for name, s in specs.items():
        dims = s["shape"][1:]
        tensor = cls(name=name, data_type=_DTYPES[s["dtype"]], dims=dims or [1])
        if not dims:
            tensor.reshape.SetInParent()  # present and empty: shape []
        tensors.append(tensor)
    return tensors


def model_config(spec: ServedModel, options: RepositoryOptions) -> mc.ModelConfig:
    """The config of one composing (non-ensemble) model."""
    config = mc.ModelConfig(
        name=spec.name,
        max_batch_size=options.max_batch_size,
        input=_tensors(mc.ModelInput, spec.inputs),
        output=_tensors(mc.ModelOutput, spec.outputs),
        # Triton's ensemble scheduler does not batch: each composing model batches itself.
        dynamic_batching=mc.ModelDynamicBatching(
            preferred_batch_size=list(options.preferred_batch_sizes),
            max_queue_delay_microseconds=options.max_queue_delay_us,
        ),
        version_policy=mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1)),
        default_model_filename=_MODEL_FILE[options.backend],
    )
    config.instance_group.append(
        mc.ModelInstanceGroup(kind=_KINDS[options.kind], count=options.instances)
    )
    if options.backend == "tensorrt":
        config.platform = "tensorrt_plan"
    else:
        config.backend = options.backend
    # Which weights this is, readable by clients through the model config (dataset manifests).
    config.parameters[PARAM_PROVENANCE].string_value = spec.provenance
    for key, value in spec.parameters.items():
        config.parameters[key].string_value = value
    for name, (key, value) in spec.defaults.items():
        config.parameters[key].string_value = value
        # Only our model.py fills an omitted input; ONNX Runtime and TensorRT need every
        # graph input, so on native backends the input stays required.
        if options.backend == "python":
            next(t for t in config.input if t.name == name).optional = True
    if options.backend == "python":
        config.parameters[PARAM_ONNX_FILE].string_value = "model.onnx"
        config.parameters[PARAM_INTRA_OP_THREADS].string_value = str(options.cpu_threads)
        config.parameters[PARAM_ALLOW_SPINNING].string_value = str(int(options.cpu_spinning))
    if options.tensorrt_accelerator:
        accelerator = mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(name="tensorrt")
        accelerator.parameters["precision_mode"] = "FP16"
        accelerator.parameters["max_workspace_size_bytes"] = str(1 << 30)
        config.optimization.execution_accelerators.gpu_execution_accelerator.append(accelerator)
    if options.warmup:
        config.model_warmup.extend(_warmup(config))
    return config


def _warmup(config: mc.ModelConfig) -> list[mc.ModelWarmup]:
    """Requests Triton runs on each instance of the model before it marks the model READY.

    The first request of a shape pays for lazy set-up: onnxruntime's memory arena and kernel
    choices, cuDNN's algorithm search, the engine onnxruntime's TensorRT provider builds for
    the shapes it has seen. Triton sends a warm-up sample of batch size B as B one-sample
    requests in one execute call, as the dynamic batcher does, so batch 1 and max_batch_size
    (the two ends of what the batcher forms) leave no client request paying for it.

    Zeros, not `random_data`: Triton fills that with random bytes, which as FP32 are NaN and
    Inf and as an INT64 class label are out of range (a failed warm-up fails the load). Zero
    is a valid latent, an empty mask, class 0 and psi 0, and the compute does not depend on
    the values. Every input is given, optional ones too: native backends need them all.
    """
    samples = []
    for batch in sorted({1, config.max_batch_size}):
        sample = mc.ModelWarmup(name=f"zeros_batch_{batch}", batch_size=batch)
        for tensor in config.input:
            sample.inputs[tensor.name].CopyFrom(
                mc.ModelWarmup.Input(data_type=tensor.data_type, dims=tensor.dims, zero_data=True)
            )
        samples.append(sample)
    return samples


def ensemble_config(
    stage1: ServedModel, stage2: ServedModel, options: RepositoryOptions
) -> mc.ModelConfig:
    """`synthmed`: z -> stage I -> stage II (which takes the same z for its noise); outputs
    stage II's image and stage I's mask.

    No model_warmup: Triton refuses one on an ensemble ("model_warmup can not be specified for
    ensemble"); its steps warm up themselves, so the ensemble is ready warm.
    """
    expected, got = stage1.inputs[Z.name]["shape"], stage2.inputs.get(Z.name, {}).get("shape")
    if got != expected:
        raise UserInputError(
            f"{STAGE2} takes z of shape {got} but {STAGE1} draws {expected}: the ensemble gives "
            "both the same z (an export from an older synthmed: export it again)"
        )
    config = mc.ModelConfig(
        name=ENSEMBLE,
        platform="ensemble",
        max_batch_size=options.max_batch_size,
        input=_tensors(mc.ModelInput, stage1.inputs),
        output=_tensors(mc.ModelOutput, {**stage2.outputs, **stage1.outputs}),
    )
    # input_map: composing model's tensor -> ensemble tensor; output_map likewise.
    config.ensemble_scheduling.step.append(
        mc.ModelEnsembling.Step(
            model_name=STAGE1,
            model_version=-1,
            input_map={Z.name: Z.name},
            output_map={MASK.name: MASK.name},
        )
    )
    config.ensemble_scheduling.step.append(
        mc.ModelEnsembling.Step(
            model_name=STAGE2,
            model_version=-1,
            input_map={MASK.name: MASK.name, Z.name: Z.name},
            output_map={IMAGE.name: IMAGE.name},
        )
    )
    if options.max_inflight_requests:
        config.ensemble_scheduling.max_inflight_requests = options.max_inflight_requests
    return config


def to_pbtxt(config: mc.ModelConfig) -> str:
    """The config.pbtxt text of a config."""
    return text_format.MessageToString(config)


def parse_pbtxt(text: str) -> mc.ModelConfig:
    """Parse config.pbtxt text back into a ModelConfig (raises on unknown fields)."""
    return text_format.Parse(text, mc.ModelConfig())


def _served_names(onnx_dir: Path, models: dict, options: RepositoryOptions) -> list[str]:
    """The models to write: both stages (+ fused) if exported, the conditional model if so."""
    stages = [name for name in (STAGE1, STAGE2) if name in models]
    if len(stages) == 1:
        missing = STAGE2 if stages == [STAGE1] else STAGE1
        raise UserInputError(
            f"{onnx_dir}: the repository needs {missing}, which the export lacks "
            f"(it has {stages[0]}; the dual GAN needs both stages)"
        )
    names = stages + ([FUSED] if stages and options.fused and FUSED in models else [])
    names += [CONDITIONAL] if CONDITIONAL in models else []
    if not names:
        raise UserInputError(
            f"{onnx_dir}: nothing to serve: expected {STAGE1} + {STAGE2} or {CONDITIONAL} in "
            f"the export, got {', '.join(sorted(models)) or 'no models'}"
        )
    return names


def _specs(
    onnx_dir: Path, engines_dir: Path | None, options: RepositoryOptions
) -> list[ServedModel]:
    manifest_path = onnx_dir / EXPORT_MANIFEST
    if not manifest_path.is_file():
        raise UserInputError(
            f"{onnx_dir}: no {EXPORT_MANIFEST}; is it a `synthmed export onnx` folder?"
        )
    models = json.loads(manifest_path.read_text())["models"]
    specs = []
    for name in _served_names(onnx_dir, models, options):
        entry = models[name]
        if options.backend == "tensorrt":
            if engines_dir is None:
                raise UserInputError(
                    "--backend tensorrt needs --engines DIR (from `synthmed export tensorrt`)"
                )
            source = engines_dir / f"{name}.plan"
            extra = [engines_dir / f"{name}.plan.json"]
        else:
            source, extra = onnx_dir / entry["file"], []
        if not source.is_file():
            raise UserInputError(f"{source}: missing")
        extras = [p for p in extra if p.is_file()]
        spec = ServedModel(name, entry["inputs"], entry["outputs"], source, extras)
        if "provenance" not in entry:
            raise UserInputError(
                f"{manifest_path}: {name} has no provenance (an export from an older "
                "synthmed); export it again with `synthmed export onnx`"
            )
        spec.provenance = provenance_json(parse_provenance(entry["provenance"]))
        optional = MODELS[name].optional or {}
        spec.defaults = {
            k: (key, str(value)) for k, (key, value) in optional.items() if k in spec.inputs
        }
        if "classes" in entry:
            # Label k is classes[k]; clients read the names from here (JSON).
            spec.parameters[PARAM_CLASSES] = json.dumps(entry["classes"])
            gray = entry.get("grayscale_classes", [])
            spec.parameters[PARAM_GRAYSCALE_CLASSES] = json.dumps(gray)
        specs.append(spec)
    return specs


def _stage_model(spec: ServedModel, options: RepositoryOptions, staging: Path) -> None:
    version = staging / spec.name / str(options.version)
    version.mkdir(parents=True)
    if options.backend == "python":
        shutil.copy2(PYTHON_MODEL, version / "model.py")
        shutil.copy2(spec.source, version / "model.onnx")
    else:
        shutil.copy2(spec.source, version / _MODEL_FILE[options.backend])
    for extra in spec.extra_files:
        shutil.copy2(extra, version / extra.name)
    (staging / spec.name / "config.pbtxt").write_text(to_pbtxt(model_config(spec, options)))


def write_repository(
    onnx_dir: Path | str,
    out: Path | str,
    options: RepositoryOptions,
    *,
    engines_dir: Path | str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Write (or add a version to) a model repository; returns the model names written.

    Each model's version folder is staged beside `out` and renamed into place, and each
    config.pbtxt is replaced atomically, so a running Triton never sees half a model. An
    existing version is replaced only with `overwrite`.
    """
    onnx_dir, out = Path(onnx_dir), Path(out)
    specs = _specs(onnx_dir, Path(engines_dir) if engines_dir else None, options)
    existing = [s.name for s in specs if (out / s.name / str(options.version)).exists()]
    if existing and not overwrite:
        raise UserInputError(
            f"{out}: version {options.version} of {', '.join(existing)} exists; "
            "pass --overwrite to replace it or --version N to add another"
        )
    by_name = {s.name: s for s in specs}
    # Built before anything is written: a stage II without z is refused with `out` untouched.
    ensemble = (
        ensemble_config(by_name[STAGE1], by_name[STAGE2], options) if STAGE1 in by_name else None
    )
    out.mkdir(parents=True, exist_ok=True)
    # Models are moved out of the staging folder one by one, each replacing only itself.
    with staged_folder(out, publish=False) as staging:
        for spec in specs:
            _stage_model(spec, options, staging)
        names = [s.name for s in specs]
        if ensemble is not None:
            # Triton needs a version folder for the ensemble too; git keeps no empty folders.
            (staging / ENSEMBLE / str(options.version)).mkdir(parents=True)
            (staging / ENSEMBLE / str(options.version) / ".gitkeep").touch()
            (staging / ENSEMBLE / "config.pbtxt").write_text(to_pbtxt(ensemble))
            names.append(ENSEMBLE)
        for name in names:
            _install(staging / name, out / name, options.version)
    return names


def _install(staged: Path, target: Path, version: int) -> None:
    """Move one staged model's version folder and config into the repository."""
    target.mkdir(exist_ok=True)
    replace_dir(staged / str(version), target / str(version))
    write_text_atomic(target / "config.pbtxt", (staged / "config.pbtxt").read_text())


def repository_models(repo: Path) -> Sequence[str]:
    """Names of the models in a repository (folders with a config.pbtxt), sorted."""
    return sorted(p.parent.name for p in Path(repo).glob("*/config.pbtxt"))
