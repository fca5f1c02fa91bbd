"""Find (image, mask, field-of-view) triples in the folder layouts users actually have.

Public retinal datasets each ship their own naming scheme; users should be able to point
`--data` at the folder they unpacked without renaming anything. Recognised layouts:

* generic:   ``images/<name>.<ext>`` + ``masks/<name>.<ext>`` [+ ``fov/<name>.<ext>``]
* DRIVE:     ``[training|test]/images/21_training.tif`` + ``1st_manual/21_manual1.gif``
             + ``mask/21_training_mask.gif`` (the field of view)
* STARE:     ``im0001.ppm`` + ``im0001.ah.ppm`` (or ``.vk.ppm``), in one folder or in
             ``stare-images/`` + ``labels-ah/``; ``.gz`` files are read as they are
* CHASE_DB1: ``Image_01L.jpg`` + ``Image_01L_1stHO.png`` in one folder
* HRF:       ``images/01_dr.JPG`` + ``manual1/01_dr.tif`` + ``mask/01_dr_mask.tif``
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from synthmed.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".bmp")


@dataclass(frozen=True)
class PairedFile:
    """One training example on disk: an image, its segmentation mask and optional field of view."""

    name: str
    image: Path
    mask: Path
    fov: Path | None = None


def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return path.is_file() and name.endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _stem(path: Path) -> str:
    """File name without its image extension (and without ``.gz``)."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return name.rsplit(".", 1)[0]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image_file(p))


def _index(files: Iterable[Path], key: Callable[[Path], str | None], what: str) -> dict[str, Path]:
    """Map each file to its pairing key; two files with one key is ambiguous and refused."""
    out: dict[str, Path] = {}
    for path in files:
        k = key(path)
        if k is None:
            continue
        if k in out:
            raise DataError(f"{path}: two {what} files share the name {k!r} ({out[k].name})")
        out[k] = path
    return out


def _pair(
    images: dict[str, Path],
    masks: dict[str, Path],
    fovs: dict[str, Path] | None,
    root: Path,
) -> list[PairedFile]:
    """Join image and mask indexes by key; any unmatched file is an error naming it."""
    for key, path in sorted(images.items()):
        if key not in masks:
            raise DataError(f"{path}: image has no mask (looked for {key!r} among the masks)")
    for key, path in sorted(masks.items()):
        if key not in images:
            raise DataError(f"{path}: mask has no image (looked for {key!r} among the images)")
    pairs = [
        PairedFile(key, images[key], masks[key], (fovs or {}).get(key)) for key in sorted(images)
    ]
    if not pairs:
        raise DataError(f"{root}: no image/mask pairs found")
    return pairs


def _generic(root: Path) -> list[PairedFile]:
    fov_dir = root / "fov"
    fovs = _index(_files(fov_dir), _stem, "fov") if fov_dir.is_dir() else None
    return _pair(
        _index(_files(root / "images"), _stem, "image"),
        _index(_files(root / "masks"), _stem, "mask"),
        fovs,
        root,
    )


def _leading_number(path: Path) -> str | None:
    match = re.match(r"(\d+)_", path.name)
    return match.group(1) if match else None


def _drive(root: Path) -> list[PairedFile]:
    fov_dir = root / "mask"
    fovs = _index(_files(fov_dir), _leading_number, "field-of-view") if fov_dir.is_dir() else None
    return _pair(
        _index(_files(root / "images"), _leading_number, "image"),
        _index(_files(root / "1st_manual"), _leading_number, "manual annotation"),
        fovs,
        root,
    )


def _hrf(root: Path) -> list[PairedFile]:
    fov_dir = root / "mask"
    fovs = (
        _index(_files(fov_dir), lambda p: _stem(p).removesuffix("_mask"), "field-of-view")
        if fov_dir.is_dir()
        else None
    )
    return _pair(
        _index(_files(root / "images"), _stem, "image"),
        _index(_files(root / "manual1"), _stem, "manual annotation"),
        fovs,
        root,
    )


def _stare(root: Path) -> list[PairedFile]:
    image_dir = root / "stare-images" if (root / "stare-images").is_dir() else root
    label_dir = next((root / d for d in ("labels-ah", "labels-vk") if (root / d).is_dir()), root)

    def label_key(path: Path) -> str | None:
        match = re.fullmatch(r"(im\d+)\.(ah|vk)", _stem(path))
        return match.group(1) if match else None

    def image_key(path: Path) -> str | None:
        return _stem(path) if re.fullmatch(r"im\d+", _stem(path)) else None

    labels = [p for p in _files(label_dir) if label_key(p)]
    # Both observers' labels may sit in one folder: the first observer (ah) is the reference.
    if any(".ah." in p.name for p in labels):
        labels = [p for p in labels if ".ah." in p.name]
    return _pair(
        _index(_files(image_dir), image_key, "image"),
        _index(labels, label_key, "label"),
        None,
        root,
    )


def _chase(root: Path) -> list[PairedFile]:
    files = _files(root)

    def image_key(path: Path) -> str | None:
        return _stem(path) if re.fullmatch(r"Image_\d+[LR]", _stem(path)) else None

    def label_key(path: Path) -> str | None:
        match = re.fullmatch(r"(Image_\d+[LR])_1stHO", _stem(path))
        return match.group(1) if match else None

    return _pair(_index(files, image_key, "image"), _index(files, label_key, "label"), None, root)


def detect_layout(root: Path) -> str:
    """Name the layout of `root` ("generic", "drive", "hrf", "stare", "chase_db1")."""
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "generic"
    if (root / "images").is_dir() and (root / "manual1").is_dir():
        return "hrf"
    if (root / "images").is_dir() and (root / "1st_manual").is_dir():
        return "drive"
    names = [p.name.lower() for p in root.iterdir()]
    if (root / "labels-ah").is_dir() or (root / "labels-vk").is_dir():
        return "stare"
    if any(re.fullmatch(r"im\d+\.(ah|vk)\.ppm(\.gz)?", n) for n in names):
        return "stare"
    if any(n.endswith("_1stho.png") for n in names):
        return "chase_db1"
    raise DataError(
        f"{root}: no recognised dataset layout (expected images/ + masks/, "
        "or the DRIVE, STARE, CHASE_DB1 or HRF folder layout)"
    )


_FINDERS = {"generic": _generic, "drive": _drive, "hrf": _hrf, "stare": _stare, "chase_db1": _chase}


def resolve_root(root: Path | str, split: str = "training") -> Path:
    """The folder that holds the pairs: `root` itself, or its `split` subfolder when `root` is
    a DRIVE-style root with ``training/`` and ``test/``."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: expected a dataset folder, got a file")
    if (root / split).is_dir() and not (root / "images").is_dir():
        return root / split
    return root


def find_pairs(root: Path | str, split: str = "training") -> list[PairedFile]:
    """List the paired files under `root` (see `resolve_root`), sorted by name."""
    root = resolve_root(root, split)
    return _FINDERS[detect_layout(root)](root)
