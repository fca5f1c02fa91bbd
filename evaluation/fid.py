"""FID and KID between real and synthetic images, from a feature extractor the user supplies.

The published FID numbers come from Inception-v3 weights that synthmed does not ship and never
downloads: medical sites often run offline, and a silent download would make a score depend on
whatever a mirror served that day. Instead the user points at a local ONNX file, and the score is
only as comparable as that file: report which one was used next to every number.

Contract of the ONNX feature extractor (what a user must provide):

* exactly one input: float32, NCHW with 3 channels (RGB), values in [0, 1]. Any further
  normalisation belongs inside the graph; pytorch-fid's ``InceptionV3([3])``, for instance,
  maps [0, 1] to [-1, 1] itself, so exporting it as is satisfies this contract;
* the spatial dims of the input are either fixed in the graph, and images are resized to them,
  or dynamic, and images are resized to 299x299 (Inception-v3's native size). Resizing is
  bilinear with ``align_corners=False``, as in torch's ``F.interpolate``;
* the batch dim may be dynamic, and images go in ``batch_size`` at a time, or fixed to B, and
  images go in exactly B at a time, the last batch padded with black images whose features are
  dropped;
* exactly one output of shape [N, D] or [N, D, 1, 1] (pytorch-fid's pool3 features), which is
  flattened to [N, D] float64.

Every way a file can break this contract raises a one-line ``UserInputError`` that names the file
and says what was expected and what was found. The model runs with onnxruntime on the CPU, so
features do not depend on which GPU happened to be free.

FID follows pytorch-fid (Heusel et al. 2017): Gaussian fits with ``np.cov``, the matrix square
root from ``scipy.linalg.sqrtm``. KID follows Binkowski et al. 2018 (as in torch-fidelity and
clean-fid): the unbiased MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3, averaged over random
subsets. KID is unbiased and has a useful spread at the few hundred images a medical set has,
where FID's bias dominates; report both.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
from scipy import linalg

from synthmed.errors import UserInputError

# Spatial size fed to a graph whose input height and width are dynamic: Inception-v3's.
DEFAULT_SIZE = 299
# Added to both covariances when sqrtm of their product is not finite, as pytorch-fid does.
FID_EPS = 1e-6


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _fixed(dim: object) -> int | None:
    """A dim fixed in the graph as a positive int, or None for a dynamic (named or unknown) one."""
    return dim if isinstance(dim, int) and dim > 0 else None


def _open_session(path: Path) -> ort.InferenceSession:
    """An onnxruntime CPU session for `path`, or a UserInputError saying why not."""
    if not path.is_file():
        raise UserInputError(f"{path}: feature extractor not found (expected an ONNX file)")
    try:
        return ort.InferenceSession(
            str(path), sess_options=ort.SessionOptions(), providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # InvalidProtobuf, Fail, InvalidGraph, ...: all mean "not usable"
        raise UserInputError(
            f"{path}: not a readable ONNX model, expected a feature extractor ({_first_line(e)})"
        ) from e


def _check_input(path: Path, session: ort.InferenceSession) -> list[object]:
    """The input's shape, after checking it is one float32 NCHW tensor with 3 channels."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise UserInputError(f"{path}: expected a model with 1 input, got {len(inputs)} {names}")
    node = inputs[0]
    if node.type != "tensor(float)":
        raise UserInputError(f"{path}: expected a float32 input, got {node.type} ({node.name!r})")
    shape = node.shape
    if not isinstance(shape, list) or len(shape) != 4:
        raise UserInputError(
            f"{path}: expected an NCHW input of rank 4, got shape {shape} ({node.name!r})"
        )
    if isinstance(shape[1], int) and shape[1] != 3:
        raise UserInputError(
            f"{path}: expected an input with 3 channels (NCHW), got shape {shape} ({node.name!r})"
        )
    return list(shape)


def _check_output(path: Path, session: ort.InferenceSession) -> int | None:
    """The feature dim D if the graph fixes it, after checking there is one [N,D(,1,1)] output.

    An output whose shape the graph does not record is checked when it is first computed.
    """
    outputs = session.get_outputs()
    if len(outputs) != 1:
        names = [o.name for o in outputs]
        raise UserInputError(f"{path}: expected a model with 1 output, got {len(outputs)} {names}")
    shape = outputs[0].shape
    if not isinstance(shape, list) or not shape:
        return None
    spatial_ok = len(shape) == 2 or (
        len(shape) == 4 and all(not isinstance(d, int) or d == 1 for d in shape[2:])
    )
    if not spatial_ok:
        raise UserInputError(
            f"{path}: expected an output of shape [N, D] or [N, D, 1, 1], got {shape} "
            f"({outputs[0].name!r})"
        )
    return _fixed(shape[1])


def _to_model_input(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,3,h,w] in [0, 1], bilinearly resized to `size`."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if tuple(tensor.shape[-2:]) != size:
        tensor = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    return np.ascontiguousarray(tensor.numpy(), dtype=np.float32)


