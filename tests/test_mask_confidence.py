"""Stage I's hysteresis binarisation and the confidence chosen for it after training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from scipy import ndimage
from torch import nn

from synthmed.export import torch2onnx
from synthmed.latents import latents
from synthmed.training.mask_confidence import CANDIDATES, calibrate_mask_confidence
from synthmed.training.models import DCGANConfig
from synthmed.training.pixels import binary_mask, conditional_to_uint8, hysteresis_reach
from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2, TwoStagePipeline
from tests.conftest import TINY_TRAIN, run_cli

SIZE = 32


def _output() -> torch.Tensor:
    """A stage I output [1, 1, 32, 32]: a confident vessel (0.99) with a hesitant branch
    (0.3) joined to it, a hesitant speck (0.3) on its own and background (-1)."""
    x = torch.full((1, 1, SIZE, SIZE), -1.0)
    x[0, 0, 16, 2:30] = 0.99  # the vessel
    x[0, 0, 5:16, 10] = 0.3  # a branch touching it, shorter than the reach (16 px here)
    x[0, 0, 4:6, 24:26] = 0.3  # a speck, 10 px away
    return x


def test_hysteresis_keeps_confident_pieces_whole_and_drops_hesitant_ones() -> None:
    x = _output()
    plain = binary_mask(x)
    assert torch.equal(plain, (x > 0).float())  # no confidence: the plain threshold
    kept = binary_mask(x, 0.9)
    assert torch.equal(kept[0, 0, 16, 2:30], torch.ones(28))  # the vessel
    assert torch.equal(kept[0, 0, 5:16, 10], torch.ones(11))  # its branch, at full length
    assert kept[0, 0, 4:6, 24:26].sum() == 0  # the speck
    assert kept.sum() == plain.sum() - 4
    assert binary_mask(x, 0.995).sum() == 0  # nothing is that confident


def test_conditional_masks_take_the_same_hysteresis_on_their_tanh() -> None:
    """A conditional StyleGAN2's unbounded mask channel: > 0 without a confidence (what its
    graph exports), stage I's hysteresis on tanh of it with one; the image is untouched."""
    mask_channel = torch.atanh(_output().clamp(-0.999, 0.999)) * 3  # unbounded, same signs
    image = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    out = torch.cat([image, mask_channel], dim=1)
    plain_image, plain = conditional_to_uint8(out)
    assert torch.equal(plain, (mask_channel[:, 0] > 0).to(torch.uint8) * 255)
    kept_image, kept = conditional_to_uint8(out, 0.9)
    assert torch.equal(kept_image, plain_image)
    assert torch.equal(kept[0, 16, 2:30], torch.full((28,), 255, dtype=torch.uint8))
    assert kept[0, 4:6, 24:26].sum() == 0  # the speck: tanh(3 atanh(0.3)) = 0.73 < 0.9
    assert int(kept.sum()) == int(plain.sum()) - 4 * 255


def _unbounded(output: np.ndarray, confidence: float) -> np.ndarray:
    """Hysteresis without a reach: every 8-connected piece of output > 0 holding a pixel >
    confidence, by connected-component labelling."""
    labels, _ = ndimage.label(output > 0, structure=np.ones((3, 3)))
    confident = np.unique(labels[output > confidence])
    return np.isin(labels, confident[confident > 0])


