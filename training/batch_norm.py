"""Batch-norm statistics measured for the EMA generator itself, before it is sampled or saved.

Why: the EMA averages a generator's weights and, beside them, its batch-norm running
statistics. Those averaged statistics belong to the weights the run passed through, not to
their average, and the two can part: at 128x128 the stage II saved at step 4,000 rendered the
real masks with an intensity KL of 0.228 to the photographs (floor 0.0065), paler and browner
than they are; with its statistics measured again, 0.041 (docs/quality.md#128x128). This is SWA's
remedy (`torch.optim.swa_utils.update_bn`, which feeds a model one tensor; a stage II takes a
mask and a latent): run the averaged model once in training mode over the training data,
with cumulative statistics.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from synthmed.training.data.dataset import PairedData
    from synthmed.training.tasks import GanTask


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of `model`, in order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrated(model: nn.Module, inputs: Iterable[tuple[torch.Tensor, ...]]) -> nn.Module:
    """A copy of `model`, in eval mode, whose batch-norm running statistics are the mean over
    `inputs` (each one forward call's arguments) of its own batch statistics; `model` itself
    is left as it was. A model without batch norm comes back as is: nothing to measure."""
    if not batch_norms(model):
        return model
    measured = copy.deepcopy(model)
    for layer in batch_norms(measured):
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: every batch counts the same
    measured.train()
    for args in inputs:
        measured(*args)
    for layer, original in zip(batch_norms(measured), batch_norms(model), strict=True):
        layer.momentum = original.momentum
        layer.num_batches_tracked.copy_(original.num_batches_tracked)
    return measured.eval()


@torch.no_grad()
def with_statistics_of(model: nn.Module, source: nn.Module) -> nn.Module:
    """A copy of `model`, in eval mode, with the batch-norm running statistics of `source`
    (the same architecture): an EMA whose generator trains with fixed statistics is sampled
    with those. Measuring the EMA's own instead gave the 128x128 stage II an intensity KL of
    0.155 and 26 % renders darker or brighter than any photograph, against 0.043 and 1.2 %."""
    copied = copy.deepcopy(model)
    for ours, theirs in zip(batch_norms(copied), batch_norms(source), strict=True):
        ours.running_mean.copy_(theirs.running_mean)
        ours.running_var.copy_(theirs.running_var)
    return copied.eval()


# Batches measured at most: a mean over a thousand images is as good as one over all of them,
# and a run on 50,000 images should not spend an epoch of forward passes on every checkpoint.
MAX_BATCHES = 64


def training_inputs(
    task: GanTask, data: PairedData, device: torch.device, max_batches: int = MAX_BATCHES
) -> Iterator[tuple[torch.Tensor | None, ...]]:
    """The generator's inputs for the training set once over, in batches of the run's size,
    augmented as in training, with latents from the global RNG: in order, or, past
    `max_batches` batches, that many of a permutation drawn from the run's seed. A last,
    smaller batch is left out: its statistics would count as much as a full one's."""
    size = min(task.cfg.batch_size, len(data))
    augment_rng = torch.Generator().manual_seed(task.cfg.seed)
    order = torch.arange(len(data))
    if len(data) // size > max_batches:
        order = torch.randperm(len(data), generator=augment_rng)[: max_batches * size]
    for start in range(0, len(order) - size + 1, size):
        index = order[start : start + size]
        yield task.generator_inputs(task.batch(data, index, augment_rng, device))


def measured_generator(
    generator: nn.Module, task: GanTask, data: PairedData, device: torch.device
) -> nn.Module:
    """`generator` (an EMA) with batch-norm statistics measured on `data`, from the run's
    seed, leaving the caller's random streams where they were: sampling or saving a run must
    not move it."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(task.cfg.seed)
        return recalibrated(generator, training_inputs(task, data, device))
