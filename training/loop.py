"""What every GAN training run shares: per-step seeds, the EMA update, Ctrl-C handling, the
run folder check, resuming (the saved config, the data check, the saved state), the result,
and the step loop itself (progress bar, divergence stop, logs, samples, checkpoints).
`Trainer` (dual GAN) and `StyleGAN2Trainer` differ only in what one step, one evaluation and
one checkpoint do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import synthmed
from synthmed.errors import TrainingDivergedError, UserInputError
from synthmed.machine import cpu, extensions, has_bf16
from synthmed.training.checkpoint import (
    STATE_FILE,
    keep_snapshot,
    load_training_state,
    read_generator_info,
    save_generator,
    save_training_state,
)
from synthmed.training.distributed import Distributed
from synthmed.training.run_log import CsvLog, TensorBoardLog, save_grid


def step_seed(*parts: int) -> int:
    """A 63-bit seed from (seed, step, rank, ...) that does not collide for nearby inputs."""
    state = np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)
    return int(state[0]) >> 1  # int first: numpy 1.x will not shift a uint64 by a Python int


def channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with its 4-d weights stored channels-last, so that every convolution runs in
    that layout (oneDNN's and cuDNN's faster one for these narrow convolutions): on two CPU
    threads the demo's stage II trains 1.39x (64x64) and 1.22x (128x128) as fast as in the
    contiguous layout, stage I 1.16x (benchmarks/train_step_seconds.py --recipe demo), the
    conditional StyleGAN2 of docs/quality.md with its segmenter-seeing discriminator 1.18x.
    Checkpoints are written contiguous, so nothing saved depends on it."""
    return module.to(memory_format=torch.channels_last)


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision a run trains in: fp32 on a CPU unless bf16 is asked for (it needs bf16
    arithmetic in hardware, which oneDNN otherwise emulates, slower than fp32); with "auto",
    bf16 autocast on CUDA where supported (no loss scaling needed), else fp16."""
    if requested == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else ("fp16" if device.type == "cuda" else "fp32")
    if requested == "fp32" or device.type == "cuda":
        return requested
    if requested == "bf16" and device.type == "cpu":
        info = cpu()
        if not has_bf16(info):
            raise UserInputError(
                f"--precision bf16 on a CPU needs AVX-512 BF16 or AMX, which this one "
                f"({info['model']}) lacks; use fp32"
            )
        return requested
    raise UserInputError(f"--precision {requested} needs a CUDA device; use fp32")


def trained_on(dist: Distributed) -> dict[str, Any]:
    """Where a checkpoint was written. A run repeats bit for bit only on the same kind of CPU
    (or GPU), torch version, thread count and number of ranks: PyTorch's kernels sum in
    another order when any of them changes (one thread against two: stage II weights apart
    by up to 0.016 after 20 steps), and a GAN's trajectory then drifts."""
    info = cpu()
    return {
        "cpu": info["model"],
        "vector_extensions": extensions(info),
        "device": torch.cuda.get_device_name(dist.device)
        if dist.device.type == "cuda"
        else str(dist.device),
        "threads": torch.get_num_threads(),
        "world_size": dist.world_size,
        "torch": torch.__version__,
    }


def ema_avg_fn(decay: float):
    """EMA update with warm-up: the effective decay grows as (1 + n) / (10 + n) towards
    `decay`, so a short run's EMA is not stuck near the random initialisation."""

    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        floats = [(e, p) for e, p in zip(ema_params, params, strict=True) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1 - d)
        for e, p in zip(ema_params, params, strict=True):
            if not e.is_floating_point():  # batch-norm step counters are copied, not averaged
                e.copy_(p)

    return update


