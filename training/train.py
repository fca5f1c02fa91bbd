"""The GAN training loop, readable top to bottom: `train(cfg, run_dir)`.

Reproducibility is by construction: every random draw of step `t` (batch choice, augmentation,
latents, dropout) is seeded from (seed, t, rank), and the checkpoint holds the full model and
optimizer state, so stopping after K steps and resuming gives exactly the losses of an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from synthmed.training.adaptive_augment import augment
from synthmed.training.batch_norm import batch_norms, measured_generator, with_statistics_of
from synthmed.training.config import TrainConfig
from synthmed.training.data.dataset import PairedData, load_paired_data
from synthmed.training.distributed import Distributed, no_sync, setup
from synthmed.training.loop import (
    TrainingLoop,
    TrainResult,
    channels_last,
    ema_avg_fn,
    prepare_run_dir,
    resolve_precision,
    step_seed,
)
from synthmed.training.tasks import GanTask, Pix2PixTask, d_loss, make_task


def _batch_index(cfg: TrainConfig, n: int, step: int, dist: Distributed) -> torch.Tensor:
    """This rank's slice of step `step`'s global batch: a function of (seed, step) alone."""
    generator = torch.Generator().manual_seed(step_seed(cfg.seed, step, 0))
    total = cfg.batch_size * dist.world_size
    index = (
        torch.randperm(n, generator=generator)[:total]
        if total <= n
        else torch.randint(n, (total,), generator=generator)
    )
    return index[dist.rank :: dist.world_size]


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Step `step`'s learning rate: --lr, falling linearly over the last --lr-decay-steps so
    that the final updates are small (pix2pix's schedule)."""
    if not cfg.lr_decay_steps:
        return cfg.lr
    return cfg.lr * min(1.0, (cfg.steps - step) / cfg.lr_decay_steps)


