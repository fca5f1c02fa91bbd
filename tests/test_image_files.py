"""Bad data files end in one line that names the file, from `data check` and from `train`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import assert_one_line_error, run_cli


@pytest.fixture
def dataset(retina64: Path, tmp_path: Path) -> Path:
    """A private copy of the phantom set that a test may break."""
    out = tmp_path / "data"
    shutil.copytree(retina64, out)
    return out


def test_no_pairs(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    assert_one_line_error(run_cli("data", "check", tmp_path), "no image/mask pairs")


def test_image_without_mask(dataset: Path) -> None:
    (dataset / "masks" / "retina_00003.png").unlink()
    assert_one_line_error(
        run_cli("data", "check", dataset), "retina_00003.png", "image has no mask"
    )


def test_mask_without_image(dataset: Path) -> None:
    (dataset / "images" / "retina_00004.png").unlink()
    assert_one_line_error(
        run_cli("data", "check", dataset), "masks/retina_00004.png", "mask has no image"
    )


def test_truncated_image(dataset: Path) -> None:
    path = dataset / "images" / "retina_00002.png"
    path.write_bytes(path.read_bytes()[:300])
    assert_one_line_error(
        run_cli("data", "check", dataset), "retina_00002.png", "unreadable or truncated"
    )


def test_unreadable_file(dataset: Path) -> None:
    (dataset / "masks" / "retina_00001.png").write_text("not an image")
    assert_one_line_error(run_cli("data", "check", dataset), "retina_00001.png", "unreadable")


def test_unexpected_image_channel_count(dataset: Path) -> None:
    grey_alpha = np.zeros((64, 64, 2), dtype=np.uint8)
    Image.fromarray(grey_alpha, mode="LA").save(dataset / "images" / "retina_00005.png")
    assert_one_line_error(
        run_cli("data", "check", dataset),
        "retina_00005.png",
        "unexpected image mode LA",
        "2 channels",
    )


def test_colour_mask_is_refused(dataset: Path) -> None:
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[10:20, 10:20, 0] = 255
    Image.fromarray(rgb).save(dataset / "masks" / "retina_00006.png")
    assert_one_line_error(
        run_cli("data", "check", dataset), "retina_00006.png", "single-channel mask"
    )


def test_many_level_mask_needs_a_threshold(dataset: Path) -> None:
    mask_path = dataset / "masks" / "retina_00007.png"
    mask = np.asarray(Image.open(mask_path)).astype(np.float32)
    soft = (mask * np.linspace(0.3, 1.0, 64)[None, :]).astype(np.uint8)
    Image.fromarray(soft).save(mask_path)
    assert_one_line_error(
        run_cli("data", "check", dataset), "retina_00007.png", "grey levels", "--mask-threshold"
    )
    ok = run_cli("data", "check", dataset, "--mask-threshold", "0.5")
    assert ok.exit_code == 0, ok.output


def test_mask_size_differs_from_image(dataset: Path) -> None:
    Image.fromarray(np.zeros((32, 48), dtype=np.uint8)).save(dataset / "masks" / "retina_00008.png")
    assert_one_line_error(
        run_cli("data", "check", dataset), "retina_00008.png", "differs from its image"
    )


def test_train_reports_bad_data_in_one_line(dataset: Path, tmp_path: Path) -> None:
    (dataset / "masks" / "retina_00003.png").unlink()
    result = run_cli(
        "train", "stage2", "--data", dataset, "--out", tmp_path / "run", "--steps", "2", "--quiet"
    )
    assert_one_line_error(result, "retina_00003.png", "image has no mask")
    assert result.exit_code == 2
