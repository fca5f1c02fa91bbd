"""In-process two-stage sampling: reproducible per (seed, index), labelled pairs on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from synthmed.latents import latent, latents
from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2, TwoStagePipeline
from tests.conftest import TINY_TRAIN, assert_one_line_error, run_cli
from tests.tolerance import assert_same_samples

TINY = ["--steps", "2", *TINY_TRAIN]


@pytest.fixture(scope="module")
def runs(retina64: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    assert (
        run_cli("train", "stage1", "--data", retina64, "--out", root / "s1", *TINY).exit_code == 0
    )
    assert (
        run_cli("train", "stage2", "--data", retina64, "--out", root / "s2", *TINY).exit_code == 0
    )
    return root / "s1", root / "s2"


def test_latent_depends_on_seed_and_index_only() -> None:
    assert np.array_equal(latents(3, range(2, 5), 8)[1], latent(3, 3, 8))
    assert not np.array_equal(latent(3, 3, 8), latent(4, 3, 8))
    assert latent(0, 0, 100).dtype == np.float32


def test_samples_do_not_depend_on_batch_size(runs: tuple[Path, Path], tmp_path: Path) -> None:
    for batch in ("1", "3"):
        result = run_cli(
            "sample",
            "--stage1",
            runs[0],
            "--stage2",
            runs[1],
            "--count",
            "5",
            "--seed",
            "9",
            "--batch-size",
            batch,
            "--out",
            tmp_path / batch,
        )
        assert result.exit_code == 0, result.output
    for kind in ("images", "masks"):
        for batch in ("1", "3"):
            names = sorted(p.name for p in (tmp_path / batch / kind).iterdir())
            assert names == [f"{i:06d}.png" for i in range(5)]
    # The same latents whatever the batch size; PyTorch's CPU kernels may round differently in
    # another batch (they do on AVX2-only CPUs), so the pixels agree within `tolerance`.
    by_batch = {batch: _read_samples(tmp_path / batch, 5) for batch in ("1", "3")}
    assert_same_samples(by_batch["3"], by_batch["1"], image_follows_mask=True)
    images, masks = by_batch["1"]
    assert images.shape == (5, 64, 64, 3) and masks.shape == (5, 64, 64)
    assert set(np.unique(masks)) <= {0, 255}


def _read_samples(folder: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The images and masks `synthmed sample` wrote into `folder`, as two arrays."""
    names = [f"{i:06d}.png" for i in range(count)]
    images = np.stack([np.asarray(Image.open(folder / "images" / n)) for n in names])
    return images, np.stack([np.asarray(Image.open(folder / "masks" / n)) for n in names])


def test_stages_must_agree_on_size_and_latent(
    runs: tuple[Path, Path], retina64: Path, tmp_path: Path
) -> None:
    """A stage II of another size, or one spreading its noise from latents of another length
    than stage I's z, is refused in one line naming both runs."""
    train = ["train", "stage2", "--data", retina64, *TINY]
    small, noisy = tmp_path / "small", tmp_path / "noisy"
    assert run_cli(*train, "--out", small, "--size", "32").exit_code == 0
    assert run_cli(*train, "--out", noisy, "--noise-channels", "1", "--nz", "8").exit_code == 0
    sample = ["sample", "--stage1", runs[0], "--count", "2", "--out", tmp_path / "o"]
    result = run_cli(*sample, "--stage2", small)
    assert_one_line_error(result, f"({runs[0]}) makes 64x64 masks but stage II ({small}) takes 32")
    result = run_cli(*sample, "--stage2", noisy)
    assert_one_line_error(result, f"stage II ({noisy}) spreads its noise from latents of 8 values")


def test_stage_roles_are_checked(runs: tuple[Path, Path], tmp_path: Path) -> None:
    result = run_cli(
        "sample", "--stage1", runs[1], "--stage2", runs[1], "--count", "2", "--out", tmp_path
    )
    assert_one_line_error(result, "is a stage2 checkpoint, expected stage1")
    assert_one_line_error(
        run_cli("sample", "--count", "0", "--out", tmp_path), "--count must be >= 1"
    )


def test_bundled_demo_models_sample(tmp_path: Path) -> None:
    pipeline = TwoStagePipeline(DEMO_STAGE1, DEMO_STAGE2)
    images, masks = pipeline.sample(0, range(4))
    size = pipeline.info1.image_size
    assert images.shape == (4, size, size, 3) and masks.shape == (4, size, size)
    # A trained stage I draws a sparse vessel tree, not noise or an empty image.
    fraction = (masks > 0).mean()
    assert 0.02 < fraction < 0.25, fraction
    # Stage II paints vessels darker than the fundus right around them.
    vessel = masks > 0
    ring = binary_dilation(vessel, structure=np.ones((1, 5, 5), bool)) & ~vessel
    green = images[..., 1].astype(float)
    assert green[vessel].mean() < green[ring].mean() - 3, (green[vessel].mean(), green[ring].mean())
