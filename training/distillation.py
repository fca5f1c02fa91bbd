"""`--distill`: hold classes of the conditional StyleGAN2 being trained to frozen generators.

Knowledge distillation, as Lifelong GAN (Zhai et al., 2019) keeps a conditional GAN's earlier
tasks: every generator step adds the mean absolute difference between the generator's samples
and a teacher's for the same latents and fixed noise. Two uses:

- adding a class to a trained generator (`--init-from RUN --distill W`): RUN's classes stay as
  RUN draws them while the new class learns from its data. Without it, at the widths a CPU
  trains, the new class overwrote the old one within 500 steps (docs/quality.md, row 109);
- merging generators trained one class each (`--distill-from RUN`, once per further class):
  each class learns from its own generator's samples as well as from its data.

The adversarial loss still trains every class on its data; the term keeps the synthesis
weights that the classes share from being rewritten for one of them. Teachers are read from
their folders when the run starts and again on `--resume`, which refuses them if their weights
changed in between (the sha256 recorded in the run's state), so a resumed run is held to the
same samples.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthmed.errors import CheckpointError, UserInputError
from synthmed.training.checkpoint import load_generator

# What a teacher must share with the generator it holds: the samples are compared pixel by
# pixel for the same latents. Widths, depth and the other classes may differ.
SHARED_SETTINGS = ("size", "z_dim", "image_channels")


@dataclass(frozen=True)
class Teacher:
    """One frozen generator and what the run records of it."""

    generator: nn.Module
    record: dict[str, Any]  # path, step, weights_sha256, the classes it holds


class Teachers:
    """The generators a run distils from, and for each of its classes which one holds it (the
    first source that has a class of that name)."""

    def __init__(
        self, paths: list[Path], config: Any, role: str, device: torch.device | str = "cpu"
    ) -> None:
        classes = tuple(config.classes)
        self.members: list[Teacher] = []
        self.owner = torch.full((len(classes),), -1, dtype=torch.int64)
        self.their_label = torch.full((len(classes),), -1, dtype=torch.int64)
        for path in paths:
            try:
                generator, info = load_generator(path, role=role, device=device)
            except CheckpointError as e:
                raise CheckpointError(f"--distill teacher {e}") from e
            theirs = info.model_config
            for name in SHARED_SETTINGS:
                if getattr(theirs, name) != getattr(config, name):
                    raise UserInputError(
                        f"--distill teacher {path}: {name} {getattr(theirs, name)} there, "
                        f"{getattr(config, name)} here; a teacher draws what this run draws"
                    )
            held = [k for k, c in enumerate(classes) if c in theirs.classes and self.owner[k] < 0]
            if not held:
                raise UserInputError(
                    f"--distill teacher {path} has none of this run's classes that no earlier "
                    f"teacher holds (there: {', '.join(theirs.classes)}; here: "
                    f"{', '.join(classes)})"
                )
            for k in held:
                self.owner[k] = len(self.members)
                self.their_label[k] = theirs.classes.index(classes[k])
            record = {
                "path": str(path),
                "step": info.step,
                "weights_sha256": info.metadata.get("weights_sha256"),
                "classes": [classes[k] for k in held],
            }
            self.members.append(Teacher(generator.requires_grad_(False), record))
        self.held = (self.owner >= 0).nonzero().flatten()
        self.image_channels = int(config.image_channels)
        self.z_dim = int(config.z_dim)

    @property
    def records(self) -> list[dict[str, Any]]:
        """What config.json and the resume state record: each teacher and its classes."""
        return [m.record for m in self.members]

    def check_unchanged(self, saved: list[dict[str, Any]]) -> None:
        """On resume: the same teachers, with the same weights, as the run started with."""
        if saved != self.records:
            raise UserInputError(
                f"--resume: the --distill teachers are not those this run started with "
                f"(then: {saved}; now: {self.records}); restore them or start a new run"
            )

    def term(
        self,
        generator: nn.Module,
        n: int,
        autocast: Callable[[], AbstractContextManager[Any]],
        device: torch.device | str,
    ) -> torch.Tensor:
        """Mean absolute difference between `generator`'s samples of n held classes (drawn
        uniformly) and their teachers', image channels as drawn and mask channels through a
        tanh: their raw values are unbounded and only their sign is served."""
        labels = self.held[torch.randint(len(self.held), (n,))]
        z = torch.randn(n, self.z_dim)
        with autocast():
            ours = generator(z.to(device), labels.to(device)).float()
        theirs = torch.empty_like(ours)
        with torch.no_grad(), autocast():
            for i, member in enumerate(self.members):
                chosen = self.owner[labels] == i
                if chosen.any():
                    sample = member.generator(
                        z[chosen].to(device), self.their_label[labels[chosen]].to(device)
                    )
                    theirs[chosen.to(device)] = sample.float()
        c = self.image_channels
        image = (ours[:, :c] - theirs[:, :c]).abs().mean()
        return image + (torch.tanh(ours[:, c:]) - torch.tanh(theirs[:, c:])).abs().mean()
