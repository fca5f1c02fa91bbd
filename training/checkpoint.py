"""The checkpoint contract: one directory per run that export and sampling can rebuild from.

    RUN/config.json                  what the generator is (registry name + config), how its
                                     tensors are normalised, what data and settings trained it
    RUN/model.safetensors            the EMA generator weights: what export and sampling use
    RUN/training_state.safetensors   live generator, discriminator, EMA and optimizer state,
                                     for a resume that continues exactly where training stopped

Weights are only ever read from safetensors: a checkpoint from someone else cannot run code.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from synthmed.atomic import atomic_path, staged_folder, write_text_atomic
from synthmed.errors import CheckpointError
from synthmed.hashing import sha256_file
from synthmed.training.models import create_model
from synthmed.training.models.registry import config_from_dict

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
SNAPSHOTS_DIR = "snapshots"  # RUN/snapshots/step_NNNNNN/: kept generators (--snapshot-every)
FORMAT = "synthmed-checkpoint/1"

# How each role's tensors map to pixels; export bakes the same conversions into the graph.
NORMALISATION = {
    "stage1": {
        "input": "z ~ N(0, 1), float32 [nz]",
        "output": "tanh in [-1, 1]; mask = output > 0, each piece kept only if its output "
        "exceeds model_config.mask_confidence somewhere along it",
    },
    "stage2": {
        "input": "mask in {-1, 1} (1 = vessel)",
        "output": "tanh in [-1, 1]; pixel = (x + 1) * 127.5",
    },
    "single": {
        "input": "z ~ N(0, 1), float32 [nz]",
        "output": "tanh in [-1, 1]; pixel = (x + 1) * 127.5",
    },
    "cstylegan2": {
        "input": "z ~ N(0, 1), float32 [z_dim]; class int64 in [0, classes); truncation psi",
        "output": "image channels about [-1, 1], pixel = clamp((x + 1) * 127.5); "
        "last channel: mask = output > 0",
    },
}


@dataclass(frozen=True)
class GeneratorInfo:
    """What config.json says about a generator checkpoint."""

    path: Path
    role: str
    model_name: str
    model_config: Any
    step: int
    metadata: dict[str, Any]

    @property
    def image_size(self) -> int:
        """Side of the square images this generator makes or takes."""
        return int(self.model_config.size)


def check_pair(stage1: GeneratorInfo, stage2: GeneratorInfo) -> None:
    """Refuse a stage I and a stage II that cannot run as one pipeline: other image sizes, or
    a stage II that spreads its noise from latents of another length than stage I's z."""
    size1, size2 = stage1.image_size, stage2.image_size
    if size1 != size2:
        raise CheckpointError(
            f"stage I ({stage1.path}) makes {size1}x{size1} masks but stage II "
            f"({stage2.path}) takes {size2}x{size2}"
        )
    config = stage2.model_config
    if getattr(config, "noise_channels", 0) and config.nz != stage1.model_config.nz:
        raise CheckpointError(
            f"stage II ({stage2.path}) spreads its noise from latents of {config.nz} values "
            f"but stage I ({stage1.path}) draws {stage1.model_config.nz} (train both with one --nz)"
        )


def latent_size(stage2: GeneratorInfo, stage1: GeneratorInfo | None) -> int:
    """The length of the z a stage II graph takes: its own when it renders from noise, else
    stage I's (the z it is paired with and ignores) or its config's default."""
    config = stage2.model_config
    if stage1 is not None and not getattr(config, "noise_channels", 0):
        return int(stage1.model_config.nz)
    return int(config.nz)


