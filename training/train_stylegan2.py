"""The conditional StyleGAN2 training loop: `train_stylegan2(cfg, run_dir)`.

Four phases per step, as in StyleGAN2-ADA: the generator's non-saturating loss; every
`pl_interval` steps its path-length penalty; the discriminator's logistic loss; every
`r1_interval` steps its R1 penalty on reals. Regularisers run lazily and their Adam
hyper-parameters are adjusted for it (lr * k/(k+1), beta ** k/(k+1)). Everything the
discriminator sees is augmented (adaptive_augment.py). Classes are sampled uniformly, so a
small modality gets as many steps as a large one. With `--precision bf16` the forward passes
run under bf16 autocast; losses, penalties, weights, optimizer state and the EMA stay fp32.

Several processes (torchrun) average gradients themselves instead of wrapping the models in
DistributedDataParallel, which does not support the double backward of R1 and path length.
Every random draw of step t is seeded from (seed, t, rank), and the checkpoint holds all
model, optimizer, ADA and path-length state, so a resumed run continues exactly.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from synthmed.training.adaptive_augment import AdaptiveProbability, augment
from synthmed.training.class_statistics import class_separability
from synthmed.training.data.classes import ClassData, load_class_data
from synthmed.training.distillation import Teachers
from synthmed.training.distributed import setup
from synthmed.training.lecam import LeCamAnchors
from synthmed.training.loop import (
    TrainingLoop,
    TrainResult,
    channels_last,
    ema_avg_fn,
    prepare_run_dir,
    resolve_precision,
    step_seed,
)
from synthmed.training.models import CStyleGAN2Config, create_model
from synthmed.training.models.stylegan2_layers import pair_halves
from synthmed.training.segmenter import SegmenterBudget, frozen_segmenter
from synthmed.training.stylegan2_config import ARCHITECTURE_SETTINGS, StyleGAN2TrainConfig
from synthmed.training.tasks import (
    CONSISTENCY_SEGMENTER,
    mode_seeking_term,
    segmenter_view,
    straight_through_binary,
)
from synthmed.training.transfer import check_architecture, copy_into, read_source

ROLE = "cstylegan2"
GENERATOR = "cstylegan2_generator"
DISCRIMINATOR = "cstylegan2_discriminator"
GRID_PER_CLASS = 8


def model_config(cfg: StyleGAN2TrainConfig, data: ClassData) -> CStyleGAN2Config:
    """The architecture: the run's widths, and the classes (names, grayscale) of its data."""
    return CStyleGAN2Config(
        classes=data.names,
        grayscale_classes=data.grayscale_classes,
        **{name: getattr(cfg, name) for name in ARCHITECTURE_SETTINGS},
    )


def _lazy_adam(params: Any, cfg: StyleGAN2TrainConfig, interval: int) -> torch.optim.Adam:
    """Adam for a network regularised every `interval` steps (0: never, plain Adam)."""
    ratio = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(
        params, lr=cfg.lr * ratio, betas=(cfg.beta1**ratio, cfg.beta2**ratio), eps=1e-8
    )


