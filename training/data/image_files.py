"""Read images, masks and field-of-view files into numpy arrays, with errors that name the file.

Every reader returns float32 arrays in [0, 1] (images) or bool arrays (masks), whatever the
file's bit depth or palette, so the rest of the pipeline never sees a Pillow mode.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthmed.errors import DataError

# Pillow modes we know how to turn into 1 or 3 channels without guessing.
_GREY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "F"}
_COLOUR_MODES = {"RGB", "RGBA", "P"}


def _open(path: Path) -> Image.Image:
    """Open and fully decode `path` (``.gz`` transparently), so truncation shows up here."""
    try:
        data = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
        image = Image.open(io.BytesIO(data))
        image.load()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file does not exist") from e
    except (UnidentifiedImageError, OSError, EOFError, gzip.BadGzipFile, SyntaxError) as e:
        raise DataError(f"{path}: unreadable or truncated image ({e})") from e
    return image


def _to_float(image: Image.Image, path: Path) -> np.ndarray:
    """Pixel values scaled to [0, 1] by the file's bit depth; shape [H, W] or [H, W, C]."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    array = np.asarray(image)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if image.mode.startswith("I;16") or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        return np.clip(array.astype(np.float32) / 65535.0, 0.0, 1.0)
    if array.dtype.kind in "iu":
        return array.astype(np.float32) / 255.0
    if array.dtype.kind == "f":
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    raise DataError(f"{path}: unsupported pixel type {array.dtype}")


def _read_array(path: Path, what: str, expected: str) -> np.ndarray:
    """Decode `path` to floats in [0, 1], refusing modes that are not grey or colour."""
    image = _open(path)
    if image.mode not in _GREY_MODES | _COLOUR_MODES:
        raise DataError(
            f"{path}: unexpected {what} mode {image.mode} with {len(image.getbands())} channels "
            f"(expected {expected})"
        )
    return _to_float(image, path)


def read_image(path: Path) -> np.ndarray:
    """An RGB image as float32 [H, W, 3] in [0, 1]; grey is replicated, alpha dropped."""
    array = _read_array(path, "image", "1 grey, 3 RGB or 4 RGBA channels")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _single_channel(path: Path) -> np.ndarray:
    """A grey [H, W] array from a mask-like file; an RGB file must have equal channels."""
    array = _read_array(path, "mask", "a single-channel mask")
    if array.ndim == 3:
        rgb = array[:, :, :3]
        same = np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(
            rgb[:, :, 0], rgb[:, :, 2]
        )
        if not same:
            raise DataError(
                f"{path}: expected a single-channel mask, got {array.shape[2]} channels "
                "with different values"
            )
        array = rgb[:, :, 0]
    return array


def read_mask(path: Path, threshold: float | None = None) -> np.ndarray:
    """A binary mask as bool [H, W].

    By default a mask must have at most two grey levels (the higher one is foreground): a
    many-level file is usually a mistake (a JPEG-compressed label, a probability map) that
    would silently change what is learned. ``threshold`` (a fraction of the full range,
    e.g. 0.5) binarises such files explicitly instead.
    """
    array = _single_channel(path)
    if threshold is not None:
        return array >= threshold
    levels = np.unique(array)
    if levels.size > 2:
        raise DataError(
            f"{path}: mask has {levels.size} grey levels, expected at most 2 "
            "(pass --mask-threshold 0.5 to binarise at half range)"
        )
    # One level: an empty (or full) mask, decided at half range.
    return array >= (levels.max() if levels.size == 2 else 0.5)


def read_fov(path: Path) -> np.ndarray:
    """A field-of-view mask as bool [H, W]; any non-zero pixel is inside (JPEG-safe)."""
    return _single_channel(path) >= 0.5
