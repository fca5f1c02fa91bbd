"""How generator tensors become pixels, in one place for PyTorch sampling and exported graphs.

Every path that turns a generator's output into an image or a mask (in-process sampling, the
ONNX graphs, Triton) must round and threshold identically, or the same latent would give
different datasets on different runtimes. The exported graphs call these same functions.

TensorRT accepts UINT8 only as a network input or output, so UINT8 tensors are touched by
nothing but a Cast: inputs are cast to float first, outputs are cast from float last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tanh_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generator output [N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C], rounding half up.

    Adding 0.5 and truncating (what a cast to uint8 does to a non-negative float) is exact
    to express in ONNX and TensorRT, unlike round-half-to-even.
    """
    pixels = ((x.float() + 1) * 127.5 + 0.5).clamp(0, 255)
    return pixels.permute(0, 2, 3, 1).to(torch.uint8)


def hysteresis_reach(size: int) -> int:
    """How many 8-connected steps a vessel piece may reach from a confident pixel (half the
    side): a bound that keeps the graph a fixed stack of max-pools. On the demo stage I's
    masks it keeps exactly the pieces that connected-component labelling keeps (a quarter of
    the side did not, in 3 of 200 masks)."""
    return max(size // 2, 1)


def binary_mask(x: torch.Tensor, confidence: float = 0.0) -> torch.Tensor:
    """Stage I output [N, 1, H, W] -> vessel mask in {0., 1.}: vessel where output > 0.

    With `confidence` > 0, a piece of vessel is kept only if the output exceeds `confidence`
    somewhere within `hysteresis_reach` steps along it (hysteresis, as in Canny's edge
    detector): a DCGAN draws its trees confidently and the specks and broken twigs beside
    them near 0, so this drops those without thinning any vessel it keeps.
    """
    if confidence <= 0:
        return (x > 0).to(x.dtype)
    return (reachable_output(x) > confidence).to(x.dtype)


def reachable_output(x: torch.Tensor) -> torch.Tensor:
    """The highest stage I output within `hysteresis_reach` steps along the vessel (output >
    0) from each vessel pixel; 0 off the vessels. A pixel is kept at confidence c exactly when
    this exceeds c, so one propagation serves every candidate confidence (the calibration's)."""
    vessel = (x > 0).to(x.dtype)
    reach = x * vessel
    for _ in range(hysteresis_reach(x.shape[-1])):
        reach = F.max_pool2d(reach, 3, stride=1, padding=1) * vessel
    return reach


def mask_to_uint8(mask: torch.Tensor) -> torch.Tensor:
    """{0, 1} mask [N, 1, H, W] -> uint8 [N, H, W] with 255 for vessel (a viewable PNG)."""
    return (mask.squeeze(1).float() * 255).to(torch.uint8)


def mask_to_input(mask: torch.Tensor) -> torch.Tensor:
    """{0, 1} mask [N, 1, H, W] -> stage II input in {-1, 1}."""
    return mask * 2 - 1


def uint8_mask_to_input(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 mask [N, H, W] (>= 128 is vessel) -> stage II input [N, 1, H, W] in {-1, 1}.

    Thresholding at half range lets a hand-drawn, antialiased mask go straight in.
    """
    return mask_to_input((mask.to(dtype) >= 127.5).to(dtype).unsqueeze(1))


def conditional_to_uint8(
    out: torch.Tensor, confidence: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional StyleGAN2 output [N, C + 1, H, W] -> (image uint8 [N, H, W, 3], mask uint8
    [N, H, W]): the image channels as pixels (one channel is repeated to RGB), the last
    channel as a mask (> 0 is foreground; with `confidence` > 0, stage I's hysteresis on its
    tanh, which the exported graphs do not apply yet: benchmarks/cstylegan2_mask_confidence.py)."""
    channels = out.shape[1] - 1
    image = out[:, :channels].expand(-1, 3, -1, -1) if channels == 1 else out[:, :channels]
    mask = out[:, channels:]
    mask = binary_mask(torch.tanh(mask) if confidence > 0 else mask, confidence)
    return tanh_to_uint8(image), mask_to_uint8(mask)
