"""Single-process and `torchrun` multi-process training on one code path.

Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) each process drives one GPU, or one CPU
worker with the gloo backend; everything else in the loop asks `Distributed` which rank it is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from synthmed.errors import UserInputError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and samples."""
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel when there are several processes, the module itself otherwise."""
        if self.world_size == 1:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def all_true(self, flag: bool) -> bool:
        """Whether `flag` holds on every rank (so all ranks stop together on a signal)."""
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([0 if flag else 1], device=self.device)
        dist.all_reduce(tensor)
        return int(tensor.item()) == 0

    def any_true(self, flag: bool) -> bool:
        """Whether `flag` holds on some rank."""
        return not self.all_true(not flag)

    def average_gradients(self, module: nn.Module) -> None:
        """Average `module`'s gradients over ranks, in one flat all-reduce. For losses with a
        double backward (R1, path length), which DistributedDataParallel cannot wrap."""
        if self.world_size == 1:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.flatten() for g in grads]) / self.world_size
        dist.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of a tensor over ranks (a copy; `value` is left as it is)."""
        if self.world_size == 1:
            return value
        value = value.clone()
        dist.all_reduce(value)
        return value

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over ranks."""
        return self.sum(value) / self.world_size

    def close(self) -> None:
        """Leave the process group once every rank is done with it: a rank that tore gloo
        down while another still wrote its last checkpoint aborted ("terminate called without
        an active exception") now and then on a loaded machine."""
        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


@contextlib.contextmanager
def no_sync(module: nn.Module) -> Iterator[None]:
    """Skip DDP's gradient all-reduce for a backward whose gradients a later one will join."""
    if isinstance(module, DistributedDataParallel):
        with module.no_sync():
            yield
    else:
        yield


def setup(device: str = "auto") -> Distributed:
    """Join the torchrun job if there is one, and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserInputError(f"--device {device}: CUDA is not available on this machine")
        torch_device = torch.device(
            "cuda", local_rank if world_size > 1 else torch.device(device).index or 0
        )
        torch.cuda.set_device(torch_device)
    elif device == "cpu":
        torch_device = torch.device("cpu")
    else:
        raise UserInputError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, torch_device)
