"""Shared fixtures: small phantom datasets on disk and a CLI runner that checks error shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from safetensors.torch import load_file

from synthmed.cli import cli
from synthmed.training.data.phantom import write_phantom_dataset
from synthmed.training.demo import DEMO_DATA


@pytest.fixture(scope="session")
def retina64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 64x64 retina phantoms in the generic images/ masks/ fov/ layout."""
    out = tmp_path_factory.mktemp("retina64")
    write_phantom_dataset("retina", out, 12, 64, 7)
    return out


@pytest.fixture(scope="session")
def cells64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 64x64 cell phantoms."""
    out = tmp_path_factory.mktemp("cells64")
    write_phantom_dataset("cells", out, 8, 64, 3)
    return out


@pytest.fixture(scope="session")
def gray_cells64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 64x64 cell phantoms with one-channel (grayscale) images."""
    out = tmp_path_factory.mktemp("gray_cells64")
    write_phantom_dataset("cells", out, 8, 64, 3, grayscale=True)
    return out


# The side of the bundled demo models (training/demo_models, model_repository/).
DEMO_SIZE = DEMO_DATA["size"]
# Options for a tiny, fast training run.
TINY_TRAIN = "--ngf 8 --ndf 8 --nz 16 --batch-size 4 --quiet".split()
# The same for `synthmed train stylegan2`: widths of 32 at most, a 16-d latent and style.
TINY_STYLEGAN2 = (
    "--z-dim 16 --w-dim 16 --mapping-layers 1 --channel-base 512 --max-channels 32 "
    "--batch-size 4 --quiet"
).split()


@pytest.fixture(scope="session")
def cstylegan2_run(
    retina64: Path, gray_cells64: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A conditional StyleGAN2 trained 4 steps on two classes: retina (RGB), cells (gray)."""
    out = tmp_path_factory.mktemp("cstylegan2") / "run"
    args = ["--data", retina64, "--data", gray_cells64, "--class-name", "retina"]
    args += ["--class-name", "cells", "--out", out, "--steps", "4", *TINY_STYLEGAN2]
    result = run_cli("train", "stylegan2", *args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def cstylegan2_onnx(cstylegan2_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synthmed export onnx --cstylegan2` of that run: synthmed_cstylegan2.onnx + manifest."""
    out = tmp_path_factory.mktemp("cstylegan2_export") / "onnx"
    result = run_cli("export", "onnx", "--cstylegan2", cstylegan2_run, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def run_cli(*args: str) -> Result:
    """Run `synthmed ARGS` in-process."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_same_tensors(a: Path, b: Path) -> None:
    """Two safetensors files hold the same names and bit-identical tensors."""
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys(), (a, b)
    assert all(torch.equal(first[k], second[k]) for k in first), (a, b)


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """The command failed with exit code != 0 and one `Error: ...` line naming the problem."""
    assert result.exit_code != 0, result.output
    # What a terminal shows: a progress bar erased with carriage returns is gone.
    lines = [line.split("\r")[-1] for line in result.stderr.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def grid_sample_without_second_derivative(monkeypatch: pytest.MonkeyPatch) -> None:
    """grid_sample with a first derivative only, as CUDA's is: R1 taken through an augmentation
    that resamples then fails, on a GPU, at its first penalty ("derivative for
    aten::grid_sampler_2d_backward is not implemented"). The CPU kernel has the second
    derivative, so without this a CPU test would not see the difference."""
    import torch  # the client-only tests run without it

    original = torch.nn.functional.grid_sample

    class OnceDifferentiable(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, grid, kwargs):  # noqa: ANN001, ANN205, D102
            ctx.save_for_backward(x, grid)
            ctx.kwargs = kwargs
            return original(x, grid, **kwargs)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):  # noqa: ANN001, ANN205, D102
            x, grid = ctx.saved_tensors
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                (dx,) = torch.autograd.grad(original(x, grid.detach(), **ctx.kwargs), x, grad)
            return dx, None, None

    monkeypatch.setattr(
        torch.nn.functional,
        "grid_sample",
        lambda x, grid, **kwargs: OnceDifferentiable.apply(x, grid, kwargs),
    )
