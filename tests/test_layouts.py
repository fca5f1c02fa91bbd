"""Every public retinal folder layout is recognised and paired by name."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.errors import DataError
from synthmed.training.data.dataset import load_paired_data
from synthmed.training.data.layouts import detect_layout, find_pairs
from synthmed.training.data.phantom import render_phantom
from tests.conftest import assert_one_line_error, run_cli


def _save(path: Path, array: np.ndarray, fmt: str | None = None, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(path, format=fmt)


def _pad(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Put a square phantom on a non-square black canvas, as DRIVE's 565x584 frames are."""
    out = np.zeros((height, width) + array.shape[2:], dtype=array.dtype)
    top, left = (height - array.shape[0]) // 2, (width - array.shape[1]) // 2
    out[top : top + array.shape[0], left : left + array.shape[1]] = array
    return out


def make_drive(root: Path, count: int = 3) -> None:
    """DRIVE's layout: .tif photographs, .gif manual annotations and .gif field-of-view masks."""
    for split, first in (("training", 21), ("test", 1)):
        for k in range(count):
            n = first + k
            s = render_phantom("retina", 64, n)
            _save(root / split / "images" / f"{n:02d}_{split}.tif", _pad(s.image, 76, 70), "TIFF")
            _save(root / split / "1st_manual" / f"{n:02d}_manual1.gif", _pad(s.mask, 76, 70), "GIF")
            _save(root / split / "mask" / f"{n:02d}_{split}_mask.gif", _pad(s.fov, 76, 70), "GIF")


def test_drive_layout_reads_tif_images_gif_annotations_and_fov(tmp_path: Path) -> None:
    make_drive(tmp_path)
    pairs = find_pairs(tmp_path)
    assert [p.name for p in pairs] == ["21", "22", "23"]
    assert pairs[0].image.name == "21_training.tif"
    assert pairs[0].mask.name == "21_manual1.gif"
    assert pairs[0].fov is not None and pairs[0].fov.name == "21_training_mask.gif"
    assert [p.name for p in find_pairs(tmp_path, split="test")] == ["01", "02", "03"]

    data = load_paired_data(tmp_path, 64)
    assert data.images.shape == (3, 3, 64, 64) and data.masks.shape == (3, 1, 64, 64)
    # The non-square frame is cut to the field of view's bounding box: the disc touches all
    # four edges, and no vessel lies outside it.
    fov = data.fov[0, 0].bool()
    assert fov[0].any() and fov[-1].any() and fov[:, 0].any() and fov[:, -1].any()
    assert not (data.masks[:, 0].bool() & ~data.fov[:, 0].bool()).any()
    assert 0.05 < data.vessel_fraction() < 0.2


def test_generic_layout_with_jpeg_images(tmp_path: Path) -> None:
    for i in range(2):
        s = render_phantom("cells", 64, i)
        _save(tmp_path / "images" / f"tile{i}.jpg", s.image, "JPEG")
        _save(tmp_path / "masks" / f"tile{i}.png", s.mask)
    assert detect_layout(tmp_path) == "generic"
    data = load_paired_data(tmp_path, 32)
    assert data.names == ["tile0", "tile1"]
    assert data.images.shape == (2, 3, 32, 32)
    assert int(data.fov.min()) == 1  # no fov folder: the whole image counts


def test_stare_layout_prefers_first_observer_and_reads_gz(tmp_path: Path) -> None:
    for i in (1, 2):
        s = render_phantom("retina", 64, i)
        buffer = io.BytesIO()
        Image.fromarray(s.image).save(buffer, format="PPM")
        (tmp_path / f"im000{i}.ppm.gz").write_bytes(gzip.compress(buffer.getvalue()))
        _save(tmp_path / f"im000{i}.ah.ppm", s.mask, "PPM", mode="L")
        _save(tmp_path / f"im000{i}.vk.ppm", np.zeros_like(s.mask), "PPM", mode="L")
    assert detect_layout(tmp_path) == "stare"
    pairs = find_pairs(tmp_path)
    assert [(p.name, p.mask.name) for p in pairs] == [
        ("im0001", "im0001.ah.ppm"),
        ("im0002", "im0002.ah.ppm"),
    ]
    data = load_paired_data(tmp_path, 64)
    assert np.array_equal(data.masks[1, 0].numpy() * 255, render_phantom("retina", 64, 2).mask)


def test_chase_db1_layout_uses_first_human_observer(tmp_path: Path) -> None:
    s = render_phantom("retina", 64, 5)
    _save(tmp_path / "Image_01L.jpg", s.image, "JPEG")
    _save(tmp_path / "Image_01L_1stHO.png", s.mask)
    _save(tmp_path / "Image_01L_2ndHO.png", np.zeros_like(s.mask))
    assert detect_layout(tmp_path) == "chase_db1"
    (pair,) = find_pairs(tmp_path)
    assert pair.mask.name == "Image_01L_1stHO.png"


def test_hrf_layout_pairs_manual1_and_mask(tmp_path: Path) -> None:
    s = render_phantom("retina", 64, 6)
    _save(tmp_path / "images" / "01_dr.JPG", s.image, "JPEG")
    _save(tmp_path / "manual1" / "01_dr.tif", s.mask, "TIFF")
    _save(tmp_path / "mask" / "01_dr_mask.tif", s.fov, "TIFF")
    assert detect_layout(tmp_path) == "hrf"
    (pair,) = find_pairs(tmp_path)
    assert pair.fov is not None and pair.fov.name == "01_dr_mask.tif"


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match="no recognised dataset layout"):
        find_pairs(tmp_path)


def test_data_check_summarises_a_drive_folder(tmp_path: Path) -> None:
    make_drive(tmp_path)
    result = run_cli("data", "check", tmp_path, "--size", "32")
    assert result.exit_code == 0, result.output
    assert "3 pairs (drive layout, 3 with field of view)" in result.stdout


def test_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("data", "check", tmp_path / "nope"), "nope", "does not exist")
