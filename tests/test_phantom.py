"""Procedural phantoms: valid arrays, reproducible files, and structure visible in the image."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from synthmed.errors import UserInputError
from synthmed.training.data.phantom import (
    PHANTOM_KINDS,
    PhantomSample,
    render_phantom,
    write_phantom_dataset,
)

SEEDS = (0, 1, 2)


@cache
def sample(kind: str, size: int, seed: int) -> PhantomSample:
    return render_phantom(kind, size, seed)


def read_tree(root) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
@pytest.mark.parametrize("size", [32, 64, 256])
def test_arrays_are_well_formed(kind: str, size: int) -> None:
    s = sample(kind, size, 0)
    assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == s.fov.shape == (size, size)
    assert s.mask.dtype == s.fov.dtype == np.uint8
    assert set(np.unique(s.mask)) == {0, 255}
    assert set(np.unique(s.fov)) <= {0, 255}
    assert not s.mask[s.fov == 0].any()
    if kind == "cells":
        assert (s.fov == 255).all()
    else:
        outside = s.fov == 0
        assert outside.any() and (s.fov == 255).any()
        assert not s.image[outside].any(), "retina must be black outside the field of view"
        fov_fraction = (s.fov == 255).mean()
        assert abs(fov_fraction - np.pi * 0.46**2) < 0.02


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_render_is_deterministic_and_leaves_global_rng_alone(kind: str) -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a, b = render_phantom(kind, 64, 7), render_phantom(kind, 64, 7)
    assert np.array_equal(np.random.get_state()[1], before)
    for field in ("image", "mask", "fov"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    c = render_phantom(kind, 64, 8)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.mask, c.mask)


def test_same_seed_writes_identical_png_bytes(tmp_path) -> None:
    for kind in PHANTOM_KINDS:
        names_a = write_phantom_dataset(kind, tmp_path / "a", 2, 64, 11)
        names_b = write_phantom_dataset(kind, tmp_path / "b", 2, 64, 11)
        assert names_a == names_b == [f"{kind}_00000", f"{kind}_00001"]
    a, b = read_tree(tmp_path / "a"), read_tree(tmp_path / "b")
    assert len(a) == 12 and a == b
    assert not any(name.endswith(".tmp") or "/." in name for name in a)
    image = np.asarray(Image.open(tmp_path / "a" / "images" / "retina_00001.png"))
    mask = np.asarray(Image.open(tmp_path / "a" / "masks" / "retina_00001.png"))
    fov = np.asarray(Image.open(tmp_path / "a" / "fov" / "retina_00001.png"))
    assert image.shape == (64, 64, 3) and mask.shape == fov.shape == (64, 64)
    assert set(np.unique(mask)) == {0, 255} and not mask[fov == 0].any()
    assert a["images/retina_00000.png"] != a["images/retina_00001.png"]

    write_phantom_dataset("retina", tmp_path / "c", 2, 64, 12)
    c = read_tree(tmp_path / "c")
    assert c["images/retina_00000.png"] != a["images/retina_00000.png"]


def test_sample_depends_on_index_not_count(tmp_path) -> None:
    write_phantom_dataset("cells", tmp_path / "three", 3, 64, 5)
    names = write_phantom_dataset("cells", tmp_path / "five", 5, 64, 5, progress=True)
    assert names == [f"cells_{i:05d}" for i in range(5)]
    three, five = read_tree(tmp_path / "three"), read_tree(tmp_path / "five")
    assert len(three) == 9 and len(five) == 15
    assert all(five[name] == data for name, data in three.items())


@pytest.mark.parametrize(("kind", "low", "high"), [("retina", 0.06, 0.16), ("cells", 0.25, 0.45)])
@pytest.mark.parametrize("size", [64, 256])
def test_foreground_fraction_is_plausible(kind: str, low: float, high: float, size: int) -> None:
    for seed in SEEDS:
        s = sample(kind, size, seed)
        fraction = (s.mask == 255)[s.fov == 255].mean()
        assert low <= fraction <= high, f"{kind} {size} seed {seed}: {fraction:.3f}"


def test_vessels_are_darker_than_background() -> None:
    for seed in SEEDS:
        s = sample("retina", 256, seed)
        green = s.image[..., 1].astype(np.float64)
        vessel, background = s.mask == 255, (s.fov == 255) & (s.mask == 0)
        assert green[vessel].mean() < green[background].mean() - 10
    for seed in SEEDS:  # at 64 the fall-off dominates global means, so compare locally
        s = sample("retina", 64, seed)
        green = s.image[..., 1].astype(np.float64)
        vessel, background = s.mask == 255, ((s.fov == 255) & (s.mask == 0)).astype(np.float64)
        local = gaussian_filter(green * background, 2) / (gaussian_filter(background, 2) + 1e-9)
        assert (green[vessel] / local[vessel]).mean() < 0.9


def test_vessels_are_not_trivially_thresholdable() -> None:
    s = sample("retina", 256, 0)
    green = s.image[..., 1]
    fov = s.fov == 255
    vessel = s.mask == 255
    best = max(((green < t) == vessel)[fov].mean() for t in range(0, 256, 2))
    all_background = 1.0 - vessel[fov].mean()
    assert best < all_background + 0.06, "a global threshold should barely beat 'no vessels'"


def test_nuclei_are_darker_than_background() -> None:
    for seed in SEEDS:
        s = sample("cells", 256, seed)
        grey = s.image.astype(np.float64).mean(axis=-1)
        nuclei = s.mask == 255
        assert grey[nuclei].mean() < grey[~nuclei].mean() - 40


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "xray"}, "retina"),
        ({"count": 0}, "count"),
        ({"size": 20}, "20"),
        ({"size": 72}, "multiple of 16"),
        ({"size": 8192}, "4096"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_input_is_a_user_error(tmp_path, kwargs: dict, message: str) -> None:
    args = {"kind": "retina", "out": tmp_path / "out", "count": 1, "size": 64, "seed": 0}
    args.update(kwargs)
    with pytest.raises(UserInputError, match=message) as info:
        write_phantom_dataset(**args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_render_rejects_unknown_kind() -> None:
    with pytest.raises(UserInputError, match="cells"):
        render_phantom("mri", 64, 0)


def test_grayscale_datasets_are_one_channel_luma(tmp_path) -> None:
    write_phantom_dataset("cells", tmp_path / "rgb", 2, 64, 5)
    write_phantom_dataset("cells", tmp_path / "gray", 2, 64, 5, grayscale=True)
    gray = Image.open(tmp_path / "gray" / "images" / "cells_00001.png")
    rgb = Image.open(tmp_path / "rgb" / "images" / "cells_00001.png")
    assert gray.mode == "L" and rgb.mode == "RGB"
    assert np.array_equal(np.asarray(gray), np.asarray(rgb.convert("L")))
    same = ("masks", "fov")
    for folder in same:
        a = (tmp_path / "rgb" / folder / "cells_00001.png").read_bytes()
        assert a == (tmp_path / "gray" / folder / "cells_00001.png").read_bytes()
