"""Train a segmentation U-Net on a fixed budget, predict with it, embed with it.

Two users: evaluation trains one per downstream arm (train on synthetic, test on real), and
stage II training with a segmentation-consistency loss trains one on the real pairs and keeps
it frozen, so the generator must draw every vessel of its mask where a segmenter can find it.

Every arm of the downstream experiment (real, synthetic, real + synthetic) gets the same
budget: the same initial weights, steps, batch size and augmentation, so the only thing that
differs is the data. A mixed arm draws each batch half from each source; otherwise 20 real
images would be drowned by 500 synthetic ones and the arm would measure the synthetic set alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from tqdm import tqdm

from synthmed.atomic import atomic_path
from synthmed.errors import UserInputError
from synthmed.training.data.dataset import PairedData
from synthmed.training.models import create_model
from synthmed.training.models.segmentation import SegmentationUNet, SegmentationUNetConfig


@dataclass(frozen=True)
class SegmenterBudget:
    """What every arm is trained with; small defaults because evaluation runs on CPUs too."""

    steps: int = 300
    batch_size: int = 8
    base_channels: int = 16
    depth: int = 3
    lr: float = 1e-3

    def check(self, size: int) -> None:
        """Refuse budgets that cannot train, naming the option."""
        for name in ("steps", "batch_size", "base_channels", "depth"):
            if getattr(self, name) < 1:
                option = name.replace("_", "-")
                raise UserInputError(f"--seg-{option} must be >= 1, got {getattr(self, name)}")
        if size % 2**self.depth:
            raise UserInputError(
                f"--seg-depth {self.depth}: the image size {size} must be divisible by "
                f"2**depth = {2**self.depth}"
            )

    def as_dict(self) -> dict[str, float]:
        """For metrics.json."""
        return asdict(self)

    def model_config(self) -> SegmentationUNetConfig:
        """The U-Net these settings train."""
        return SegmentationUNetConfig(base_channels=self.base_channels, depth=self.depth)


def _to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float in [-1, 1], the scale the generators use too."""
    return images.float() / 127.5 - 1


def _draw(
    sources: list[PairedData], batch_size: int, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch, split as evenly as possible between the sources, each image randomly flipped."""
    n = len(sources)
    shares = [batch_size // n + (i < batch_size % n) for i in range(n)]
    images, masks = [], []
    for source, share in zip(sources, shares, strict=True):
        if share == 0:
            continue
        index = torch.randint(len(source), (share,), generator=rng)
        images.append(source.images[index])
        masks.append(source.masks[index])
    x, y = _to_input(torch.cat(images)), torch.cat(masks).float()
    for dim in (-1, -2):
        flip = (torch.rand(len(x), generator=rng) < 0.5)[:, None, None, None]
        x, y = torch.where(flip, x.flip(dim), x), torch.where(flip, y.flip(dim), y)
    return x, y


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice: BCE alone under-segments thin, rare vessels."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probs = torch.sigmoid(logits)
    dice = (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
    return bce + (1 - dice)


def train_segmenter(
    sources: list[PairedData],
    budget: SegmenterBudget,
    *,
    seed: int = 0,
    desc: str = "segmenter",
    progress: bool = True,
) -> SegmentationUNet:
    """Train a fresh U-Net (initialised from `seed`) on batches drawn from `sources`."""
    if not sources or any(len(s) == 0 for s in sources):
        raise UserInputError(f"{desc}: no training images")
    torch.manual_seed(seed)
    model = create_model("segmentation_unet", budget.model_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    rng = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(budget.steps), desc=desc, unit="step", disable=not progress, leave=False):
        x, y = _draw(sources, budget.batch_size, rng)
        loss = segmentation_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def frozen_segmenter(
    sources: list[PairedData],
    budget: SegmenterBudget,
    path: Path,
    *,
    seed: int,
    save: bool,
    progress: bool,
) -> SegmentationUNet:
    """The frozen segmenter a GAN's losses or discriminator look through: read from `path`
    (a resumed run), or trained on the real pairs of `sources` and written there when `save`
    (the main process), then folded for inference (`fold_batch_norms`). Training is seeded, so
    every process of a distributed run trains the same one without waiting for the file."""
    if path.is_file():
        model = create_model("segmentation_unet", budget.model_config())
        model.load_state_dict(load_file(str(path)))
    else:
        model = train_segmenter(sources, budget, seed=seed, desc="segmenter", progress=progress)
        if save:
            with atomic_path(path) as tmp:
                save_file(model.state_dict(), str(tmp))
    return fold_batch_norms(model.eval()).requires_grad_(False)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """`model` (in eval mode) with each batch norm that follows a convolution folded into that
    convolution's weights and bias, in place: the same function, one pass over the activations
    fewer per layer, forward and backward. A GAN runs its frozen segmenter forward and backward
    at every step, where the folded layers take about a seventh off the segmenter's time."""
    if model.training:
        raise ValueError("fold_batch_norms needs a model in eval mode (running statistics)")
    for block in model.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for i in range(len(block) - 1):
            conv, norm = block[i], block[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                block[i], block[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return model


@torch.no_grad()
def predict(model: SegmentationUNet, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Vessel probabilities float32 [N, H, W] for uint8 images [N, 3, H, W]."""
    out = [
        torch.sigmoid(model(_to_input(images[i : i + batch_size])))[:, 0]
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy()


@torch.no_grad()
def embed(model: SegmentationUNet, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """A unit-length feature vector per image: each encoder level's channels, averaged over
    the image and concatenated. A U-Net trained on real vessels sees what matters in a fundus,
    which is the feature space the privacy audit compares patients in."""
    vectors = []
    for i in range(0, len(images), batch_size):
        levels = model.encode(_to_input(images[i : i + batch_size]))
        vectors.append(torch.cat([f.mean(dim=(2, 3)) for f in levels], dim=1))
    features = torch.cat(vectors).double()
    return F.normalize(features, dim=1).numpy()
