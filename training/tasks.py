"""What each kind of GAN trains: its models, its batch, its losses and its progress metrics.

The training loop (train.py) is the same for all three kinds; a task supplies the parts that
differ. Stage I and the single-GAN baseline are unconditional DCGANs (noise -> mask, noise ->
RGB image); stage II is pix2pix (mask -> image, adversarial loss + lambda * L1), optionally
with a U-Net trained on the real pairs, then frozen, as a judge: the segmentation-consistency
term asks it to find the input mask in the generated image, the segmenter-matching term to
respond to the generated image as it does to the paired photograph, and with
--seg-discriminator the PatchGAN sees its vessel probabilities beside each image it judges.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.evaluation.distribution import common_fov
from synthmed.training.config import TrainConfig
from synthmed.training.data.augment import augment
from synthmed.training.data.dataset import PairedData
from synthmed.training.mask_confidence import calibrate_mask_confidence
from synthmed.training.models import (
    DCGANConfig,
    PatchDiscriminatorConfig,
    UNetGeneratorConfig,
    create_model,
)
from synthmed.training.models.segmentation import SegmentationUNet
from synthmed.training.pixels import binary_mask
from synthmed.training.segmenter import SegmenterBudget, frozen_segmenter, segmentation_loss

# The frozen segmenter of the consistency loss, kept in the run so a resume does not retrain it.
CONSISTENCY_SEGMENTER = "consistency_segmenter.safetensors"


@dataclass
class Batch:
    """One training batch on the device: images in [-1, 1] RGB, masks in {-1, 1}."""

    images: torch.Tensor
    masks: torch.Tensor


def d_loss(logits: torch.Tensor, real: bool, kind: str, smoothing: float = 0.0) -> torch.Tensor:
    """The discriminator's loss on real or fake logits, in fp32 under mixed precision.

    "bce" is the original GAN loss, with one-sided label smoothing (real targets become
    1 - smoothing); "hinge" is the SNGAN/BigGAN loss, which keeps gradients alive once the
    discriminator is confident and pairs with spectral normalisation.
    """
    logits = logits.float()
    if kind == "hinge":
        return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()
    target = torch.full_like(logits, 1.0 - smoothing) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def g_adversarial_loss(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator's adversarial term: non-saturating for "bce", -D(fake) for "hinge"."""
    logits = logits.float()
    if kind == "hinge":
        return -logits.mean()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


class Judge(Protocol):
    """The discriminator as a generator loss uses it (the trainer adds instance noise)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Real/fake logits."""

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden activations, for feature matching."""


def segmenter_match(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Mean L1 between a frozen segmenter's vessel probabilities on the renders and on the
    paired photographs (its logits of each, computed once per step for every term). Unlike
    the consistency loss, whose target is the mask's crisp boundary (a segmenter trained on
    such renders misses the softer edges of photographs: rows 3-5 of docs/quality.md), its
    target keeps the photograph's ambiguity at each vessel edge."""
    return (torch.sigmoid(fake_logits) - torch.sigmoid(real_logits)).abs().mean()


def segmenter_view(logits: torch.Tensor) -> torch.Tensor:
    """A frozen segmenter's logits as a discriminator channel: vessel probability in [-1, 1],
    the range of the mask and image channels beside it."""
    return torch.sigmoid(logits.float()) * 2 - 1