def _state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_generator(
    run_dir: Path,
    generator: nn.Module,
    *,
    role: str,
    model_name: str,
    model_config: Any,
    step: int,
    metadata: dict[str, Any],
) -> None:
    """Write model.safetensors, then config.json naming its hash (each file atomically)."""
    weights = run_dir / WEIGHTS_FILE
    with atomic_path(weights) as tmp:
        save_file(_state_dict(generator), str(tmp), metadata={"step": str(step), "role": role})
    config = {
        "format": FORMAT,
        "role": role,
        "model": model_name,
        "model_config": asdict(model_config),
        "normalisation": NORMALISATION[role],
        "step": step,
        "weights": WEIGHTS_FILE,
        "weights_sha256": sha256_file(weights),  # later in ONNX metadata and manifests
        **metadata,
    }
    write_text_atomic(run_dir / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")


def keep_snapshot(run_dir: Path, step: int) -> Path:
    """Copy the run's generator as just saved (config.json and its weights) to
    RUN/snapshots/step_NNNNNN/, a run folder of its own that every command loads.

    A GAN's latest checkpoint is not always its best: a run can degrade after a good stretch
    (the conditional StyleGAN2's retina class did, docs/quality.md), and the checkpoint that
    `--resume` needs is overwritten every --checkpoint-every steps.
    """
    target = run_dir / SNAPSHOTS_DIR / f"step_{step:06d}"
    with staged_folder(target) as staging:
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copy2(run_dir / name, staging / name)
    return target


def read_generator_info(run_dir: Path | str, role: str | None = None) -> GeneratorInfo:
    """Parse and validate RUN/config.json without loading weights."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: checkpoint folder does not exist")
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; is {run_dir} a synthmed training run?")
    try:
        config = json.loads(config_path.read_text())
        model_name, model_data, found_role = config["model"], config["model_config"], config["role"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{config_path}: not a synthmed checkpoint config ({e})") from e
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"{config_path}: format {config.get('format')!r}, expected {FORMAT!r}"
        )
    if role is not None and found_role != role:
        raise CheckpointError(f"{run_dir}: is a {found_role} checkpoint, expected {role}")
    return GeneratorInfo(
        run_dir,
        found_role,
        model_name,
        config_from_dict(model_name, model_data),
        int(config["step"]),
        config,
    )


def load_generator(
    run_dir: Path | str, role: str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, GeneratorInfo]:
    """Rebuild the EMA generator of a run, in eval mode (deterministic: dropout off)."""
    info = read_generator_info(run_dir, role)
    weights = info.path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    expected = info.metadata.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise CheckpointError(
            f"{weights}: sha256 does not match config.json (file changed or corrupted)"
        )
    model = create_model(info.model_name, info.model_config)
    try:
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: weights do not fit {info.model_name} ({e})") from e
    return model.to(device).eval(), info


def _flatten_optimizer(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Tensors of an optimizer's state as flat safetensors entries, the rest as JSON data."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            name = f"{prefix}.state.{index}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(prefix: str, tensors: dict, data: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *data["scalars"].items()]:
        if name.startswith(f"{prefix}.state."):
            index, key = name[len(prefix) + 7 :].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": data["param_groups"]}


def save_training_state(
    path: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    step: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Everything a resume needs, in one safetensors file with JSON metadata (`extra` too)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"{name}.{k}": v for k, v in _state_dict(module).items()})
    optim_data = {}
    for name, optimizer in optimizers.items():
        flat, data = _flatten_optimizer(f"optim.{name}", optimizer)
        tensors.update(flat)
        optim_data[name] = data
    metadata = {
        "step": str(step),
        "optimizers": json.dumps(optim_data),
        "extra": json.dumps(extra or {}),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_training_state(
    path: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> tuple[int, dict[str, Any]]:
    """Restore modules and optimizers in place from `path`; returns the step to continue at
    and the `extra` data saved with it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        tensors = load_file(str(path))
        for name, module in modules.items():
            prefix = f"{name}."
            module.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
        optim_data = json.loads(metadata["optimizers"])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(
                _unflatten_optimizer(f"optim.{name}", tensors, optim_data[name])
            )
        return int(metadata["step"]), json.loads(metadata["extra"])
    except (SafetensorError, OSError, KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot resume from this training state ({e})") from e
