"""FID and KID: a real ONNX feature extractor made here, closed forms, and one-line errors."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from synthmed.errors import UserInputError
from synthmed.evaluation.fid import FeatureExtractor, frechet_distance, kernel_inception_distance

FIXED_BATCH, FIXED_SIZE = 4, 64


@dataclass
class Exported:
    """A tiny torch feature net and the ONNX file exported from it."""

    module: nn.Module
    path: Path


def _export(module: nn.Module, example: torch.Tensor, dynamic: bool, path: Path) -> Path:
    shapes = None
    if dynamic:
        dims = (torch.export.Dim("batch"), torch.export.Dim("h", min=16), torch.export.Dim("w"))
        shapes = {"input": {0: dims[0], 2: dims[1], 3: dims[2]}}
    # The exporter narrates to stdout and warns about torch internals; neither is under test.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(), (example,), dynamo=True, dynamic_shapes=shapes, external_data=False
        )
    program.save(str(path))
    return path


def _tiny_net(flatten: bool) -> nn.Module:
    layers = [nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1)]
    return nn.Sequential(*layers, *([nn.Flatten()] if flatten else [])).eval()


@pytest.fixture(scope="module")
def dynamic_net(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Dynamic batch and spatial dims, output [N, 8, 1, 1]."""
    torch.manual_seed(0)
    module = _tiny_net(flatten=False)
    path = tmp_path_factory.mktemp("fid") / "dynamic.onnx"
    return Exported(module, _export(module, torch.rand(2, 3, 64, 64), True, path))


@pytest.fixture(scope="module")
def fixed_net(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Input fixed at [4, 3, 64, 64], output [4, 8]."""
    torch.manual_seed(1)
    module = _tiny_net(flatten=True)
    path = tmp_path_factory.mktemp("fid") / "fixed.onnx"
    example = torch.rand(FIXED_BATCH, 3, FIXED_SIZE, FIXED_SIZE)
    return Exported(module, _export(module, example, False, path))


def _images(count: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _gradients(count: int, size: int, seed: int) -> np.ndarray:
    """Smooth images: a random linear ramp per channel."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        for c in range(3):
            base, dy, dx = rng.uniform(0.2, 0.8), rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2)
            out[i, :, :, c] = np.clip((base + dy * ys + dx * xs) * 255, 0, 255).astype(np.uint8)
    return out