class _Seen:
    """The discriminator as the generator's loss sees it: every input transformed as the
    discriminator's own inputs are (augmentation, instance noise), for its logits and for its
    hidden features (feature matching)."""

    def __init__(self, discriminator: torch.nn.Module, seen: Callable) -> None:
        self.discriminator, self.seen = discriminator, seen

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(self.seen(x))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden activations (stage II's PatchGAN only)."""
        return self.discriminator.features(self.seen(x))


class Trainer(TrainingLoop):
    """Holds the models, optimizers and logs of one run; `run()` is the loop."""

    divergence_hint = "Lower --lr, or use --precision fp32"

    def __init__(self, cfg: TrainConfig, run_dir: Path, *, resume: bool, progress: bool) -> None:
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.dist = setup(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.dist.device)
        if self.dist.is_main:
            prepare_run_dir(run_dir, resume)
        self.data: PairedData = load_paired_data(
            cfg.data,
            cfg.size,
            mask_threshold=cfg.mask_threshold,
            progress=progress and self.dist.is_main,
        )
        self.task: GanTask = make_task(cfg)
        if isinstance(self.task, Pix2PixTask):
            main = self.dist.is_main
            self.task.prepare(
                self.data, run_dir, self.dist.device, save=main, progress=progress and main
            )
            if self.task.segmenter is not None:
                channels_last(self.task.segmenter)
        torch.manual_seed(cfg.seed)
        generator, discriminator = self.task.build()
        device = self.dist.device
        self.generator = channels_last(generator.to(device))
        self.discriminator = channels_last(discriminator.to(device))
        self.ema = AveragedModel(
            self.generator, multi_avg_fn=ema_avg_fn(cfg.ema_decay), use_buffers=True
        )
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr, betas=betas)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.start_step = 0
        self.last_r1 = float("nan")
        self.measured: tuple[int, torch.nn.Module | None] = (-1, None)
        if resume:
            self._load_state()
        self.g_ddp = self.dist.wrap(self.generator)
        self.d_ddp = self.dist.wrap(self.discriminator)
        self.fixed = self.task.fixed_inputs(self.data, device)
        self.name = cfg.kind
        self.open_logs(resume)

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator, "ema": self.ema}

    def fixed_bn(self, step: int) -> bool:
        """Whether step `step` trains the generator with fixed batch-norm statistics (within
        --fixed-bn-steps of the end)."""
        return bool(self.cfg.fixed_bn_steps) and step >= self.cfg.steps - self.cfg.fixed_bn_steps

    def train_mode(self, step: int) -> None:
        """Generator and discriminator in training mode (batch norm, dropout); within
        --fixed-bn-steps of the end, the generator's batch norm in eval mode. Its statistics
        are measured for the live generator at the window's first step; a run resumed later
        in the window saved those (eval mode leaves them be)."""
        self.generator.train()
        self.discriminator.train()
        if not self.fixed_bn(step):
            return
        if not self.fixed_bn(step - 1):
            measured = measured_generator(self.generator, self.task, self.data, self.dist.device)
            self.generator.load_state_dict(measured.state_dict())
        for layer in batch_norms(self.generator):
            layer.eval()

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def _load_state(self) -> None:
        extra = self.load_state(self.task.role, self.data.fingerprint)
        if "scaler" in extra:
            self.scaler.load_state_dict(extra["scaler"])
        self.last_r1 = extra.get("last_r1", self.last_r1)

    def train_step(self, step: int) -> dict[str, float]:
        """One discriminator update, then one generator update; returns the step's losses."""
        cfg, device = self.cfg, self.dist.device
        lr = learning_rate(cfg, step)
        for group in (*self.opt_g.param_groups, *self.opt_d.param_groups):
            group["lr"] = lr
        torch.manual_seed(step_seed(cfg.seed, step, self.dist.rank, 1))
        augment_rng = torch.Generator().manual_seed(step_seed(cfg.seed, step, self.dist.rank, 2))
        batch = self.task.batch(
            self.data, _batch_index(cfg, len(self.data), step, self.dist), augment_rng, device
        )
        with self.autocast():
            fake = self.task.generate(self.g_ddp, batch)

        # Instance noise on everything the discriminator sees, annealed to zero: without it a
        # discriminator tells exactly binary real masks from tanh outputs by their values alone.
        # The schedule has its own horizon, not --steps, so extending a run on resume keeps it.
        noise = cfg.instance_noise * max(0.0, 1.0 - step / cfg.instance_noise_steps)

        def seen(x: torch.Tensor) -> torch.Tensor:
            """What the discriminator is shown: DiffAugment's transforms, then the noise."""
            if cfg.diff_augment:
                x = augment(x, 1.0, self.task.image_channels, cfg.diff_augment)
            return x + noise * torch.randn_like(x) if noise > 0 else x

        # Discriminator: real and fake terms backpropagate separately (own batch statistics);
        # DDP all-reduces once, with the last term.
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            # under autocast for stage II's frozen segmenter: the photographs' view of it is
            # computed at the renders' precision (half the time in bf16)
            terms = self.task.d_inputs(batch, fake.detach())
        stats = {}
        if cfg.r1_gamma > 0:
            if step % cfg.r1_interval == 0:
                with no_sync(self.d_ddp):
                    self.last_r1 = self._r1(terms[0][0], seen)
            stats["r1"] = self.last_r1  # the latest penalty, so every logged row has one
        loss_d = 0.0
        for i, (inputs, is_real) in enumerate(terms):
            sync = contextlib.nullcontext() if i == len(terms) - 1 else no_sync(self.d_ddp)
            with sync, self.autocast():
                logits = self.d_ddp(seen(inputs))
                term = d_loss(logits, is_real, cfg.gan_loss, cfg.label_smoothing)
                term = term * self.task.d_loss_scale
            self.scaler.scale(term).backward()
            loss_d += term.item()
        self.scaler.step(self.opt_d)

        # Generator: through the bare discriminator, which must not collect gradients here.
        self.discriminator.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            judge = _Seen(self.discriminator, seen)
            loss_g, g_stats = self.task.g_loss(judge, batch, fake)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        self.discriminator.requires_grad_(True)
        self.ema.update_parameters(self.generator)
        if cfg.lr_decay_steps:
            stats["lr"] = lr
        return {"loss_d": loss_d, "loss_g": loss_g.item(), **g_stats, **stats}

    def _r1(self, reals: torch.Tensor, seen: Callable) -> float:
        """R1 (Mescheder et al., 2018): penalise the discriminator's gradient on what it is
        shown of the reals, lazily (weight times the interval). Through the bare module,
        whose gradients the step's last, synchronised backward all-reduces. The gradient is
        taken at the augmented reals, not through DiffAugment: CUDA's grid_sample has no second
        derivative (the run stopped at its first R1 step on a GPU)."""
        shown = seen(reals).detach().requires_grad_(True)
        with self.autocast():
            logits = self.discriminator(shown)
        (grads,) = torch.autograd.grad(logits.float().sum(), shown, create_graph=True)
        penalty = grads.float().square().sum(dim=(1, 2, 3)).mean()
        self.scaler.scale(penalty * (self.cfg.r1_gamma / 2) * self.cfg.r1_interval).backward()
        return penalty.item()

    def measured_ema(self, step: int) -> torch.nn.Module:
        """The EMA generator as sampled and saved after `step` steps: with batch-norm
        statistics of its own (batch_norm.py), or, once the generator trains with fixed
        ones, with those; made once per step even when a step both samples and saves."""
        if self.measured[0] != step:
            if self.fixed_bn(step - 1):
                ema = with_statistics_of(self.ema.module, self.generator)
            else:
                ema = measured_generator(self.ema.module, self.task, self.data, self.dist.device)
            self.measured = (step, ema)
        return self.measured[1]

    def evaluate(self, step: int) -> dict[str, float]:
        """EMA metrics and a sample grid (rank 0)."""
        metrics, rows = self.task.evaluate(self.measured_ema(step), self.fixed)
        return self.record_samples(step, rows, metrics)

    def save(self, step: int) -> None:
        """Write the EMA generator and the resume state (rank 0)."""
        generator = self.measured_ema(step)
        model_config, notes = self.task.checkpoint_config(generator, self.data)
        if batch_norms(generator):  # which statistics it carries (measured_ema)
            fixed = self.fixed_bn(step - 1)
            notes["batch_norm_statistics"] = "fixed in training" if fixed else "measured"
        self.write_checkpoint(
            step,
            generator=generator,
            role=self.task.role,
            model_name=self.task.generator_name,
            model_config=model_config,
            data={
                "path": str(Path(self.cfg.data).resolve()),
                "fingerprint": self.data.fingerprint,
                "count": len(self.data),
                "vessel_fraction": self.data.vessel_fraction(),
            },
            precision=self.precision,
            extra={
                "last_r1": self.last_r1,
                **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
            },
            notes=notes,
        )


def train(
    cfg: TrainConfig, run_dir: Path | str, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train one GAN run into `run_dir` (or continue it with `resume=True`)."""
    return Trainer(cfg, Path(run_dir), resume=resume, progress=progress).run()
