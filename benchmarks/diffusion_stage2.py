"""A mask-conditional diffusion model as stage II, judged by the oracle arm (a prototype, not
a product model): does a generator that models the whole conditional distribution of the
photograph, instead of pix2pix's L1 + PatchGAN, train a better segmenter?

    python benchmarks/diffusion_stage2.py train --data REAL --out runs/diffusion --steps 12000
    python benchmarks/diffusion_stage2.py oracle --real REAL --real-test HELD_OUT \
        --run "6000 steps=runs/diffusion/ema_006000.safetensors" [--sampler ddim] [--repeats 3]

The denoiser is a small U-Net (channels 16/32/64/128 at 64/32/16/8 px, one residual block
per level, GroupNorm, the timestep as a scale and shift) that sees the noisy image beside the
mask in {-1, 1}; v-prediction under a cosine schedule (Salimans & Ho, 2022), horizontal flips,
AdamW 2e-4, EMA 0.999 of the weights. `oracle` renders every real training mask with the EMA
weights (DDIM with eta 0, or ancestral sampling, `--sampling-steps` steps, noise seeded per
image) and scores the pairs exactly as benchmarks/stage2_variants.py does, beside the real
pairs with the same segmenter seeds. On CPU one training step of 16 costs about 0.22 s on one
thread; a forward pass 0.54 GFLOP per image, so 25 sampling steps cost 14 GFLOP per image
(pix2pix: 0.098). Checkpoints are safetensors. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _machine import header, machine
from _variants import f1, oracle_scores, variant_parser
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from synthmed.atomic import atomic_path
from synthmed.evaluation.distribution import common_fov
from synthmed.evaluation.downstream import spread
from synthmed.evaluation.inputs import split_held_out
from synthmed.training.data.dataset import PairedData, load_paired_data
from synthmed.training.loop import ema_avg_fn

CHANNELS = (16, 32, 64, 128)
TIME_DIM = 128


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled to 0..1000, as DDPM's integer steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    angles = t[:, None] * 1000 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], 1)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv twice; the timestep scales and shifts the middle."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, c_in // 4), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(TIME_DIM, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(8, c_out // 4), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.time(t)[:, :, None, None].chunk(2, 1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return h + self.skip(x)


class Denoiser(nn.Module):
    """(noisy image [N,3,S,S], mask [N,1,S,S] in {-1, 1}, t [N]) -> predicted v."""

    def __init__(self, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        self.time = nn.Sequential(
            nn.Linear(TIME_DIM, TIME_DIM), nn.SiLU(), nn.Linear(TIME_DIM, TIME_DIM)
        )
        self.stem = nn.Conv2d(4, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = channels[0]
        for i, width in enumerate(channels):
            self.down.append(ResBlock(c, width))
            c = width
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.middle = ResBlock(c, c)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(channels))):
            self.up.append(ResBlock(c + channels[i], channels[i]))
            c = channels[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(c, channels[i - 1], 3, padding=1))
                c = channels[i - 1]
        self.head = nn.Sequential(nn.GroupNorm(4, c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        te = self.time(timestep_embedding(t, TIME_DIM))
        h = self.stem(torch.cat([x, mask], 1))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, te)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.middle(h, te)
        for j, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], 1), te)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.head(h)


def signal_noise(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosine schedule: x_t = alpha x_0 + sigma eps with alpha^2 + sigma^2 = 1."""
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def train(args: argparse.Namespace) -> None:
    """v-prediction on random batches of the real pairs; EMA weights saved every
    --save-every steps as ema_STEP.safetensors."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    data = load_paired_data(args.data, args.size, progress=False)
    images = (data.images.float() / 127.5 - 1).to(device)
    masks = (data.masks.float() * 2 - 1).to(device)
    model = Denoiser().to(device)
    ema = Denoiser().to(device).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    update_ema = ema_avg_fn(args.ema)  # the GAN runs' EMA, warm-up included
    args.out.mkdir(parents=True, exist_ok=True)
    for step in tqdm(range(1, args.steps + 1), desc="train diffusion", unit="step"):
        index = torch.randint(0, len(data), (args.batch_size,), device=device)
        x0, mask = images[index], masks[index]
        flip = (torch.rand(args.batch_size, device=device) < 0.5)[:, None, None, None]
        x0, mask = torch.where(flip, x0.flip(-1), x0), torch.where(flip, mask.flip(-1), mask)
        t = torch.rand(args.batch_size, device=device).clamp(1e-3, 1 - 1e-3)
        alpha, sigma = (v[:, None, None, None] for v in signal_noise(t))
        eps = torch.randn_like(x0)
        target = alpha * eps - sigma * x0
        loss = F.mse_loss(model(alpha * x0 + sigma * eps, mask, t), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        update_ema(list(ema.parameters()), list(model.parameters()), torch.tensor(step))
        if step % args.save_every == 0 or step == args.steps:
            with atomic_path(args.out / f"ema_{step:06d}.safetensors") as tmp:
                save_file(ema.state_dict(), str(tmp))


@torch.no_grad()
def render(
    model: Denoiser, masks: torch.Tensor, steps: int, sampler: str, seed: int
) -> torch.Tensor:
    """Masks {-1, 1} [N,1,S,S] -> images in [-1, 1]: DDIM (eta 0) or ancestral (eta 1)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(masks.shape[0], 3, *masks.shape[2:], generator=generator)
    times = torch.linspace(1, 0, steps + 1)
    for i in range(steps):
        alpha, sigma = signal_noise(times[i])
        alpha_next, sigma_next = signal_noise(times[i + 1])
        v = model(x, masks, times[i].expand(masks.shape[0]))
        x0 = (alpha * x - sigma * v).clamp(-1, 1)
        eps = (x - alpha * x0) / sigma
        if sampler == "ddim" or i == steps - 1:
            x = alpha_next * x0 + sigma_next * eps
        else:  # the posterior q(x_next | x_t, x0): DDIM's formula with eta 1
            var = sigma_next**2 * (1 - (alpha * sigma_next / (alpha_next * sigma)) ** 2)
            x = alpha_next * x0 + (sigma_next**2 - var).sqrt() * eps
            x = x + var.sqrt() * torch.randn(x.shape, generator=generator)
    return x


