"""In-process synthesis with PyTorch: stage I latent -> mask, stage II mask -> image, and one
class of a conditional StyleGAN2 (latent, class, truncation) -> image and mask.

This is the reference the exported and served pipelines are checked against, and the way to
look at a checkpoint before exporting it. Masks are binarised exactly as the exported graphs
do: a generator's mask output > 0 is foreground (for stage I, with its hysteresis:
`DCGANGenerator.mask`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from synthmed.atomic import atomic_path
from synthmed.contract import MASK, Z
from synthmed.errors import UserInputError
from synthmed.latents import latents
from synthmed.sampling import translate_feeds
from synthmed.training.checkpoint import check_pair, load_generator
from synthmed.training.pixels import (
    conditional_to_uint8,
    mask_to_input,
    mask_to_uint8,
    tanh_to_uint8,
    uint8_mask_to_input,
)

DEMO_DIR = Path(__file__).parent / "demo_models"
DEMO_STAGE1 = DEMO_DIR / "stage1"
DEMO_STAGE2 = DEMO_DIR / "stage2"


@torch.no_grad()
def render_masks(
    stage2: torch.nn.Module, masks: np.ndarray, *, seed: int = 0, start: int = 0
) -> np.ndarray:
    """Stage II alone: uint8 masks [N, H, W] (>= 128 is vessel) -> images uint8 [N, H, W, 3],
    mask k with the noise of sample start + k of seed `seed`, as the served stage II renders
    it (`translate_feeds`)."""
    device = next(stage2.parameters()).device
    feeds = translate_feeds(masks, stage2.config.nz, seed, start)
    mask = torch.from_numpy(feeds[MASK.name]).to(device)
    z = torch.from_numpy(feeds[Z.name]).to(device)
    return tanh_to_uint8(stage2(uint8_mask_to_input(mask), z)).cpu().numpy()


class TwoStagePipeline:
    """Stage I and stage II generators loaded from their run folders, ready to sample."""

    def __init__(self, stage1: Path | str, stage2: Path | str, device: str = "cpu") -> None:
        self.stage1, self.info1 = load_generator(stage1, role="stage1", device=device)
        self.stage2, self.info2 = load_generator(stage2, role="stage2", device=device)
        check_pair(self.info1, self.info2)
        self.device = device
        self.nz = self.info1.model_config.nz

    @torch.no_grad()
    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latents float32 [N, nz] -> (images uint8 [N,H,W,3], masks uint8 [N,H,W] in {0, 255})."""
        z = torch.from_numpy(z).to(self.device)
        mask = self.stage1.mask(z)
        image = tanh_to_uint8(self.stage2(mask_to_input(mask), z))
        return image.cpu().numpy(), mask_to_uint8(mask).cpu().numpy()

    def translate(self, masks: np.ndarray, *, seed: int = 0, start: int = 0) -> np.ndarray:
        """Stage II alone (see `render_masks`)."""
        return render_masks(self.stage2, masks, seed=seed, start=start)

    def sample(self, seed: int, indices: range) -> tuple[np.ndarray, np.ndarray]:
        """Images and masks of the given sample indices of the run seeded `seed`."""
        return self(latents(seed, indices, self.nz))


class ConditionalSampler:
    """A conditional StyleGAN2 run loaded once, sampled one class at a time.

    The arithmetic is the exported graph's (`ConditionalGraph`): per-layer noise is the stored
    constant, truncation is a per-sample tensor (so psi = 1 takes the same path as the graph),
    and a one-channel image is repeated to RGB. At the same batch shape the pixels are the
    graph's; at another batch size or on another CPU PyTorch may round a few of them
    differently (docs/stylegan2.md, "Reproducibility").
    """

    def __init__(self, run: Path | str, device: str = "cpu") -> None:
        self.generator, self.info = load_generator(run, role="cstylegan2", device=device)
        self.run, self.device = Path(run), device
        self.classes: tuple[str, ...] = tuple(self.info.model_config.classes)
        self.z_dim: int = self.info.model_config.z_dim

    def label(self, label: int | str) -> int:
        """A class index from an index or a class name ("1" is a name first, then an index),
        or a one-line error listing the run's classes."""
        if isinstance(label, str) and label in self.classes:
            return self.classes.index(label)
        try:
            index = int(label)
        except ValueError:
            index = -1
        if 0 <= index < len(self.classes):
            return index
        known = ", ".join(f"{k} = {name}" for k, name in enumerate(self.classes))
        raise UserInputError(f"label {label!r} is not a class of {self.run} (classes: {known})")

    @torch.no_grad()
    def outputs(self, z: np.ndarray, label: int | str, truncation: float = 1.0) -> torch.Tensor:
        """The generator's output [N, C + 1, H, W] for latents float32 [N, z_dim] of one class,
        before the pixel conversion: image channels in [-1, 1], then the unbounded mask channel."""
        n = len(z)
        labels = torch.full((n,), self.label(label), dtype=torch.int64, device=self.device)
        psi = torch.full((n,), float(truncation), dtype=torch.float32, device=self.device)
        return self.generator(torch.from_numpy(z).to(self.device), labels, psi, noise_mode="const")

    def __call__(
        self, z: np.ndarray, label: int | str, truncation: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Latents float32 [N, z_dim] of one class -> (images uint8 [N,H,W,3], masks uint8
        [N,H,W] in {0, 255})."""
        image, mask = conditional_to_uint8(self.outputs(z, label, truncation))
        return image.cpu().numpy(), mask.cpu().numpy()

    def sample(
        self, seed: int, indices: range | list[int], label: int | str, truncation: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples `indices` of class `label` in the run seeded `seed`: the latent of sample i
        depends on (seed, i) alone, as for every other generator."""
        return self(latents(seed, indices, self.z_dim), label, truncation)


def sample_class(
    run: Path | str,
    label: int | str,
    seed: int,
    indices: range | list[int],
    truncation: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N,H,W,3] and masks uint8 [N,H,W] of class `label` (index or name) from a
    conditional StyleGAN2 run: a one-call way to look at one modality of a checkpoint."""
    return ConditionalSampler(run).sample(seed, indices, label, truncation)


def _save_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def sample_to_folder(
    stage1: Path | str,
    stage2: Path | str,
    out: Path,
    count: int,
    *,
    seed: int = 0,
    batch_size: int = 16,
) -> int:
    """Write `count` pairs as out/images/NNNNNN.png and out/masks/NNNNNN.png; returns count."""
    if count < 1:
        raise UserInputError(f"--count must be >= 1, got {count}")
    if batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1, got {batch_size}")
    pipeline = TwoStagePipeline(stage1, stage2)
    with tqdm(total=count, desc="sample", unit="img") as bar:
        for start in range(0, count, batch_size):
            indices = range(start, min(start + batch_size, count))
            images, masks = pipeline.sample(seed, indices)
            for i, image, mask in zip(indices, images, masks, strict=True):
                _save_png(out / "images" / f"{i:06d}.png", image)
                _save_png(out / "masks" / f"{i:06d}.png", mask)
            bar.update(len(indices))
    return count