def feature_matching(discriminator: Judge, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """pix2pixHD's feature matching: the mean L1 between the discriminator's hidden
    activations on the real and on the generated pair, layer by layer (real side fixed)."""
    with torch.no_grad():
        targets = discriminator.features(real)
    pairs = zip(discriminator.features(fake), targets, strict=True)
    terms = [(f.float() - t.float()).abs().mean() for f, t in pairs]
    return torch.stack(terms).mean()


def mode_seeking_ratio(fake: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """MSGAN's ratio: how far apart the batch's two halves' outputs are, per unit of distance
    between their latents (mean absolute differences). Collapse drives it to zero."""
    half = fake.shape[0] // 2
    images = (fake[:half] - fake[half : 2 * half]).abs().mean()
    return images / (latents[:half] - latents[half : 2 * half]).abs().mean()


def mode_seeking_term(
    weight: float, fake: torch.Tensor, latents: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """The generator's penalty weight / ratio (small when the ratio is healthy), and the ratio
    for the log."""
    spread = mode_seeking_ratio(fake, latents)
    return weight / (spread + 1e-5), spread.item()


def straight_through_binary(mask: torch.Tensor) -> torch.Tensor:
    """A tanh mask binarised to {-1, 1} as the exported stage I thresholds it, with the tanh's
    gradient passed straight through (Bengio et al., 2013): the discriminator then sees only
    shapes, the binary masks that stage II will be given, never the values in between."""
    return mask + (binary_mask(mask) * 2 - 1 - mask).detach()


class GanTask:
    """Base: model construction from the run config and the shared batch preparation."""

    role: str
    generator_name: str
    discriminator_name: str
    jitter_images: bool
    d_loss_scale: float
    # Leading channels of a discriminator input that are a photograph (--diff-augment's colour
    # transform touches only these); 0 for a mask.
    image_channels: int = 0

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.generator_config, self.discriminator_config = self._configs(cfg)

    def _configs(self, cfg: TrainConfig) -> tuple[Any, Any]:
        raise NotImplementedError

    def build(self) -> tuple[nn.Module, nn.Module]:
        """Fresh generator and discriminator (seeded by the caller)."""
        return (
            create_model(self.generator_name, self.generator_config),
            create_model(self.discriminator_name, self.discriminator_config),
        )

    def batch(
        self,
        data: PairedData,
        index: torch.Tensor,
        generator: torch.Generator,
        device: torch.device,
    ) -> Batch:
        """Gather, augment and normalise the examples at `index`."""
        images = data.images[index].float() / 255
        masks = data.masks[index].float()
        fov = data.fov[index].float()
        images, masks, _ = augment(
            images, masks, fov, self.cfg.augment, generator, jitter_images=self.jitter_images
        )
        return Batch(images.to(device) * 2 - 1, masks.to(device) * 2 - 1)

    def latent(self, n: int, device: torch.device) -> torch.Tensor:
        """Latents from the global RNG, which the loop seeds per step."""
        return torch.randn(n, self.cfg.nz, device=device)

    def checkpoint_config(self, generator: nn.Module, data: PairedData) -> tuple[Any, dict]:
        """The model config saved with the EMA `generator`, and what config.json should
        record about choices made for it after training (nothing, unless overridden)."""
        return self.generator_config, {}


class UnconditionalTask(GanTask):
    """DCGAN: noise -> mask (stage I) or noise -> RGB image (single-GAN baseline)."""

    generator_name = "dcgan_generator"
    discriminator_name = "dcgan_discriminator"
    d_loss_scale = 1.0

    def __init__(self, cfg: TrainConfig) -> None:
        self.role = cfg.kind
        self.jitter_images = cfg.kind == "single"
        self.image_channels = 3 if cfg.kind == "single" else 0
        super().__init__(cfg)

    def _configs(self, cfg: TrainConfig) -> tuple[DCGANConfig, DCGANConfig]:
        config = DCGANConfig(
            size=cfg.size,
            nz=cfg.nz,
            out_channels=1 if cfg.kind == "stage1" else 3,
            ngf=cfg.ngf,
            ndf=cfg.ndf,
            max_channels=cfg.max_channels,
            norm=cfg.norm,
            spectral_norm=cfg.spectral_norm,
            minibatch_std=cfg.minibatch_std,
            upsample=cfg.upsample,
        )
        return config, config

    def checkpoint_config(self, generator: nn.Module, data: PairedData) -> tuple[Any, dict]:
        """Stage I: the mask confidence, given (--mask-confidence) or chosen for this EMA
        generator on the training masks; it is set on `generator` too, so its masks are the
        checkpoint's."""
        if self.role != "stage1":
            return self.generator_config, {}
        notes = {}
        confidence = self.cfg.mask_confidence
        if confidence is None:
            real = data.masks[:, 0].numpy().astype(bool)
            confidence, pieces = calibrate_mask_confidence(
                generator.eval(), real, common_fov(data.fov)
            )
            notes["mask_calibration"] = {"pieces_per_mask": pieces, "chosen": confidence}
        config = replace(self.generator_config, mask_confidence=confidence)
        generator.config = config
        return config, notes

    def real(self, batch: Batch) -> torch.Tensor:
        """What the discriminator sees as real: masks for stage I, photographs otherwise."""
        return batch.masks if self.role == "stage1" else batch.images

    def generator_inputs(self, batch: Batch) -> tuple[torch.Tensor]:
        """One latent per real example."""
        return (self.latent(batch.images.shape[0], batch.images.device),)

    def generate(self, generator: nn.Module, batch: Batch) -> torch.Tensor:
        """Fakes for this step, one per real example; the latents are kept for g_loss's
        mode-seeking term, which pairs them with their fakes."""
        (self.latents,) = self.generator_inputs(batch)
        fake = generator(self.latents)
        return straight_through_binary(fake) if self.cfg.binary_fakes else fake

    def d_inputs(self, batch: Batch, fake: torch.Tensor) -> list[tuple[torch.Tensor, bool]]:
        """Real and fake inputs, kept apart so each sees its own batch-norm statistics."""
        return [(self.real(batch), True), (fake, False)]

    def g_loss(
        self, discriminator: Judge, batch: Batch, fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        """Non-saturating generator loss (plus the mode-seeking term when on), and the mask's
        foreground fraction for stage I."""
        stats = {}
        if self.role == "stage1":
            stats["fake_fraction"] = float((fake > 0).float().mean())
            stats["real_fraction"] = float((batch.masks > 0).float().mean())
        loss = g_adversarial_loss(discriminator(fake), self.cfg.gan_loss)
        if self.cfg.mode_seeking > 0:
            term, stats["mode_seeking_ratio"] = mode_seeking_term(
                self.cfg.mode_seeking, fake, self.latents
            )
            loss = loss + term
        return loss, stats

    @torch.no_grad()
    def evaluate(
        self, generator: nn.Module, fixed: Any
    ) -> tuple[dict[str, float], list[torch.Tensor]]:
        """Metrics and a sample grid (rows of [N,C,H,W] in [0, 1]) from the EMA generator."""
        fake = generator(fixed)
        metrics = {}
        if self.role == "stage1":
            metrics["eval_fake_fraction"] = float((fake > 0).float().mean())
            fake = (fake > 0).float() * 2 - 1
        return metrics, [(fake[:16] + 1) / 2]

    def fixed_inputs(self, data: PairedData, device: torch.device) -> torch.Tensor:
        """The same 64 latents at every evaluation, so grids show progress, not noise."""
        generator = torch.Generator().manual_seed(self.cfg.seed)
        return torch.randn(64, self.cfg.nz, generator=generator).to(device)


class Pix2PixTask(GanTask):
    """Stage II: mask -> photograph with a PatchGAN and an L1 term (lambda 100 by default)."""

    role = "stage2"
    generator_name = "unet_generator"
    discriminator_name = "patch_discriminator"
    jitter_images = True
    # pix2pix halves the discriminator loss to slow D relative to G.
    d_loss_scale = 0.5

    def _configs(self, cfg: TrainConfig) -> tuple[UNetGeneratorConfig, PatchDiscriminatorConfig]:
        return (
            UNetGeneratorConfig(
                size=cfg.size,
                in_channels=1,
                out_channels=3,
                ngf=cfg.ngf,
                max_channels=cfg.max_channels,
                norm=cfg.norm,
                dropout=cfg.dropout,
                noise_channels=cfg.noise_channels,
                noise_rank=cfg.noise_rank,
                nz=cfg.nz,
                upsample=cfg.upsample,
            ),
            PatchDiscriminatorConfig(
                # mask + RGB, and with --seg-discriminator the segmenter's view of the RGB
                in_channels=5 if cfg.seg_discriminator else 4,
                ndf=cfg.ndf,
                norm=cfg.norm,
                spectral_norm=cfg.spectral_norm,
                scales=cfg.d_scales,
                n_layers=cfg.d_layers,
            ),
        )

    segmenter: SegmentationUNet | None = None
    _real_logits: tuple[Batch, torch.Tensor] | None = None

    def prepare(
        self, data: PairedData, run_dir: Path, device: torch.device, *, save: bool, progress: bool
    ) -> None:
        """With --seg-lambda, --seg-match-lambda or --seg-discriminator: read the run's frozen
        segmenter, or train it on the real pairs (seeded, so every rank of a distributed run
        trains the same one) and keep it."""
        if not self.cfg.uses_segmenter:
            return
        budget = SegmenterBudget(steps=self.cfg.seg_steps, base_channels=self.cfg.seg_width)
        model = frozen_segmenter(
            [data],
            budget,
            run_dir / CONSISTENCY_SEGMENTER,
            seed=self.cfg.seed,
            save=save,
            progress=progress,
        )
        self.segmenter = model.to(device)

    def generator_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's masks and one fresh latent each (none for a deterministic render, which
        draws nothing, so such runs keep their random stream)."""
        masks = batch.masks
        noisy = self.cfg.noise_channels > 0
        return masks, self.latent(masks.shape[0], masks.device) if noisy else None

    def generate(self, generator: nn.Module, batch: Batch) -> torch.Tensor:
        """The photograph for each mask of the batch, from fresh latents; with the
        mode-seeking term, also a second render of the first half's masks, from other ones."""
        masks, self.latents = self.generator_inputs(batch)
        fake = generator(masks, self.latents)
        # One segmenter pass over the renders serves the discriminator (detached) and every
        # generator term that looks through the segmenter.
        self.fake_logits = None if self.segmenter is None else self.segmenter(fake.float())
        if self.cfg.mode_seeking > 0:
            half = masks.shape[0] // 2
            self.second_latents = self.latent(half, masks.device)
            self.second = generator(masks[:half], self.second_latents)
        return fake

    def real_logits(self, batch: Batch) -> torch.Tensor:
        """The frozen segmenter's logits of the batch's photographs, computed once per batch:
        the discriminator's real input, feature matching and the matching term share them."""
        if self._real_logits is None or self._real_logits[0] is not batch:
            with torch.no_grad():
                self._real_logits = (batch, self.segmenter(batch.images.float()))
        return self._real_logits[1]

    def judged(
        self, masks: torch.Tensor, images: torch.Tensor, logits: torch.Tensor | None
    ) -> torch.Tensor:
        """What the discriminator judges: the (mask, image) pair, so that it also checks vessel
        alignment; with --seg-discriminator, also the frozen segmenter's view of the image
        (from its `logits`), so that it tells renders from photographs by how ambiguous
        their vessels look to a segmenter, which an L1 on that view (--seg-match-lambda)
        matches only on average."""
        if not self.cfg.seg_discriminator:
            return torch.cat([masks, images], 1)
        return torch.cat([masks, images, segmenter_view(logits).to(images.dtype)], 1)

    def judged_real(self, batch: Batch) -> torch.Tensor:
        """The batch's photographs as `judged` lays them out (the discriminator's real input,
        and feature matching's reference)."""
        view = self.real_logits(batch) if self.cfg.seg_discriminator else None
        return self.judged(batch.masks, batch.images, view)

    def d_inputs(self, batch: Batch, fake: torch.Tensor) -> list[tuple[torch.Tensor, bool]]:
        """Real and generated pairs, each judged as `judged` lays them out (the renders' view
        from generate's segmenter pass, without its gradient)."""
        view = self.fake_logits.detach() if self.cfg.seg_discriminator else None
        return [(self.judged_real(batch), True), (self.judged(batch.masks, fake, view), False)]

    def g_loss(
        self, discriminator: Judge, batch: Batch, fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        """Adversarial term on the judged render + lambda * L1 (+ seg_lambda * the frozen
        segmenter's loss on the generated image against the input mask, + seg_match_lambda *
        segmenter_match); `l1` is reported in [0, 1] pixel units."""
        logits = self.fake_logits
        judged = self.judged(batch.masks, fake, logits)
        l1 = (fake.float() - batch.images).abs().mean()
        adversarial = g_adversarial_loss(discriminator(judged), self.cfg.gan_loss)
        loss, stats = adversarial + self.cfg.l1_lambda * l1, {"l1": l1.item() / 2}
        if self.cfg.fm_lambda > 0:
            fm = feature_matching(discriminator, self.judged_real(batch), judged)
            loss, stats["fm"] = loss + self.cfg.fm_lambda * fm, fm.item()
        if logits is not None:
            if self.cfg.seg_lambda > 0:
                seg = segmentation_loss(logits, (batch.masks > 0).float())
                loss, stats["seg"] = loss + self.cfg.seg_lambda * seg, seg.item()
            if self.cfg.seg_match_lambda > 0:
                match = segmenter_match(logits, self.real_logits(batch))
                loss, stats["seg_match"] = loss + self.cfg.seg_match_lambda * match, match.item()
        if self.cfg.mode_seeking > 0:
            # Halves of one batch: the first renders and the second renders of the same masks.
            half = self.second.shape[0]
            term, stats["mode_seeking_ratio"] = mode_seeking_term(
                self.cfg.mode_seeking,
                torch.cat([fake[:half], self.second]),
                torch.cat([self.latents[:half], self.second_latents]),
            )
            loss = loss + term
        return loss, stats

    @torch.no_grad()
    def evaluate(
        self, generator: nn.Module, fixed: Batch
    ) -> tuple[dict[str, float], list[torch.Tensor]]:
        """L1 of the EMA generator on fixed training pairs and latents; grid rows: mask, fake,
        real."""
        seeded = torch.Generator().manual_seed(self.cfg.seed)
        latents = torch.randn(fixed.masks.shape[0], self.cfg.nz, generator=seeded)
        fake = generator(fixed.masks, latents.to(fixed.masks.device))
        metrics = {"eval_l1": float((fake - fixed.images).abs().mean()) / 2}
        rows = [fixed.masks[:8].expand(-1, 3, -1, -1), fake[:8], fixed.images[:8]]
        return metrics, [(r + 1) / 2 for r in rows]

    def fixed_inputs(self, data: PairedData, device: torch.device) -> Batch:
        """The first 16 training pairs, unaugmented."""
        n = min(16, len(data))
        return Batch(
            (data.images[:n].float() / 255 * 2 - 1).to(device),
            (data.masks[:n].float() * 2 - 1).to(device),
        )


def make_task(cfg: TrainConfig) -> UnconditionalTask | Pix2PixTask:
    """The task object for `cfg.kind`."""
    return Pix2PixTask(cfg) if cfg.kind == "stage2" else UnconditionalTask(cfg)