def _torch_features(module: nn.Module, images: np.ndarray, size: int) -> np.ndarray:
    """The reference: [0, 1] NCHW, bilinear resize, the torch module itself."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return module(x).reshape(len(images), -1).double().numpy()


# --- the extractor ------------------------------------------------------------------------------


def test_dynamic_extractor_shape_dtype_determinism_and_matches_torch(dynamic_net: Exported):
    extract = FeatureExtractor(dynamic_net.path, batch_size=3)
    assert extract.dim == 8
    images = _images(7, 48, seed=0)
    features = extract(images)
    assert features.shape == (7, 8)
    assert features.dtype == np.float64
    np.testing.assert_array_equal(features, extract(images))
    # Dynamic spatial dims: images go in resized to 299x299, scaled to [0, 1], as NCHW.
    expected = _torch_features(dynamic_net.module, images, 299)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    # The batch an image shares does not change its features.
    np.testing.assert_allclose(extract(images[4:5])[0], features[4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(FeatureExtractor(dynamic_net.path)(images), features, atol=1e-6)


def test_fixed_extractor_resizes_and_pads_the_last_batch(fixed_net: Exported):
    extract = FeatureExtractor(fixed_net.path, batch_size=100)
    assert extract.batch_size == FIXED_BATCH
    assert extract.size == (FIXED_SIZE, FIXED_SIZE)
    assert extract.dim == 8
    images = _images(6, 32, seed=1)  # one full batch of 4, then 2 padded to 4
    features = extract(images)
    assert features.shape == (6, 8)
    assert features.dtype == np.float64
    np.testing.assert_allclose(
        features, _torch_features(fixed_net.module, images, FIXED_SIZE), rtol=1e-4, atol=1e-5
    )
    # Fed alone, an image is padded with three black ones; its features do not change.
    np.testing.assert_allclose(extract(images[5:6])[0], features[5], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(extract(images[1:2])[0], features[1], rtol=1e-6, atol=1e-7)
    assert extract(images[:0]).shape == (0, 8)


def test_noise_scores_worse_than_images_like_the_reference(dynamic_net: Exported):
    extract = FeatureExtractor(dynamic_net.path)
    # At the model's own 299x299: an upsampled noise image is smooth enough to fool 3x3 filters.
    reference = extract(_gradients(40, 299, seed=10))
    similar = extract(_gradients(40, 299, seed=11))
    noise = extract(_images(40, 299, seed=12))
    fid_similar = frechet_distance(reference, similar)
    fid_noise = frechet_distance(reference, noise)
    assert fid_noise > 10 * fid_similar, (fid_similar, fid_noise)
    kid_similar = kernel_inception_distance(reference, similar, subsets=20, subset_size=30)[0]
    kid_noise = kernel_inception_distance(reference, noise, subsets=20, subset_size=30)[0]
    assert kid_noise > 5 * abs(kid_similar), (kid_similar, kid_noise)


# --- FID ----------------------------------------------------------------------------------------


def _gaussian(n: int, mean: np.ndarray, std: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, std, size=(n, len(mean)))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _fid_by_eigh(x: np.ndarray, y: np.ndarray) -> float:
    """Independent formula: Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), a symmetric PSD root."""
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = _psd_sqrt(s1)
    inner = root @ s2 @ root
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = x.mean(axis=0) - y.mean(axis=0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def test_fid_of_a_set_with_itself_is_zero():
    x = _gaussian(500, np.zeros(8), np.ones(8), seed=0)
    assert abs(frechet_distance(x, x)) < 1e-9
    # Fewer samples than dims: a singular covariance product, still ~0 and never negative.
    few = _gaussian(5, np.zeros(20), np.ones(20), seed=1)
    assert 0.0 <= frechet_distance(few, few) < 1e-6


def test_fid_same_distribution_small_shifted_large():
    mean, std = np.zeros(8), np.ones(8)
    x, y = _gaussian(2000, mean, std, seed=0), _gaussian(2000, mean, std, seed=1)
    shifted = _gaussian(2000, mean + 1.0, std, seed=2)
    same, moved = frechet_distance(x, y), frechet_distance(x, shifted)
    assert 0.0 < same < 0.1
    assert moved == pytest.approx(8.0, rel=0.1)
    assert moved > 50 * same


def test_fid_matches_independent_formula_on_empirical_statistics():
    rng = np.random.default_rng(5)
    x = _gaussian(300, rng.normal(size=6), rng.uniform(0.5, 2.0, 6), seed=6)
    y = _gaussian(300, rng.normal(size=6), rng.uniform(0.5, 2.0, 6), seed=7)
    assert frechet_distance(x, y) == pytest.approx(_fid_by_eigh(x, y), rel=1e-9)
    # Correlated features too, and with fewer samples than dims.
    mix = rng.normal(size=(6, 6))
    assert frechet_distance(x @ mix, y) == pytest.approx(_fid_by_eigh(x @ mix, y), rel=1e-9)
    a, b = x[:4] @ mix, y[:5]
    assert frechet_distance(a, b) == pytest.approx(_fid_by_eigh(a, b), rel=1e-6)


def test_fid_converges_to_the_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -1.0, 2.0]), np.array([0.5, 1.0, 0.0, 1.0])
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([1.5, 1.0, 0.5, 3.0])
    # For commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2.
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2))
    x, y = _gaussian(50_000, mu1, s1, seed=0), _gaussian(50_000, mu2, s2, seed=1)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.02)


# --- KID ----------------------------------------------------------------------------------------


def _kid_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 written out pair by pair."""
    m, dim = x.shape

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / dim + 1) ** 3)

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def test_kid_matches_the_pairwise_definition():
    x = _gaussian(15, np.zeros(4), np.ones(4), seed=0)
    y = _gaussian(15, np.full(4, 0.5), np.ones(4), seed=1)
    # One subset of the full sets: the draw only permutes rows, which MMD^2 ignores.
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=100)
    assert mean == pytest.approx(_kid_by_loops(x, y), rel=1e-10)
    assert std == 0.0


def test_kid_identical_same_and_shifted():
    mean, std = np.zeros(8), np.ones(8)
    x, y = _gaussian(1000, mean, std, seed=0), _gaussian(1000, mean, std, seed=1)
    shifted = _gaussian(1000, mean + 0.5, std, seed=2)
    kid_self = kernel_inception_distance(x, x, subsets=20, subset_size=100)
    kid_same = kernel_inception_distance(x, y, subsets=20, subset_size=100)
    kid_shift = kernel_inception_distance(x, shifted, subsets=20, subset_size=100)
    assert kid_shift[0] > 0.5
    # KID(x, x) is slightly negative: rows drawn on both sides add k(a, a) to the cross term.
    assert abs(kid_self[0]) < 0.02 * kid_shift[0]
    assert abs(kid_same[0]) < 0.02 * kid_shift[0]
    assert kid_shift[1] > 0.0
    assert kernel_inception_distance(x, shifted, subsets=20, subset_size=100) == kid_shift
    assert kernel_inception_distance(x, shifted, subsets=20, subset_size=100, seed=1) != kid_shift