class StopRequest:
    """SIGINT/SIGTERM set a flag, so the loop stops between steps and saves a checkpoint.
    A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Install the handlers for the duration of the block (main thread only)."""
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to resume nothing, or to start over a run that is there; create the folder."""
    has_state = (run_dir / STATE_FILE).exists()
    if resume and not has_state:
        raise UserInputError(f"{run_dir}: nothing to resume (no {STATE_FILE})")
    if not resume and has_state:
        raise UserInputError(
            f"{run_dir}: already holds a training run; "
            "pass --resume to continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def resume_config(
    run_dir: Path,
    config_type: type,
    overrides: dict[str, Any],
    *,
    role: str,
    resumable: Sequence[str],
) -> Any:
    """The run config saved in `run_dir` with `overrides` (options typed on the command line)
    applied. Only `resumable` settings may change: any other would make the resumed run a
    different one from the run that was started, so it is refused, naming the option."""
    info = read_generator_info(run_dir, role=role)
    saved = config_type.from_dict(info.metadata["train"])
    for name, value in overrides.items():
        if name not in resumable and value != getattr(saved, name):
            raise UserInputError(
                f"--{name.replace('_', '-')} {value} differs from the run being resumed "
                f"({getattr(saved, name)}); start a new --out to change it"
            )
    return dataclasses.replace(saved, **overrides)


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reports."""

    run_dir: Path
    step: int
    interrupted: bool
    seconds_per_step: float
    last_losses: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    data_real_fraction: float = 0.0  # share of mask pixels that are foreground in the data