def test_bounded_reach_keeps_what_connected_components_keep_on_stage1_masks() -> None:
    """The graph's fixed stack of max-pools: on the demo stage I's masks, exactly the pieces
    the unbounded rule keeps; on blobs wider than the reach, never more than it keeps."""
    generator = TwoStagePipeline(DEMO_STAGE1, DEMO_STAGE2).stage1
    with torch.no_grad():
        demo = generator(torch.from_numpy(latents(3, range(200), generator.config.nz)))
    rng = np.random.default_rng(0)
    fields = ndimage.gaussian_filter(rng.normal(size=(20, 64, 64)), (0, 1.5, 1.5)) * 6
    blobs = torch.from_numpy(np.tanh(fields)).float()[:, None]
    for confidence in (0.5, 0.9, 0.98):
        for outputs, exact in ((demo, True), (blobs, False)):
            got = binary_mask(outputs, confidence)[:, 0].numpy().astype(bool)
            for output, mask in zip(outputs[:, 0].numpy(), got, strict=True):
                expected = _unbounded(output, confidence)
                assert np.array_equal(mask, expected) if exact else not (mask & ~expected).any()
    assert hysteresis_reach(64) == 32 and hysteresis_reach(2) == 1


class _Drawn(nn.Module):
    """A stage I stand-in that draws the same output for every latent."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.config = DCGANConfig(size=SIZE, nz=4, ngf=8, ndf=8)
        self.output = nn.Parameter(output, requires_grad=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output.expand(z.shape[0], -1, -1, -1)


def test_calibration_picks_the_lowest_confidence_that_reaches_the_real_piece_count() -> None:
    real = np.zeros((3, SIZE, SIZE), dtype=bool)
    real[:, 16, 2:30] = True  # one piece per mask
    region = np.ones((SIZE, SIZE), dtype=bool)
    confidence, pieces = calibrate_mask_confidence(_Drawn(_output()), real, region)
    assert confidence == 0.5  # the speck (0.3) gone; 0 keeps it: 2 pieces against 1
    assert pieces["training_masks"] == 1 and pieces["0.0"] == 2 and pieces["0.5"] == 1
    speckled = _output()
    speckled[0, 0, 16, 2:30] = speckled[0, 0, 4:6, 24:26] = 1.0  # speck as sure as vessel
    confidence, pieces = calibrate_mask_confidence(_Drawn(speckled), real, region)
    assert confidence == CANDIDATES[-1] and pieces[str(CANDIDATES[-1])] == 2


def test_training_records_the_confidence_and_the_exported_graph_applies_it(
    retina64: Path, tmp_path: Path
) -> None:
    chosen, given = tmp_path / "chosen", tmp_path / "given"
    base = ["train", "stage1", "--data", retina64, *TINY_TRAIN, "--steps", "2"]
    assert run_cli(*base, "--out", chosen).exit_code == 0
    config = json.loads((chosen / "config.json").read_text())
    calibration = config["mask_calibration"]
    assert config["model_config"]["mask_confidence"] == calibration["chosen"] in CANDIDATES
    assert calibration["pieces_per_mask"]["training_masks"] > 0
    assert run_cli(*base, "--out", given, "--mask-confidence", "0.7").exit_code == 0
    config = json.loads((given / "config.json").read_text())
    assert config["model_config"]["mask_confidence"] == 0.7 and "mask_calibration" not in config
    stage2 = tmp_path / "stage2"
    assert run_cli("train", "stage2", "--data", retina64, "--out", stage2, *TINY_TRAIN,
                   "--steps", "1").exit_code == 0  # fmt: skip
    out = tmp_path / "onnx"
    result = torch2onnx.export_onnx(out, stage1=given, stage2=stage2)
    assert all(c.ok for c in result.checks)  # masks equal to PyTorch's at batch 1, 3, 16
    ops = [node.op_type for node in onnx.load(str(out / "synthmed_stage1.onnx")).graph.node]
    assert ops.count("MaxPool") == hysteresis_reach(64)
    pipeline = TwoStagePipeline(given, stage2)
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    soft = pipeline.stage1(z)
    _, masks = pipeline(z.numpy())
    assert np.array_equal(masks > 0, binary_mask(soft, 0.7)[:, 0].numpy() > 0)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_model_config_refuses_a_confidence_out_of_range(value: float) -> None:
    with pytest.raises(ValueError, match="mask_confidence must be in"):
        DCGANConfig(mask_confidence=value)