# --- errors -------------------------------------------------------------------------------------


def _save(path: Path, inputs: list, outputs: list, nodes: list, check: bool = True) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if check:  # the checker wants every graph output to record a shape
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _float(name: str, shape: list | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _one_line_error(path: Path, *, match: str, batch: np.ndarray | None = None) -> str:
    with pytest.raises(UserInputError, match=match) as error:
        extract = FeatureExtractor(path)
        if batch is not None:
            extract(batch)
    message = str(error.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


def test_missing_and_unreadable_files(tmp_path: Path):
    _one_line_error(tmp_path / "nope.onnx", match="not found")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe" * 20)
    _one_line_error(junk, match="not a readable ONNX model")


def test_wrong_input_signature(tmp_path: Path):
    pool = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    one_channel = _save(
        tmp_path / "gray.onnx", [_float("x", ["n", 1, 8, 8])], [_float("y", ["n", 1, 1, 1])], [pool]
    )
    assert "got shape ['n', 1, 8, 8]" in _one_line_error(one_channel, match="3 channels")
    flat = helper.make_node("Relu", ["x"], ["y"])
    rank2 = _save(tmp_path / "rank2.onnx", [_float("x", ["n", 3])], [_float("y", ["n", 3])], [flat])
    _one_line_error(rank2, match="rank 4")


def test_wrong_output_signature(tmp_path: Path):
    x = _float("x", ["n", 3, "h", "w"])
    two = _save(
        tmp_path / "two.onnx",
        [x],
        [_float("y", ["n", 3, 1, 1]), _float("z", ["n", 3, "h", "w"])],
        [
            helper.make_node("GlobalAveragePool", ["x"], ["y"]),
            helper.make_node("Relu", ["x"], ["z"]),
        ],
    )
    _one_line_error(two, match="1 output, got 2")
    reduce = helper.make_node("ReduceMean", ["x"], ["y"], axes=[3], keepdims=0)
    rank3 = _save(tmp_path / "rank3.onnx", [x], [_float("y", ["n", 3, "h"])], [reduce])
    _one_line_error(rank3, match=r"\[N, D\] or \[N, D, 1, 1\], got \['n', 3, 'h'\]")
    # Spatial output dims known to be > 1 fail on opening; dynamic ones on the first batch.
    relu = helper.make_node("Relu", ["x"], ["y"])
    fixed = _float("x", ["n", 3, 8, 8])
    spatial = _save(tmp_path / "spatial.onnx", [fixed], [_float("y", ["n", 3, 8, 8])], [relu])
    _one_line_error(spatial, match=r"\[N, D\] or \[N, D, 1, 1\]")
    late = _save(tmp_path / "late.onnx", [x], [_float("y", ["n", 3, "h", "w"])], [relu])
    FeatureExtractor(late)  # opens: the output's spatial dims are not known yet
    _one_line_error(late, match=r"got \[2, 3, 299, 299\]", batch=_images(2, 8, seed=0))


def test_output_without_recorded_shape_is_checked_on_first_run(tmp_path: Path):
    pool = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    x, y = _float("x", ["n", 3, 16, 16]), _float("y", None)
    path = _save(tmp_path / "noshape.onnx", [x], [y], [pool], check=False)
    extract = FeatureExtractor(path)
    assert extract.dim == 3
    assert extract(_images(3, 20, seed=0)).shape == (3, 3)


def test_bad_images(dynamic_net: Exported):
    extract = FeatureExtractor(dynamic_net.path)
    with pytest.raises(UserInputError, match="expected a uint8 array"):
        extract(_images(2, 16, seed=0).astype(np.float32))
    with pytest.raises(UserInputError, match=r"got shape \(2, 16, 16, 4\)"):
        extract(np.zeros((2, 16, 16, 4), dtype=np.uint8))


def test_distances_need_two_samples_and_equal_dims():
    two, one = np.zeros((2, 4)), np.zeros((1, 4))
    for metric in (frechet_distance, kernel_inception_distance):
        with pytest.raises(UserInputError, match=r"real features: .*N >= 2 .*\(1, 4\)"):
            metric(one, two)
        with pytest.raises(UserInputError, match=r"fake features: .*N >= 2"):
            metric(two, one)
        with pytest.raises(UserInputError, match="same dimension D .* got 4 and 5"):
            metric(two, np.zeros((3, 5)))
        with pytest.raises(UserInputError, match="finite"):
            metric(two, np.full((3, 4), np.nan))