class TrainingLoop:
    """The step loop of a training run. A subclass sets `cfg` (with steps, log_every,
    sample_every, checkpoint_every, snapshot_every), `run_dir`, `progress`, `dist`, `data`
    (with `masks`) and `start_step` (or calls `load_state`), calls `open_logs` and implements
    `train_step`, `evaluate`, `save` and `train_mode`."""

    cfg: Any
    run_dir: Path
    progress: bool
    dist: Distributed
    data: Any
    start_step: int
    name: str  # shown on the progress bar: "train <name>"
    divergence_hint: str  # what to try after a NaN, e.g. "Lower --lr"
    precision: str  # resolve_precision's answer: fp32, bf16 or fp16

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward passes' mixed precision: none in fp32, else autocast to bf16 or fp16
        (weights, optimizer state and the EMA stay fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.dist.device.type, dtype=dtype)

    def open_logs(self, resume: bool) -> None:
        """losses.csv (rows: 0-based step indices), eval.csv (rows: steps done), TensorBoard;
        rank 0 only. On resume the rows written after the last checkpoint are dropped."""
        self.csv = self.eval_csv = self.tensorboard = None
        if self.dist.is_main:
            self.csv = CsvLog(self.run_dir / "losses.csv", self.start_step if resume else None)
            self.eval_csv = CsvLog(
                self.run_dir / "eval.csv", self.start_step + 1 if resume else None
            )
            self.tensorboard = TensorBoardLog(self.run_dir / "tensorboard")

    def train_mode(self, step: int) -> None:
        """Put the trained modules in the mode of step `step` (training mode; evaluation
        switches the EMA to eval)."""
        raise NotImplementedError

    def train_step(self, step: int) -> dict[str, float]:
        """One optimisation step; returns its losses."""
        raise NotImplementedError

    def evaluate(self, step: int) -> dict[str, float]:
        """Samples and metrics (rank 0)."""
        raise NotImplementedError

    def save(self, step: int) -> None:
        """Checkpoint (rank 0)."""
        raise NotImplementedError

    def _modules(self) -> dict[str, torch.nn.Module]:
        """What the resume state holds: generator, discriminator, EMA."""
        raise NotImplementedError

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers whose state a resume needs."""
        raise NotImplementedError

    def load_state(self, role: str, data_fingerprint: str) -> dict[str, Any]:
        """Restore modules and optimizers from the run's resume state, and set `start_step`;
        returns the trainer's own saved state (`extra` of `write_checkpoint`). Refused when the
        data differ from the data the run started on: exact resume needs the same examples."""
        info = read_generator_info(self.run_dir, role=role)
        if info.metadata["data"]["fingerprint"] != data_fingerprint:
            raise UserInputError(
                f"--data differs from the data the run in {self.run_dir} started on "
                "(a file was added, removed or changed)"
            )
        self.start_step, extra = load_training_state(
            self.run_dir / STATE_FILE, self._modules(), self._optimizers()
        )
        return extra

    def record_samples(
        self, step: int, rows: list[torch.Tensor], metrics: dict[str, float], columns: int = 8
    ) -> dict[str, float]:
        """Save a sample grid (rows of [N, C, H, W] in [0, 1]) and log evaluation metrics."""
        save_grid(self.run_dir / "samples" / f"step_{step:06d}.png", rows, columns=columns)
        self.eval_csv.write({"step": step, **metrics})
        self.tensorboard.write(step, metrics)
        return metrics

    def write_checkpoint(
        self,
        step: int,
        *,
        generator: torch.nn.Module,
        role: str,
        model_name: str,
        model_config: Any,
        data: dict[str, Any],
        precision: str,
        extra: dict[str, Any],
        notes: dict[str, Any] | None = None,
    ) -> None:
        """The resume state, then the EMA generator with config.json describing the run (and
        `notes`: choices made for this generator after training)."""
        metadata = {
            "train": self.cfg.to_dict(),
            "data": data,
            "precision": precision,
            "synthmed_version": synthmed.__version__,
            "trained_on": trained_on(self.dist),
            **(notes or {}),
        }
        save_training_state(
            self.run_dir / STATE_FILE, self._modules(), self._optimizers(), step, extra
        )
        save_generator(
            self.run_dir,
            generator,
            role=role,
            model_name=model_name,
            model_config=model_config,
            step=step,
            metadata=metadata,
        )

    def log_row(self, losses: dict[str, float]) -> dict[str, Any]:
        """The losses.csv row of a step's losses (subclasses may fix the columns)."""
        return losses

    def _diverged(self, step: int, losses: dict[str, float]) -> TrainingDivergedError:
        kept = (
            f"the last good checkpoint in {self.run_dir} was kept"
            if (self.run_dir / STATE_FILE).exists()
            else "no checkpoint had been written yet"
        )
        return TrainingDivergedError(
            f"a loss became NaN or infinite at step {step} ({format_values(losses)}); {kept}. "
            f"{self.divergence_hint}"
        )

    def run(self) -> TrainResult:
        """Train from `start_step` to `cfg.steps`, logging, sampling and checkpointing on the
        way; SIGINT/SIGTERM stop it after a checkpoint."""
        cfg, main = self.cfg, self.dist.is_main
        stop, step, busy = StopRequest(), self.start_step, 0.0
        result = TrainResult(
            self.run_dir,
            step,
            interrupted=False,
            seconds_per_step=0.0,
            data_real_fraction=float(self.data.masks.float().mean()),
        )
        bar = tqdm(
            total=cfg.steps, initial=step, desc=f"train {self.name}", unit="step",
            disable=not (self.progress and main),
        )  # fmt: skip
        with stop.installed():
            while step < cfg.steps:
                t0 = time.perf_counter()
                self.train_mode(step)
                result.last_losses = losses = self.train_step(step)
                busy += time.perf_counter() - t0
                if self.dist.any_true(not all(math.isfinite(v) for v in losses.values())):
                    raise self._diverged(step, losses)
                step += 1
                bar.update(1)
                bar.set_postfix_str(format_values(losses), refresh=False)
                stopping = self.dist.any_true(stop.requested)
                if main:
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        self.csv.write({"step": step - 1, **self.log_row(losses)})
                        self.tensorboard.write(step - 1, losses)
                    if step % cfg.sample_every == 0 or step == cfg.steps:
                        result.eval_metrics = self.evaluate(step)
                    snapshot = cfg.snapshot_every > 0 and step % cfg.snapshot_every == 0
                    if (
                        step % cfg.checkpoint_every == 0
                        or step == cfg.steps
                        or stopping
                        or snapshot
                    ):
                        self.save(step)
                    if snapshot:
                        keep_snapshot(self.run_dir, step)
                if stopping:
                    break
        bar.close()
        if main:
            self.tensorboard.close()
        self.dist.close()
        result.step, result.interrupted = step, step < cfg.steps
        result.seconds_per_step = busy / max(step - self.start_step, 1)
        return result


def format_values(values: dict[str, float]) -> str:
    """'name=value ...' with 4 significant digits, for the progress bar and messages."""
    return " ".join(f"{k}={v:.4g}" for k, v in values.items())