class StyleGAN2Trainer(TrainingLoop):
    """Holds the models, optimizers, controllers and logs of one run; `run()` is the loop."""

    name = "stylegan2"
    divergence_hint = "Lower --lr or raise --r1-gamma"

    def __init__(
        self, cfg: StyleGAN2TrainConfig, run_dir: Path, *, resume: bool, progress: bool
    ) -> None:
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.dist = setup(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.dist.device)
        if self.dist.is_main:
            prepare_run_dir(run_dir, resume)
        self.data = load_class_data(
            list(cfg.data),
            cfg.size,
            names=list(cfg.class_names) or None,
            mask_threshold=cfg.mask_threshold,
            progress=progress and self.dist.is_main,
        )
        self.model_config = model_config(cfg, self.data)
        torch.manual_seed(cfg.seed)
        device = self.dist.device
        self.G = channels_last(create_model(GENERATOR, self.model_config).to(device))
        views = 1 if cfg.seg_discriminator else 0
        self.D = create_model(DISCRIMINATOR, replace(self.model_config, view_channels=views))
        self.D = channels_last(self.D.to(device))
        self.segmenter = self._segmenter() if cfg.seg_discriminator else None
        self.ema = AveragedModel(self.G, multi_avg_fn=ema_avg_fn(cfg.ema_decay), use_buffers=True)
        pl_on = cfg.pl_weight > 0
        self.opt_g = _lazy_adam(self.G.parameters(), cfg, cfg.pl_interval if pl_on else 0)
        self.opt_d = _lazy_adam(self.D.parameters(), cfg, cfg.r1_interval)
        self.ada = AdaptiveProbability(
            p=cfg.ada_p, target=cfg.ada_target or 0.0, speed_kimg=cfg.ada_kimg
        )
        self.lecam = LeCamAnchors()
        self.pl_mean = torch.zeros((), device=device)
        self.lazy: dict[str, float] = {}  # the last R1 and path-length values, carried forward
        self.start_step = 0
        self.initialised_from: dict[str, Any] | None = None
        self.teachers = self._teachers() if cfg.distill > 0 else None
        if resume:
            self._load_state()
        elif cfg.init_from is not None:
            self._init_from(Path(cfg.init_from))
        self.fixed = self._fixed_inputs()
        self.open_logs(resume)

    def _segmenter(self) -> torch.nn.Module:
        """--seg-discriminator's frozen segmenter: one U-Net trained on every class's real
        pairs (batches split evenly between classes), kept in the run so a resume reads it."""
        cfg = self.cfg
        model = frozen_segmenter(
            [self.data.pairs(k) for k in range(self.model_config.num_classes)],
            SegmenterBudget(steps=cfg.seg_steps, base_channels=cfg.seg_width),
            self.run_dir / CONSISTENCY_SEGMENTER,
            seed=cfg.seed,
            save=self.dist.is_main,
            progress=self.progress and self.dist.is_main,
        )
        return channels_last(model.to(self.dist.device))

    # --- state -----------------------------------------------------------------------------
    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.G, "discriminator": self.D, "ema": self.ema}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def train_mode(self, step: int) -> None:
        """Generator and discriminator in training mode, at every step."""
        self.G.train()
        self.D.train()

    def _fingerprint(self) -> str:
        return hashlib.sha256(
            "".join(c.fingerprint for c in self.data.classes).encode()
        ).hexdigest()

    def _load_state(self) -> None:
        extra = self.load_state(ROLE, self._fingerprint())
        self.ada.load(extra["ada"])
        if "lecam" in extra:  # runs saved before --lecam existed had none (and no penalty)
            self.lecam.load(extra["lecam"])
        self.pl_mean.fill_(extra["pl_mean"])
        self.lazy = dict(extra["lazy"])
        self.initialised_from = extra.get("initialised_from")
        if self.teachers is not None:
            self.teachers.check_unchanged(extra["teachers"])

    def _init_from(self, path: Path) -> None:
        """Generator, EMA and (from a run folder) discriminator from another run's weights,
        class rows matched by name (training/transfer.py). A resumed run keeps the record."""
        source = read_source(path, ROLE)
        check_architecture(source, self.model_config)
        ours = self.model_config.classes
        networks = {"generator": self.G, "ema": self.ema.module, "discriminator": self.D}
        for name, module in networks.items():
            if name in source.tensors:
                kind = "discriminator" if name == "discriminator" else "generator"
                copy_into(module, source.tensors[name], kind, source.classes, ours)
        self.ema.n_averaged.fill_(1)  # the EMA continues from the source's, not a copy of G
        if source.path_length_mean is not None:
            self.pl_mean.fill_(source.path_length_mean)
        self.initialised_from = source.provenance()
        if self.dist.is_main and self.progress:
            carried = [c for c in ours if c in source.classes] or ["none"]
            print(
                f"--init-from {path} (step {source.step}): {', '.join(source.tensors)}; "
                f"classes carried over: {', '.join(carried)}",
                file=sys.stderr,
            )

    def _fixed_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same latents for every sample grid: one row of GRID_PER_CLASS per class."""
        generator = torch.Generator().manual_seed(self.cfg.seed)
        k = self.model_config.num_classes
        z = torch.randn(k * GRID_PER_CLASS, self.cfg.z_dim, generator=generator)
        labels = torch.arange(k).repeat_interleave(GRID_PER_CLASS)
        return z.to(self.dist.device), labels.to(self.dist.device)

    # --- one step ------------------------------------------------------------------------
    def _reals(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's real batch: classes drawn uniformly, then an example of each."""
        cfg, dist = self.cfg, self.dist
        generator = torch.Generator().manual_seed(step_seed(cfg.seed, step, 0))
        total = cfg.batch_size * dist.world_size
        labels = torch.randint(self.model_config.num_classes, (total,), generator=generator)
        index = torch.empty(total, dtype=torch.int64)
        for k in labels.unique().tolist():
            members = self.data.indices(k)
            chosen = labels == k
            index[chosen] = members[
                torch.randint(len(members), (int(chosen.sum()),), generator=generator)
            ]
        index = index[dist.rank :: dist.world_size]
        images = self.data.images[index].float() / 127.5 - 1
        masks = self.data.masks[index].float() * 2 - 1
        reals = torch.cat([images, masks], dim=1).to(dist.device)
        with torch.no_grad():
            return self._with_view(reals), self.data.labels[index].to(dist.device)

    def _fakes(
        self, labels: torch.Tensor, track: bool = False, noise_mode: str = "random"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Generated samples with style mixing (from a random layer on, a second w takes over),
        their per-layer styles and their latents z."""
        n, num_ws = labels.shape[0], self.model_config.num_ws
        z = torch.randn(n, self.cfg.z_dim, device=labels.device)
        w = self.G.mapping(z, labels)
        if track:
            self.G.mapping.track_average(w, labels)
        ws = w[:, None].repeat(1, num_ws, 1)
        if self.cfg.style_mixing > 0 and torch.rand(()) < self.cfg.style_mixing:
            cutoff = int(torch.randint(1, num_ws, ()))
            w2 = self.G.mapping(torch.randn_like(z), labels)
            ws = torch.cat([ws[:, :cutoff], w2[:, None].expand(-1, num_ws - cutoff, -1)], dim=1)
        return self.G.synthesis(ws, labels, noise_mode), ws, z

    def _with_view(self, sample: torch.Tensor) -> torch.Tensor:
        """Image + mask, and with --seg-discriminator the frozen segmenter's view of the image
        as a last channel: the discriminator then tells generated photographs from real ones
        by how their vessels look to a segmenter beside the mask they come with (stage II's
        winner, docs/quality.md rows 75-77). The generator's gradient flows through it."""
        if self.segmenter is None:
            return sample
        image = sample[:, : self.model_config.image_channels]
        return torch.cat([sample, segmenter_view(self.segmenter(image))], dim=1)

    def _judged(self, fake: torch.Tensor) -> torch.Tensor:
        """A generated sample as the discriminator judges it: with --binary-fakes, its mask
        channel binarised as the exported sampler emits it; with --seg-discriminator, the
        segmenter's view of its image beside it."""
        if self.cfg.binary_fakes:
            # Through a tanh, as stage I's DCGAN ends: the synthesis network's outputs are
            # unbounded, and a straight-through gradient on the raw channel drives it without
            # limit, since the binarised mask the discriminator judges never changes.
            mask = straight_through_binary(torch.tanh(fake[:, -1:]))
            fake = torch.cat([fake[:, :-1], mask], dim=1)
        return self._with_view(fake)

    def _shown(self, x: torch.Tensor) -> torch.Tensor:
        """What the discriminator is shown of x: ADA's transforms at the current p."""
        return augment(x, self.ada.p, self.model_config.image_channels, self.cfg.augments)

    def _critic(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.D(self._shown(x), labels)

    def _apply(
        self, loss: torch.Tensor, module: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients(module)
        optimizer.step()

    def train_step(self, step: int) -> dict[str, float]:
        """Generator, path length, discriminator, R1; returns the step's losses."""
        cfg = self.cfg
        torch.manual_seed(step_seed(cfg.seed, step, self.dist.rank, 1))
        reals, labels = self._reals(step)
        stats: dict[str, float] = {}

        self.D.requires_grad_(False)
        g_labels, noise_mode = labels, "random"
        if cfg.mode_seeking > 0:
            # The two halves share classes and per-pixel noise, so that what differs between
            # them is the latents' doing: sampling holds the noise constant, and a generator
            # that draws its layout from the noise draws one layout per class when served.
            n = labels.shape[0]
            g_labels, noise_mode = pair_halves(labels[: n - n // 2], n), "paired"
        with self.autocast():
            fake, _, z = self._fakes(g_labels, track=True, noise_mode=noise_mode)
            logits = self._critic(self._judged(fake), g_labels)
        loss_g = F.softplus(-logits.float()).mean()
        stats["loss_g"] = loss_g.item()
        if cfg.mode_seeking > 0:
            # On the mask channel, as stage I's term is: on the image channels it is cheapest
            # to satisfy with colours no photograph has. Through a tanh, since the synthesis
            # network's outputs are unbounded and could otherwise simply be inflated.
            term, stats["mode_seeking_ratio"] = mode_seeking_term(
                cfg.mode_seeking, torch.tanh(fake[:, -1:].float()), z
            )
            loss_g = loss_g + term
        if self.teachers is not None:
            term = self.teachers.term(self.G, labels.shape[0], self.autocast, self.dist.device)
            stats["distill"] = term.item()
            loss_g = loss_g + cfg.distill * term
        self._apply(loss_g, self.G, self.opt_g)
        if cfg.pl_weight > 0 and step % cfg.pl_interval == 0:
            self.lazy["path_length"] = self._path_length_step(labels)
        self.D.requires_grad_(True)

        with self.autocast():
            with torch.no_grad():
                fake, _, _ = self._fakes(labels)
            logits_fake = self._critic(self._judged(fake), labels).float()
            logits_real = self._critic(reals, labels).float()
        self.ada.observe(logits_real)
        loss_d = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        if cfg.lecam > 0:
            lecam = self._lecam(logits_fake, real=False) + self._lecam(logits_real, real=True)
            stats["lecam"] = lecam.item()
            loss_d = loss_d + cfg.lecam * lecam
        self._apply(loss_d, self.D, self.opt_d)
        stats.update(
            loss_d=loss_d.item(),
            d_real=logits_real.mean().item(),
            d_fake=logits_fake.mean().item(),
        )
        stats.update(self._leads(logits_real.detach(), logits_fake.detach(), labels))
        if step % cfg.r1_interval == 0:
            self.lazy["r1"] = self._r1_step(reals, labels)
        stats.update(self.lazy)
        if cfg.ada_target is not None:
            self.ada.target = cfg.ada_target
            sign = self.ada.update(cfg.batch_size * self.dist.world_size, self.dist)
            if not math.isnan(sign):
                stats["ada_rt"] = sign
        stats["ada_p"] = self.ada.p
        self.ema.update_parameters(self.G)
        return stats

    def _teachers(self) -> Teachers:
        """--distill's frozen generators: --init-from's source first, then --distill-from's."""
        cfg = self.cfg
        paths = [Path(p) for p in (cfg.init_from, *cfg.distill_from) if p is not None]
        teachers = Teachers(paths, self.model_config, ROLE, self.dist.device)
        if self.dist.is_main and self.progress:
            for record in teachers.records:
                print(
                    f"--distill: {', '.join(record['classes'])} held to {record['path']} "
                    f"(step {record['step']})",
                    file=sys.stderr,
                )
        return teachers

    def _leads(
        self, logits_real: torch.Tensor, logits_fake: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        """With several classes, the discriminator's lead (mean D(real) - D(fake)) on each
        class of this batch: the overall d_real and d_fake can look calm while it wins outright
        on one class, which is how a class that the generator is losing shows first."""
        if self.model_config.num_classes < 2:
            return {}
        return {
            _lead_column(self.model_config.classes[k]): (
                logits_real[labels == k].mean() - logits_fake[labels == k].mean()
            ).item()
            for k in labels.unique().tolist()
        }

    def _lecam(self, logits: torch.Tensor, *, real: bool) -> torch.Tensor:
        """LeCam's term for one side, its moving average fed the mean over every process."""
        mean = float(self.dist.mean(logits.detach().float().mean()))
        return self.lecam.term(logits, real, mean)

    def _path_length_step(self, labels: torch.Tensor) -> float:
        """Penalise changes in |J_w^T y| from its running mean (smooth W -> image map)."""
        n = max(1, labels.shape[0] // 2)
        with self.autocast():
            fake, ws, _ = self._fakes(labels[:n])
        fake = fake.float()
        noise = torch.randn_like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
        (grads,) = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
        lengths = grads.float().square().sum(dim=2).mean(dim=1).sqrt()
        self.pl_mean.lerp_(self.dist.mean(lengths.mean().detach()), 0.01)
        penalty = (lengths - self.pl_mean).square().mean()
        self._apply(penalty * self.cfg.pl_weight * self.cfg.pl_interval, self.G, self.opt_g)
        return penalty.item()

    def _r1_step(self, reals: torch.Tensor, labels: torch.Tensor) -> float:
        """Penalise the discriminator's gradient on (augmented) reals: R1, lazily."""
        # At the augmented images, not through ADA's transforms: CUDA has no second derivative
        # of grid_sample.
        shown = self._shown(reals).detach().requires_grad_(True)
        with self.autocast():
            logits = self.D(shown, labels).float()
        (grads,) = torch.autograd.grad(logits.sum(), shown, create_graph=True)
        penalty = grads.square().sum(dim=(1, 2, 3)).mean()
        loss = penalty * (self.cfg.gamma / 2) * self.cfg.r1_interval
        self._apply(loss + logits.sum() * 0, self.D, self.opt_d)
        return penalty.item()

    # --- reporting -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """EMA samples: a grid (image row, mask row per class) and how well classes separate."""
        ema = self.ema.module.eval()
        z, labels = self.fixed
        out = ema(z, labels)
        c = self.model_config.image_channels
        rows = []
        for k in range(self.model_config.num_classes):
            chosen = out[labels == k]
            rows += [(chosen[:, :c] + 1) / 2, (chosen[:, c:] > 0).float()]
        metrics = class_separability(self.data, out, labels)
        return self.record_samples(step, rows, metrics, columns=GRID_PER_CLASS)

    def save(self, step: int) -> None:
        """Write the EMA generator and the resume state (rank 0)."""
        self.write_checkpoint(
            step,
            generator=self.ema.module,
            role=ROLE,
            model_name=GENERATOR,
            model_config=self.model_config,
            data={
                "path": [c.data for c in self.data.classes],
                "fingerprint": self._fingerprint(),
                "count": len(self.data),
                "classes": [asdict(c) for c in self.data.classes],
            },
            precision=self.precision,
            extra={
                "ada": self.ada.state(),
                "lecam": self.lecam.state(),
                "pl_mean": float(self.pl_mean),
                "lazy": self.lazy,
                "initialised_from": self.initialised_from,
                "teachers": self.teachers.records if self.teachers is not None else None,
            },
            notes=self._provenance() or None,
        )

    def _provenance(self) -> dict[str, Any]:
        """What config.json records of where the run's weights and distilled samples came from."""
        teachers = self.teachers.records if self.teachers is not None else None
        notes = {"initialised_from": self.initialised_from, "distilled_from": teachers}
        return {name: value for name, value in notes.items() if value}

    def log_row(self, losses: dict[str, float]) -> dict[str, float | str]:
        """Fixed CSV columns (R1 and path length hold their last value; blank before the first)."""
        columns = _COLUMNS + (("mode_seeking_ratio",) if self.cfg.mode_seeking > 0 else ())
        columns += ("lecam",) if self.cfg.lecam > 0 else ()
        columns += ("distill",) if self.cfg.distill > 0 else ()
        if self.model_config.num_classes > 1:
            columns += tuple(_lead_column(name) for name in self.model_config.classes)
        return {name: losses.get(name, "") for name in columns}


_COLUMNS = ("loss_g", "loss_d", "d_real", "d_fake", "r1", "path_length", "ada_p", "ada_rt")


def _lead_column(class_name: str) -> str:
    """The losses.csv column of the discriminator's lead on one class."""
    return f"d_lead_{class_name}"


def train_stylegan2(
    cfg: StyleGAN2TrainConfig, run_dir: Path | str, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train one conditional StyleGAN2 run into `run_dir` (or continue it with `resume`)."""
    return StyleGAN2Trainer(cfg, Path(run_dir), resume=resume, progress=progress).run()