def oracle(args: argparse.Namespace) -> None:
    """Render every real training mask with each checkpoint and score the pairs."""
    print(header())
    real = load_paired_data(args.real, args.size, progress=False)
    held = load_paired_data(args.real_test, args.size, progress=False)
    val, test = split_held_out(held, 0.2, args.seed)
    region = common_fov(real.fov)
    seeds = [args.seed + r for r in range(args.repeats)]
    real_f1 = [f1([real], val, test, s) for s in seeds]
    rows = [{"variant": "real", "f1": real_f1, "ratio": [1.0] * len(seeds)}]
    for name, path in args.run:
        model = Denoiser().eval()
        model.load_state_dict(load_file(str(path)))
        start, batches = time.perf_counter(), []
        for first in range(0, len(real), 50):
            masks = real.masks[first : first + 50].float() * 2 - 1
            x = render(model, masks, args.sampling_steps, args.sampler, args.seed * 100003 + first)
            batches.append(((x + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8))
        seconds = time.perf_counter() - start
        pairs = PairedData(real.names, torch.cat(batches), real.masks, real.fov, "diffusion")
        scores = oracle_scores(pairs, real, (val, test), seeds, real_f1, region)
        rows.append({"variant": name, "checkpoint": str(path), **scores, "render_seconds": seconds})
    print(f"\n{args.sampler}, {args.sampling_steps} steps, {args.repeats} repeats\n")
    print("| variant | oracle F1 | F1 / real F1 | intensity KL |")
    print("|---|---:|---:|---:|")
    for row in rows:
        (m, s), (rm, rs) = spread(row["f1"]), spread(row["ratio"])
        kl = f"{row['kl']:.4f}" if "kl" in row else "-"
        print(f"| {row['variant']} | {m:.3f} ± {s:.3f} | {rm:.3f} ± {rs:.3f} | {kl} |")
    settings = {"sampler": args.sampler, "sampling_steps": args.sampling_steps}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), **settings, "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train", help="Train the denoiser on real pairs.")
    fit.add_argument("--data", type=Path, required=True)
    fit.add_argument("--out", type=Path, required=True)
    fit.add_argument("--steps", type=int, default=12000)
    fit.add_argument("--size", type=int, default=64)
    fit.add_argument("--batch-size", type=int, default=16)
    fit.add_argument("--lr", type=float, default=2e-4)
    fit.add_argument("--ema", type=float, default=0.999)
    fit.add_argument("--seed", type=int, default=2026)
    fit.add_argument("--device", default="cpu")
    fit.add_argument("--save-every", type=int, default=1000)
    score = variant_parser("", "DIFFUSION", "benchmarks/results/stage2_diffusion.json")
    judge = commands.add_parser("oracle", parents=[score], add_help=False,
                                help="Score checkpoints by the oracle arm.")  # fmt: skip
    judge.add_argument("--sampler", choices=("ddim", "ancestral"), default="ddim")
    judge.add_argument("--sampling-steps", type=int, default=25)
    args = parser.parse_args()
    if args.command == "oracle":
        missing = [str(path) for _, path in args.run if not path.is_file()]
        if missing:
            parser.error(f"--run: no checkpoint file at {', '.join(missing)}")
    train(args) if args.command == "train" else oracle(args)


if __name__ == "__main__":
    main()
