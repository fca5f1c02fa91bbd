"""Several paired datasets as the classes of one conditional dataset (one folder = one class).

The conditional StyleGAN2 learns several modalities at once, e.g. retina photographs and
microscopy tiles. Each folder is loaded exactly as the dual GAN loads its data (any
recognised layout, fitted to the training size), tagged with its class index, and marked
grayscale when every image in it has R = G = B, so grayscale and colour sets can be mixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from synthmed.errors import UserInputError
from synthmed.training.data.dataset import PairedData, load_paired_data

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ClassInfo:
    """One class: its name, where it came from and what it looks like."""

    name: str
    data: str
    fingerprint: str
    count: int
    grayscale: bool
    foreground_fraction: float


@dataclass
class ClassData:
    """All classes at one size: images [N,3,S,S], masks [N,1,S,S] uint8, labels int64 [N]."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    classes: list[ClassInfo]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in label order."""
        return tuple(c.name for c in self.classes)

    @property
    def grayscale_classes(self) -> tuple[int, ...]:
        """Labels of the classes whose every image is gray."""
        return tuple(k for k, c in enumerate(self.classes) if c.grayscale)

    def indices(self, label: int) -> torch.Tensor:
        """Positions of the examples of class `label`."""
        return (self.labels == label).nonzero().flatten()

    def pairs(self, label: int) -> PairedData:
        """Class `label`'s (image, mask) pairs as a dataset of their own, e.g. to train a
        segmenter on. The field of view is not kept here: it is the whole image."""
        index = self.indices(label)
        masks, info = self.masks[index], self.classes[label]
        names = [f"{info.name}-{i}" for i in range(len(index))]
        whole = torch.ones_like(masks)
        return PairedData(names, self.images[index], masks, whole, info.fingerprint)


def class_names(folders: list[str], names: list[str] | None) -> list[str]:
    """Names from `--class-name` or the folders' names; unique and safe as file and tensor
    labels (letters, digits, `_.-`)."""
    chosen = list(names) if names else [Path(f).resolve().name for f in folders]
    if len(chosen) != len(folders):
        raise UserInputError(
            f"{len(chosen)} --class-name given for {len(folders)} --data folders; give one each"
        )
    for name in chosen:
        if not _NAME.match(name):
            raise UserInputError(
                f"class name {name!r} must be 1-64 letters, digits, '_', '.' or '-'; "
                "rename it with --class-name"
            )
    duplicates = sorted({n for n in chosen if chosen.count(n) > 1})
    if duplicates:
        raise UserInputError(
            f"two --data folders are both named {duplicates[0]!r}; tell them apart with "
            "--class-name NAME (once per --data, in the same order)"
        )
    return chosen


def load_class_data(
    folders: list[str],
    size: int,
    *,
    names: list[str] | None = None,
    mask_threshold: float | None = None,
    progress: bool = False,
) -> ClassData:
    """Load each folder as one class, in the order given (label k = k-th folder)."""
    if not folders:
        raise UserInputError("give at least one --data folder (one per class)")
    labels_named = class_names(folders, names)
    images, masks, labels, classes = [], [], [], []
    for label, (folder, name) in enumerate(zip(folders, labels_named, strict=True)):
        data = load_paired_data(folder, size, mask_threshold=mask_threshold, progress=progress)
        gray = bool(
            torch.equal(data.images[:, 0], data.images[:, 1])
            and torch.equal(data.images[:, 1], data.images[:, 2])
        )
        images.append(data.images)
        masks.append(data.masks)
        labels.append(torch.full((len(data),), label, dtype=torch.int64))
        classes.append(
            ClassInfo(
                name=name,
                data=str(Path(folder).resolve()),
                fingerprint=data.fingerprint,
                count=len(data),
                grayscale=gray,
                foreground_fraction=float(data.masks.float().mean()),
            )
        )
    return ClassData(torch.cat(images), torch.cat(masks), torch.cat(labels), classes)
