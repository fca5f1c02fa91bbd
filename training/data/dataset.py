"""Load a paired dataset into memory at the training size.

Medical segmentation sets are small (DRIVE has 20 training images), so the whole set is
decoded once, fitted to a square of the training size and kept as uint8 tensors. Batches are
then index lookups, which makes every step's data a pure function of (seed, step) and a
resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from synthmed.errors import DataError
from synthmed.hashing import sha256_file
from synthmed.training.data.image_files import read_fov, read_image, read_mask
from synthmed.training.data.layouts import PairedFile, find_pairs


@dataclass
class PairedData:
    """A whole dataset at one size: images [N,3,S,S], masks and fov [N,1,S,S], all uint8."""

    names: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    fov: torch.Tensor
    fingerprint: str

    def __len__(self) -> int:
        return len(self.names)

    def vessel_fraction(self) -> float:
        """Fraction of field-of-view pixels that are foreground in the masks."""
        return float(self.masks.sum()) / max(float(self.fov.sum()), 1.0)


def _square_box(fov: np.ndarray | None, height: int, width: int) -> tuple[int, int, int, int]:
    """The square (top, left, side, side) to cut: the field of view's bounding box, or the
    whole image, grown to a square (the part outside the image is padded black)."""
    if fov is not None and fov.any():
        rows, cols = np.nonzero(fov.any(axis=1))[0], np.nonzero(fov.any(axis=0))[0]
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    else:
        top, bottom, left, right = 0, height, 0, width
    side = max(bottom - top, right - left)
    return top - (side - (bottom - top)) // 2, left - (side - (right - left)) // 2, side, side


def _cut(array: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop `array` [H,W,C] to `box`, padding with zeros where the box leaves the image."""
    top, left, h, w = box
    out = np.zeros((h, w, array.shape[2]), dtype=array.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + h, array.shape[0]), min(left + w, array.shape[1])
    out[src_top - top : src_bottom - top, src_left - left : src_right - left] = array[
        src_top:src_bottom, src_left:src_right
    ]
    return out


def _resize(array: np.ndarray, size: int) -> torch.Tensor:
    """[H,W,C] float -> [C,size,size] float; antialiased so thin vessels fade, not alias."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    if tensor.shape[-1] == size and tensor.shape[-2] == size:
        return tensor[0]
    return F.interpolate(
        tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0]


def load_example(
    pair: PairedFile, size: int, mask_threshold: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One example fitted to `size`: uint8 image [3,S,S], mask and fov [1,S,S] in {0,1}."""
    image = read_image(pair.image)
    mask = read_mask(pair.mask, mask_threshold)
    fov = read_fov(pair.fov) if pair.fov is not None else None
    for other, path in ((mask, pair.mask), (fov, pair.fov)):
        if other is not None and other.shape != image.shape[:2]:
            raise DataError(
                f"{path}: size {other.shape[1]}x{other.shape[0]} differs from its image "
                f"{pair.image.name} ({image.shape[1]}x{image.shape[0]})"
            )
    if fov is None:
        fov = np.ones(image.shape[:2], dtype=bool)
    box = _square_box(fov, *image.shape[:2])
    stacked = np.concatenate([image, mask[:, :, None], fov[:, :, None]], axis=2).astype(np.float32)
    resized = _resize(_cut(stacked, box), size)
    fov_t = resized[4:5] >= 0.5
    mask_t = (resized[3:4] >= 0.5) & fov_t
    image_t = (resized[:3].clamp(0, 1) * 255).round().to(torch.uint8)
    return image_t, mask_t.to(torch.uint8), fov_t.to(torch.uint8)


def fingerprint(pairs: list[PairedFile]) -> str:
    """A sha256 over names and file bytes, so a checkpoint says exactly what it was trained on."""
    digest = hashlib.sha256()
    for pair in pairs:
        for path in (pair.image, pair.mask, pair.fov):
            if path is not None:
                digest.update(path.name.encode())
                digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def load_paired_data(
    root: Path | str,
    size: int,
    *,
    mask_threshold: float | None = None,
    split: str = "training",
    progress: bool = False,
) -> PairedData:
    """Read every pair under `root` (any recognised layout) at `size` x `size`."""
    pairs = find_pairs(root, split=split)
    # The bar is closed (and erased) on error too, so an error message starts on a clean line.
    with tqdm(pairs, desc="loading data", unit="img", disable=not progress, leave=False) as bar:
        examples = [load_example(pair, size, mask_threshold) for pair in bar]
    images, masks, fov = (torch.stack(t) for t in zip(*examples, strict=True))
    return PairedData([p.name for p in pairs], images, masks, fov, fingerprint(pairs))
