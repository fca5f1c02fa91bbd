"""Augmentation moves image, mask and field of view together and jitters only the image."""

from __future__ import annotations

import torch

from synthmed.training.data.augment import AugmentConfig, augment
from synthmed.training.data.dataset import load_paired_data


def _batch(retina64):
    data = load_paired_data(retina64, 64)
    return data.images[:4].float() / 255, data.masks[:4].float(), data.fov[:4].float()


def test_geometry_keeps_labels_aligned(retina64) -> None:
    images, masks, fov = _batch(retina64)
    # Paint the mask into the image's red channel: after the same warp, the two must agree.
    images[:, 0] = masks[:, 0]
    cfg = AugmentConfig(flips=True, rotation_degrees=30, colour_jitter=0)
    out_images, out_masks, out_fov = augment(
        images, masks, fov, cfg, torch.Generator().manual_seed(1), jitter_images=False
    )
    assert not torch.equal(out_masks, masks)  # something moved
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert not (out_masks.bool() & ~out_fov.bool()).any()
    painted = (out_images[:, 0] >= 0.5) & out_fov[:, 0].bool()
    assert torch.equal(painted, out_masks[:, 0].bool())


def test_jitter_touches_only_the_image_and_keeps_black_outside_fov(retina64) -> None:
    images, masks, fov = _batch(retina64)
    cfg = AugmentConfig(flips=False, rotation_degrees=0, colour_jitter=0.3)
    out_images, out_masks, _ = augment(
        images, masks, fov, cfg, torch.Generator().manual_seed(2), jitter_images=True
    )
    assert torch.equal(out_masks, masks)
    assert not torch.equal(out_images, images)
    assert out_images[fov.expand_as(images) == 0].abs().max() == 0


def test_same_generator_seed_same_result(retina64) -> None:
    images, masks, fov = _batch(retina64)
    a = augment(
        images, masks, fov, AugmentConfig(), torch.Generator().manual_seed(3), jitter_images=True
    )
    b = augment(
        images, masks, fov, AugmentConfig(), torch.Generator().manual_seed(3), jitter_images=True
    )
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_flips_without_rotation_move_pixels_exactly(retina64) -> None:
    """--rotation-degrees 0: every output is an exact flip of its input (no resampling blur)."""
    images, masks, fov = _batch(retina64)
    cfg = AugmentConfig(flips=True, rotation_degrees=0, colour_jitter=0)
    out_images, out_masks, _ = augment(
        images, masks, fov, cfg, torch.Generator().manual_seed(3), jitter_images=False
    )
    flips = [(), (-1,), (-2,), (-2, -1)]
    for i in range(len(images)):
        match = [
            d for d in flips if torch.equal(out_images[i], images[i].flip(d) if d else images[i])
        ]
        assert match, f"sample {i} is not an exact flip of its input"
        assert torch.equal(out_masks[i], masks[i].flip(match[0]) if match[0] else masks[i])
