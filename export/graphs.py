"""The exported graphs: generators wrapped with their pixel conversions and the I/O of
synthmed's contract (`synthmed.contract`: names, dtypes and shapes of every model's tensors).

The mask is binarised in stage I's graph (tanh output > 0, with the generator's hysteresis:
`DCGANGenerator.mask`) and read back in stage II's graph
as vessel where >= 128, so a hand-drawn, antialiased mask can be sent to stage II directly.
Converting to UINT8 inside the graph cuts the bytes on the wire four-fold. With `dtype`
float16 the generators run in half precision while the I/O types stay the same.
"""

from __future__ import annotations

import torch
from torch import nn

from synthmed.contract import CONDITIONAL, FUSED, MODELS, SINGLE, STAGE1, STAGE2
from synthmed.training.pixels import (
    conditional_to_uint8,
    mask_to_input,
    mask_to_uint8,
    tanh_to_uint8,
    uint8_mask_to_input,
)


class Stage1Graph(nn.Module):
    """z -> mask."""

    input_names = MODELS[STAGE1].input_names
    output_names = MODELS[STAGE1].output_names

    def __init__(self, generator: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.generator, self.dtype = generator, dtype

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents float32 [B, nz] -> uint8 mask [B, H, W]."""
        return mask_to_uint8(self.generator.mask(z.to(self.dtype)))


class Stage2Graph(nn.Module):
    """(mask, z) -> image; z feeds the generator's noise maps (ignored by one without)."""

    input_names = MODELS[STAGE2].input_names
    output_names = MODELS[STAGE2].output_names

    def __init__(self, generator: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.generator, self.dtype = generator, dtype

    def forward(self, mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """uint8 mask [B, H, W], latents float32 [B, nz] -> uint8 RGB image [B, H, W, 3]."""
        return tanh_to_uint8(
            self.generator(uint8_mask_to_input(mask, self.dtype), z.to(self.dtype))
        )


class FusedGraph(nn.Module):
    """z -> (image, mask) in one graph, for runtimes without ensembles."""

    input_names = MODELS[FUSED].input_names
    output_names = MODELS[FUSED].output_names

    def __init__(self, stage1: nn.Module, stage2: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.stage1, self.stage2, self.dtype = stage1, stage2, dtype

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both stages, with the same binarisation between them as the ensemble and the same
        z to both; the mask passes between them as float, so no UINT8 tensor sits inside."""
        z = z.to(self.dtype)
        mask = self.stage1.mask(z)
        return tanh_to_uint8(self.stage2(mask_to_input(mask), z)), mask_to_uint8(mask)


class SingleGraph(nn.Module):
    """z -> image (the single-GAN baseline)."""

    input_names = MODELS[SINGLE].input_names
    output_names = MODELS[SINGLE].output_names

    def __init__(self, generator: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.generator, self.dtype = generator, dtype

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents float32 [B, nz] -> uint8 RGB image [B, H, W, 3]."""
        return tanh_to_uint8(self.generator(z.to(self.dtype)))


class ConditionalGraph(nn.Module):
    """(z, class, truncation) -> (image, mask): the conditional StyleGAN2.

    Per-layer noise is the generator's stored constant pattern, so the outputs are a pure
    function of the inputs. Truncation is per sample (psi = 1 leaves w as drawn), towards the
    sample's class average. A one-channel generator's image is repeated to RGB, so every
    model serves the same image contract.
    """

    input_names = MODELS[CONDITIONAL].input_names
    output_names = MODELS[CONDITIONAL].output_names

    def __init__(self, generator: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.generator, self.dtype = generator, dtype

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor, truncation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z float32 [B, z_dim], class int64 [B], truncation float32 [B] -> uint8 outputs."""
        out = self.generator(
            z.to(self.dtype), labels, truncation.to(self.dtype), noise_mode="const"
        )
        return conditional_to_uint8(out)
