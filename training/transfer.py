"""Start a conditional StyleGAN2 run from another run's weights (`--init-from`).

Transfer learning, as StyleGAN2-ADA fine-tunes a network trained on more data: a new run
starts from weights that already draw a class well instead of from noise: a user fine-tunes
a generator on their own small dataset. New classes may be added; `--distill` keeps them
from overwriting the carried ones (training/distillation.py).

Every tensor is copied but those indexed by class, whose rows are matched by class name: a
class of the new run that the source also has starts where the source left it, a new one
from the new run's own initialisation. The path-length penalty's running mean comes along
with the generator it measures: restarted at 0, the penalty would first pull a trained
generator's path lengths towards nothing. Optimizer state, ADA's p and the step count start
afresh.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from synthmed.errors import CheckpointError, UserInputError
from synthmed.training.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    GeneratorInfo,
    read_generator_info,
)
from synthmed.training.models.stylegan2 import CLASS_INDEXED


@dataclass(frozen=True)
class Source:
    """The weights a run starts from: each network's tensors, and the source's classes."""

    path: Path
    step: int
    classes: tuple[str, ...]
    weights_sha256: str
    model_config: Any
    tensors: dict[str, dict[str, torch.Tensor]]  # "generator", "ema", maybe "discriminator"
    path_length_mean: float | None  # the generator's running path length, where recorded

    def provenance(self) -> dict[str, Any]:
        """What config.json records of where the run started."""
        return {
            "path": str(self.path),
            "step": self.step,
            "weights_sha256": self.weights_sha256,
            "networks": sorted(self.tensors),
        }


def source_info(path: Path, role: str) -> GeneratorInfo:
    """What the source's config.json says (its architecture, classes), errors naming the
    option."""
    try:
        return read_generator_info(path, role=role)
    except CheckpointError as e:
        raise CheckpointError(f"--init-from {e}") from e


def read_source(path: Path, role: str) -> Source:
    """A run folder (generator, discriminator and EMA from its resume state) or a generator
    folder such as a snapshot (generator only: the discriminator starts afresh)."""
    info = source_info(path, role)
    state = path / STATE_FILE
    try:
        if state.is_file():
            flat = load_file(str(state))
            with safe_open(str(state), framework="pt") as f:
                extra = json.loads(f.metadata().get("extra", "{}"))
            tensors = {
                name: _under(flat, prefix)
                for name, prefix in (
                    ("generator", "generator."),
                    ("discriminator", "discriminator."),
                    ("ema", "ema.module."),
                )
            }
        else:
            weights = load_file(str(path / WEIGHTS_FILE))
            tensors, extra = {"generator": weights, "ema": weights}, {}
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"--init-from {path}: cannot read its weights ({e})") from e
    return Source(
        path,
        info.step,
        tuple(info.model_config.classes),
        str(info.metadata.get("weights_sha256", "")),
        info.model_config,
        tensors,
        extra.get("pl_mean"),
    )


def _under(flat: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}


def check_architecture(source: Source, target_config: Any) -> None:
    """Refuse a source whose networks differ from the new run's beyond the classes."""
    ignored = ("classes", "grayscale_classes")
    theirs = {k: v for k, v in asdict(source.model_config).items() if k not in ignored}
    ours = {k: v for k, v in asdict(target_config).items() if k not in ignored}
    differ = [f"{k} {theirs.get(k)} there, {v} here" for k, v in ours.items() if theirs.get(k) != v]
    if differ:
        raise UserInputError(
            f"--init-from {source.path}: its architecture differs ({'; '.join(differ)})"
        )


def copy_into(
    module: nn.Module,
    tensors: dict[str, torch.Tensor],
    network: str,
    source_classes: tuple[str, ...],
    target_classes: tuple[str, ...],
) -> None:
    """Load `tensors` into `module` ("generator" or "discriminator", as `network` says),
    class-indexed rows matched by class name."""
    state = {k: v.clone() for k, v in module.state_dict().items()}
    class_axes = CLASS_INDEXED[network]
    pairs = [
        (target_classes.index(name), source_classes.index(name))
        for name in target_classes
        if name in source_classes
    ]
    for key, value in state.items():
        if key not in tensors:
            raise CheckpointError(f"--init-from: the source's {network} lacks tensor {key}")
        incoming = tensors[key].to(value.dtype)
        if key in class_axes:
            axis, gain_scaled = class_axes[key]
            if axis is None:  # derived from this run's data, not learned
                continue
            if gain_scaled:
                # An equalised-lr layer over one-hot classes multiplies by 1/sqrt(classes):
                # rescaled, each carried class embeds exactly as it did in the source.
                incoming = incoming * math.sqrt(len(target_classes) / len(source_classes))
            for ours, theirs in pairs:
                value.select(axis, ours).copy_(incoming.select(axis, theirs))
        elif incoming.shape != value.shape:
            raise CheckpointError(
                f"--init-from: {network} tensor {key} is {list(incoming.shape)} in the source, "
                f"{list(value.shape)} here"
            )
        else:
            value.copy_(incoming)
    module.load_state_dict(state)