class FeatureExtractor:
    """Runs a local ONNX model that maps images to feature vectors (e.g. Inception-v3 pool3)."""

    def __init__(self, path: Path | str, batch_size: int = 32) -> None:
        self.path = Path(path)
        if batch_size < 1:
            raise UserInputError(f"batch size must be at least 1, got {batch_size}")
        self._session = _open_session(self.path)
        shape = _check_input(self.path, self._session)
        self._input_name = self._session.get_inputs()[0].name
        self._fixed_batch = _fixed(shape[0])
        self.batch_size = self._fixed_batch or batch_size
        self.size = (_fixed(shape[2]) or DEFAULT_SIZE, _fixed(shape[3]) or DEFAULT_SIZE)
        self._dim = _check_output(self.path, self._session)

    @property
    def dim(self) -> int:
        """Feature dimension D (read from the graph, or from one run on a black image)."""
        if self._dim is None:
            self._dim = self(np.zeros((1, *self.size, 3), dtype=np.uint8)).shape[1]
        return self._dim

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features of uint8 images [N,H,W,3] (RGB) as float64 [N,D], in the same order."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            kind = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
            raise UserInputError(f"images: expected a uint8 array [N, H, W, 3], got {kind}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UserInputError(
                f"images: expected a uint8 array [N, H, W, 3], got shape {images.shape}"
            )
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float64)
        chunks = [
            self._run(images[start : start + self.batch_size])
            for start in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(chunks)

    def _run(self, images: np.ndarray) -> np.ndarray:
        """Features of one batch of at most `batch_size` images, padded to a fixed batch."""
        count = len(images)
        batch = _to_model_input(images, self.size)
        if self._fixed_batch is not None and count < self._fixed_batch:
            padding = np.zeros((self._fixed_batch - count, *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, padding])
        try:
            (out,) = self._session.run(None, {self._input_name: batch})
        except Exception as e:  # onnxruntime raises its own types for shape and kernel failures
            raise UserInputError(
                f"{self.path}: the feature extractor failed on an input of shape "
                f"{list(batch.shape)} ({_first_line(e)})"
            ) from e
        out = np.asarray(out)
        if out.ndim == 4 and out.shape[2:] == (1, 1):
            out = out.reshape(out.shape[:2])
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise UserInputError(
                f"{self.path}: expected an output of shape [{len(batch)}, D] or "
                f"[{len(batch)}, D, 1, 1], got {list(out.shape)}"
            )
        return out[:count].astype(np.float64)


def _check_features(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets as float64 [N,D] with N >= 2, finite, and the same D."""
    checked = []
    for name, features in (("real", real), ("fake", fake)):
        array = np.asarray(features, dtype=np.float64)
        if array.ndim != 2 or array.shape[0] < 2:
            raise UserInputError(
                f"{name} features: expected an array [N, D] with N >= 2 samples, "
                f"got shape {array.shape}"
            )
        if not np.isfinite(array).all():
            raise UserInputError(f"{name} features: expected finite values, got NaN or inf")
        checked.append(array)
    if checked[0].shape[1] != checked[1].shape[1]:
        raise UserInputError(
            f"features: expected the same dimension D for real and fake, "
            f"got {checked[0].shape[1]} and {checked[1].shape[1]}"
        )
    return checked[0], checked[1]


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's matrix square root, without its warning for singular input.

    With fewer samples than dims the product of covariances is always singular; its square root
    is still accurate (its eigenvalues are those of a PSD matrix), so the warning is noise here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two feature sets [N,D]: ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2).

    Raises UserInputError for fewer than 2 samples on a side or different D, and ValueError
    (as pytorch-fid does) if the square root has an imaginary part above 1e-3.
    """
    real, fake = _check_features(real, fake)
    mu_real, mu_fake = real.mean(axis=0), fake.mean(axis=0)
    sigma_real = np.atleast_2d(np.cov(real, rowvar=False))
    sigma_fake = np.atleast_2d(np.cov(fake, rowvar=False))
    covmean = _sqrtm(sigma_real @ sigma_fake)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma_real.shape[0]) * FID_EPS
        covmean = _sqrtm((sigma_real + offset) @ (sigma_fake + offset))
    if not np.isfinite(covmean).all():
        raise ValueError("FID: the square root of the covariance product is not finite")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    diff = mu_real - mu_fake
    traces = float(np.trace(sigma_real) + np.trace(sigma_fake))
    value = float(diff @ diff + traces - 2.0 * np.trace(covmean))
    # Round-off makes FID of a set with itself a tiny negative number; its size scales with the
    # traces. A larger negative value is a real numerical problem and is returned as is.
    if -1e-6 * max(1.0, traces) < value < 0.0:
        return 0.0
    return value


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples under k(a, b) = (a.b / D + 1)^3."""
    m, dim = x.shape
    k_xx = (x @ x.T / dim + 1.0) ** 3
    k_yy = (y @ y.T / dim + 1.0) ** 3
    k_xy = (x @ y.T / dim + 1.0) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between two feature sets [N,D]: (mean, std) of the unbiased MMD^2 over subsets.

    Each of `subsets` rounds draws min(subset_size, N_real, N_fake) rows of each side without
    replacement (real first, then fake) from ``np.random.default_rng(seed)``.
    """
    real, fake = _check_features(real, fake)
    if subsets < 1:
        raise UserInputError(f"KID: expected at least 1 subset, got {subsets}")
    if subset_size < 2:
        raise UserInputError(f"KID: expected a subset size of at least 2, got {subset_size}")
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    estimates = np.empty(subsets, dtype=np.float64)
    for i in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        estimates[i] = _mmd2_unbiased(x, y)
    return float(estimates.mean()), float(estimates.std())
