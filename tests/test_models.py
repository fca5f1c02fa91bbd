"""One parametrised test over every registered model: build, forward, save/load round trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file, save_file

from synthmed.errors import CheckpointError
from synthmed.training.models import create_model, list_models
from synthmed.training.models.registry import config_from_dict, model_config_class

CSTYLEGAN2 = {
    "size": 64,
    "classes": ["a", "b"],
    "z_dim": 16,
    "w_dim": 16,
    "mapping_layers": 1,
    "channel_base": 256,
    "max_channels": 16,
}
# Small configs and the input (or inputs) each model takes, keyed by registered name.
TINY = {
    "dcgan_generator": (
        {"size": 32, "nz": 16, "ngf": 8, "ndf": 8},
        lambda: torch.randn(2, 16),
        (2, 1, 32, 32),
    ),
    "dcgan_discriminator": (
        {"size": 32, "nz": 16, "ngf": 8, "ndf": 8},
        lambda: torch.randn(2, 1, 32, 32),
        (2,),
    ),
    "unet_generator": ({"size": 32, "ngf": 8}, lambda: torch.randn(2, 1, 32, 32), (2, 3, 32, 32)),
    "patch_discriminator": ({"ndf": 8}, lambda: torch.randn(2, 4, 32, 32), (2, 1, 2, 2)),
    "cstylegan2_generator": (
        CSTYLEGAN2,
        lambda: (torch.randn(2, 16), torch.tensor([0, 1])),
        (2, 4, 64, 64),
    ),
    "cstylegan2_discriminator": (
        CSTYLEGAN2,
        lambda: (torch.randn(2, 4, 64, 64), torch.tensor([1, 0])),
        (2,),
    ),
    "segmentation_unet": (
        {"base_channels": 8, "depth": 2},
        lambda: torch.randn(2, 3, 32, 32),
        (2, 1, 32, 32),
    ),
}


def test_every_registered_model_has_a_test_config() -> None:
    assert sorted(TINY) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_weights_round_trip(name: str, tmp_path) -> None:
    config, make_input, shape = TINY[name]
    torch.manual_seed(0)
    model = create_model(name, config).eval()
    x = make_input()
    x = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        y = model(*x)
    assert tuple(y.shape) == shape
    assert torch.isfinite(y).all()

    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    rebuilt = create_model(name, dataclasses.asdict(model_config_class(name)(**config))).eval()
    rebuilt.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    with torch.no_grad():
        assert torch.equal(rebuilt(*x), y)


def test_generators_are_deterministic_in_eval_mode() -> None:
    # pix2pix's dropout is its training noise; an exported generator must not be random.
    model = create_model("unet_generator", {"size": 32, "ngf": 8, "dropout": 0.5}).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_noise_channels_make_the_render_a_function_of_mask_and_latent(tmp_path) -> None:
    """A stage II with noise maps: the latent changes the image, the same latent gives the same
    image, the projection travels with the weights (separable: its size grows with the side,
    not its square), and one without noise ignores z."""
    config = {"size": 32, "ngf": 8, "noise_channels": 2, "nz": 6, "noise_rank": 8}
    model = create_model("unet_generator", config).eval()
    mask, z = torch.randn(3, 1, 32, 32).sign(), torch.randn(3, 6)
    with torch.no_grad():
        image = model(mask, z)
        assert torch.equal(model(mask, z), image)
        assert not torch.allclose(model(mask, torch.randn(3, 6)), image)
        maps = model.noise(torch.randn(256, 6))
    assert maps.shape == (256, 2, 32, 32)
    assert 0.9 < float(maps.std()) < 1.1  # unit-variance noise for a standard-normal z
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    saved = load_file(str(tmp_path / "w.safetensors"))
    assert saved["noise_coefficients"].shape == (2 * 8 * 8, 6)
    assert saved["noise_rows"].shape == saved["noise_columns"].shape == (32, 8)
    with pytest.raises(CheckpointError, match="noise_rank"):
        create_model("unet_generator", {**config, "noise_rank": 33})
    with pytest.raises(ValueError, match="pass a latent z"):
        model(mask)
    plain = create_model("unet_generator", {"size": 32, "ngf": 8}).eval()
    with torch.no_grad():
        assert torch.equal(plain(mask, z), plain(mask))


@pytest.mark.parametrize("upsample", ["transposed", "resize"])
@pytest.mark.parametrize("size", [32, 64, 128, 256, 512, 1024])
def test_dcgan_grows_to_every_power_of_two(size: int, upsample: str) -> None:
    config = {"size": size, "nz": 8, "ngf": 2, "max_channels": 8, "upsample": upsample}
    model = create_model("dcgan_generator", config)
    assert model(torch.randn(1, 8)).shape == (1, 1, size, size)
    transposed = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    # Both project the latent to 4x4 with one; "resize" doubles without any.
    assert len(transposed) == (1 if upsample == "resize" else size.bit_length() - 2)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_unet_resize_decoder_has_no_transposed_convolution(size: int) -> None:
    """--upsample resize for stage II: every decoder level (the output layer too) doubles
    by nearest-neighbour resizing and a 3x3 convolution, at every size."""
    config = {"size": size, "ngf": 4, "max_channels": 8, "noise_channels": 2, "nz": 8}
    resize = create_model("unet_generator", {**config, "upsample": "resize"}).eval()
    transposed = create_model("unet_generator", config).eval()
    mask, z = torch.randn(2, 1, size, size).sign(), torch.randn(2, 8)
    with torch.no_grad():
        assert resize(mask, z).shape == transposed(mask, z).shape == (2, 3, size, size)
    kinds = [type(m) for m in resize.modules()]
    levels = size.bit_length() - 1
    assert torch.nn.ConvTranspose2d not in kinds and kinds.count(torch.nn.Upsample) == levels
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in transposed.modules()) == levels


def test_discriminator_options_build_and_run() -> None:
    dcgan = create_model(
        "dcgan_discriminator", {"size": 32, "ndf": 8, "spectral_norm": True, "minibatch_std": True}
    )
    assert dcgan(torch.randn(3, 1, 32, 32)).shape == (3,)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in dcgan.modules())
    patch = create_model("patch_discriminator", {"ndf": 8, "spectral_norm": True})
    assert patch(torch.randn(2, 4, 32, 32)).shape == (2, 1, 2, 2)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(CheckpointError, match="power of two"):
        create_model("dcgan_generator", {"size": 48})
    with pytest.raises(CheckpointError, match="upsample must be one of transposed, resize"):
        create_model("dcgan_generator", {"size": 32, "upsample": "bilinear"})
    with pytest.raises(CheckpointError, match="upsample must be one of transposed, resize"):
        create_model("unet_generator", {"size": 32, "upsample": "bilinear"})
    with pytest.raises(CheckpointError, match="unknown model"):
        create_model("stylegan9", {})
    with pytest.raises(CheckpointError, match="unknown config fields"):
        config_from_dict("unet_generator", {"size": 32, "wings": 2})


def test_multiscale_patch_discriminator_judges_every_scale() -> None:
    from synthmed.training.models import PatchDiscriminatorConfig

    pair = torch.randn(2, 4, 64, 64)
    one = create_model("patch_discriminator", PatchDiscriminatorConfig(ndf=8))
    two = create_model("patch_discriminator", PatchDiscriminatorConfig(ndf=8, scales=2))
    assert one(pair).shape == (2, 1, 6, 6)
    # 6x6 + 2x2 patches: the second scale sees the pair at 32x32
    assert two(pair).shape == (2, 36 + 4)
    assert len(two.features(pair)) == 2 * len(one.features(pair)) == 8
    with pytest.raises(ValueError, match="scales must be >= 1"):
        PatchDiscriminatorConfig(scales=0)
