"""Conditional StyleGAN2: the layers against their definitions, conditioning, truncation, ADA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from synthmed.training.adaptive_augment import AdaptiveProbability, augment
from synthmed.training.models import create_model
from synthmed.training.models.stylegan2_layers import (
    ModulatedConv2d,
    NoiseInjection,
    minibatch_stddev,
)

CONFIG = {
    "size": 64,
    "classes": ["retina", "cells", "xray"],
    "grayscale_classes": [1, 2],
    "z_dim": 16,
    "w_dim": 16,
    "mapping_layers": 2,
    "channel_base": 512,
    "max_channels": 32,
}


def _generator(**changes: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("cstylegan2_generator", {**CONFIG, **changes}).eval()


def test_modulated_conv_equals_the_grouped_per_sample_weight_form() -> None:
    # StyleGAN2 defines the layer as a conv with weight w_oi * s_i, demodulated per sample;
    # the exported form scales activations instead. Both must give the same numbers.
    torch.manual_seed(1)
    layer = ModulatedConv2d(6, 5, 3, w_dim=8)
    x, w = torch.randn(3, 6, 9, 9), torch.randn(3, 8)
    got = layer(x, w)
    styles = layer.affine(w)
    weight = layer.weight * layer.weight_gain  # [out, in, k, k]
    per_sample = weight[None] * styles[:, None, :, None, None]
    per_sample = per_sample * per_sample.square().sum(dim=(2, 3, 4), keepdim=True).add(1e-8).rsqrt()
    grouped = F.conv2d(x.reshape(1, -1, 9, 9), per_sample.reshape(-1, 6, 3, 3), padding=1, groups=3)
    assert torch.allclose(got, grouped.reshape(3, 5, 9, 9), atol=1e-5)


@pytest.mark.parametrize("architecture", ["skip", "resnet"])
@pytest.mark.parametrize("size", [64, 128])
def test_generator_shapes_and_discriminator_logits(architecture: str, size: int) -> None:
    config = {**CONFIG, "size": size, "architecture": architecture}
    generator = create_model("cstylegan2_generator", config)
    discriminator = create_model("cstylegan2_discriminator", config)
    labels = torch.tensor([0, 1, 2, 0])
    out = generator(torch.randn(4, 16), labels, noise_mode="random")
    assert out.shape == (4, 4, size, size)
    assert discriminator(out, labels).shape == (4,)


def test_grayscale_classes_are_exactly_gray_and_colour_classes_are_not() -> None:
    out = _generator()(torch.randn(6, 16), torch.tensor([0, 1, 2, 0, 1, 2]))
    for i, label in enumerate([0, 1, 2, 0, 1, 2]):
        spread = (out[i, :3] - out[i, :3].mean(dim=0)).abs().max()
        assert (spread == 0) if label else (spread > 1e-3)


def test_the_class_changes_the_sample_and_z_alone_decides_it() -> None:
    generator = _generator()
    for name, parameter in generator.named_parameters():
        if name.endswith("noise.strength"):  # zero at initialisation
            parameter.data.fill_(0.1)
    z = torch.randn(1, 16).expand(3, -1)
    with torch.no_grad():
        out = generator(z, torch.tensor([0, 1, 0]))
        again = generator(z, torch.tensor([0, 1, 0]))
    assert torch.equal(out, again)  # const noise: deterministic
    # Rows 0 and 2 share z and class; CPU kernels may round a row by its batch position.
    assert torch.allclose(out[0], out[2], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[0], out[1])
    with torch.no_grad():
        noisy = generator(z, torch.tensor([0, 1, 0]), noise_mode="random")
    assert not torch.equal(noisy, out)


@pytest.mark.parametrize("batch", [4, 5])
def test_paired_noise_is_shared_between_the_batch_halves(batch: int) -> None:
    """Mode seeking's noise: sample i and i + N // 2 get the same per-pixel draw (an odd last
    sample its own), and the draws differ between pairs and between calls."""
    injection = NoiseInjection(8)
    injection.strength.data.fill_(1.0)
    noise = injection(torch.zeros(batch, 2, 8, 8), "paired")
    half = batch // 2
    assert torch.equal(noise[:half], noise[half : 2 * half])
    assert torch.equal(noise[:, 0], noise[:, 1])  # one draw per pixel, all channels
    assert not torch.equal(noise[0], noise[1])
    if batch % 2:
        assert not torch.equal(noise[-1], noise[0]) and not torch.equal(noise[-1], noise[1])
    assert not torch.equal(injection(torch.zeros(batch, 2, 8, 8), "paired"), noise)


def test_truncation_pulls_towards_the_class_average() -> None:
    generator = _generator()
    mapping = generator.mapping
    with torch.no_grad():
        mapping.w_avg.copy_(torch.randn_like(mapping.w_avg))
        z, labels = torch.randn(4, 16), torch.tensor([0, 0, 2, 2])
        free = mapping(z, labels)
        assert torch.equal(mapping(z, labels, 1.0), free)
        zero = mapping(z, labels, 0.0)
        assert torch.allclose(zero, mapping.w_avg[labels])
        half = mapping(z, labels, torch.tensor([0.5, 1.0, 0.5, 1.0]))
        assert torch.allclose(half[0], (free[0] + mapping.w_avg[0]) / 2, atol=1e-6)
        assert torch.allclose(half[1], free[1])
        samples = generator(z, labels, truncation=0.0)
    assert torch.allclose(samples[0], samples[1], atol=1e-5)  # psi 0: the class's mean sample


def test_w_average_tracks_each_class_separately() -> None:
    mapping = _generator().mapping
    before = mapping.w_avg.clone()
    w = torch.ones(3, 16)
    mapping.track_average(w, torch.tensor([2, 2, 2]))
    assert torch.equal(mapping.w_avg[:2], before[:2])
    assert torch.allclose(mapping.w_avg[2], before[2] + 0.005 * (1 - before[2]))


def test_minibatch_spread_is_measured_within_each_class() -> None:
    """A class whose samples are all alike shows no spread, even in a batch whose other class
    varies; that class's own spread is its members' alone; gradients reach every sample."""
    torch.manual_seed(0)
    labels = torch.tensor([0, 1] * 8)
    x = torch.randn(16, 5, 4, 4)
    x[labels == 0] = x[0].clone()  # class 0 collapsed onto one sample
    x.requires_grad_(True)
    spread = minibatch_stddev(x, labels)[:, -1]
    assert spread.shape == (16, 4, 4)
    assert spread[labels == 0].max() < 1e-3
    assert spread[labels == 1].min() > 0.5
    cells = x.detach()[labels == 1]
    first_group = (cells[:4].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    assert torch.allclose(spread[1], first_group.expand(4, 4))
    spread.sum().backward()
    assert (x.grad[labels == 1].abs().sum(dim=(1, 2, 3)) > 0).all()


def test_augment_moves_mask_with_image_and_lets_gradients_through() -> None:
    torch.manual_seed(2)
    pattern = (torch.rand(8, 1, 64, 64) > 0.7).float() * 2 - 1
    x = torch.cat([pattern.expand(-1, 3, -1, -1), pattern], dim=1).requires_grad_(True)
    out = augment(x, 1.0, 3, ("xflip", "rotate90", "translate"))
    assert not torch.equal(out, x)
    # Geometry only: every image channel still equals the mask channel, pixel for pixel.
    assert torch.equal(out[:, :3], out[:, 3:].expand(-1, 3, -1, -1))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    colour = augment(x.detach(), 1.0, 3, ("colour",))
    assert torch.equal(colour[:, 3], x[:, 3]) and not torch.equal(colour[:, :3], x[:, :3])
    cut = augment(x.detach(), 1.0, 3, ("cutout",))
    blanked = (cut == 0).all(dim=1)  # every channel blanked at the same pixels
    assert (blanked.float().mean(dim=(1, 2)) >= 1 / 16 - 1e-6).all()  # 1/16 to 1/4 of it
    assert torch.equal(augment(x.detach(), 0.0, 3), x.detach())


def test_adaptive_probability_follows_the_discriminators_confidence() -> None:
    ada = AdaptiveProbability(p=0.0, target=0.6, speed_kimg=0.064, interval=4)
    for _ in range(4):
        ada.observe(torch.ones(16))  # D calls every real real: over-fitting
    rt = ada.update(16)
    assert rt == 1.0 and ada.p == pytest.approx(1.0)  # 64 images move p by 64 / 64
    for _ in range(3):
        ada.observe(-torch.ones(16))
    assert math.isnan(ada.update(16)) and ada.p == pytest.approx(1.0)  # not enough seen yet
    ada.observe(-torch.ones(16))
    ada.update(16)
    assert ada.p == pytest.approx(0.0)
    restored = AdaptiveProbability()
    restored.load(ada.state())
    assert restored.state() == ada.state()
