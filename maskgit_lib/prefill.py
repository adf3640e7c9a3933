"""Filling holes before tokenization: what the VQGAN encoder sees in the missing pixels.

Derived in ``notebooks/04_iterative_decoding.ipynb``, section 4 (gray vs harmonic fill).

The lab paints holes gray (128) and encodes that image. Our VQGAN's encoder has
self-attention over the whole 16x16 grid, so a gray blob changes the token ids of
*known* regions too (about three quarters of them on the test set), and the
transformer then conditions on wrong context. A smooth harmonic fill of the holes
from their borders looks like a plausible image to the encoder and keeps the
known tokens close to the clean image's.

``harmonic_fill`` solves Laplace's equation in the holes (known pixels are the
boundary condition) with a coarse-to-fine push-pull start and Jacobi sweeps:
batched, on any device, deterministic. :data:`PREFILLS` names the choices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError
from .masks import GRAY

GRAY_VALUE = GRAY / 127.5 - 1.0
"""The same colour in [-1, 1]."""


def _check(images: torch.Tensor, pixel_missing: torch.Tensor) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise DataError(f"images must be float (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    b, _, h, w = images.shape
    if pixel_missing.dtype != torch.bool or tuple(pixel_missing.shape) != (b, h, w):
        raise DataError(f"pixel_missing must be bool ({b}, {h}, {w}), got {pixel_missing.dtype} "
                          f"{tuple(pixel_missing.shape)}")


def gray_prefill(images: torch.Tensor, pixel_missing: torch.Tensor) -> torch.Tensor:
    """The lab's input: holes set to gray 128. float (B, C, H, W) -> same shape."""
    _check(images, pixel_missing)
    return images.masked_fill(pixel_missing[:, None], GRAY_VALUE)


def _push_pull(images: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mask-weighted pyramid fill: every missing pixel gets the average of the nearest known scale.

    images (B, C, H, W), known float (B, 1, H, W) in {0, 1} -> (B, C, H, W).
    """
    if min(images.shape[-2:]) <= 1:
        total = known.sum((2, 3), keepdim=True).clamp_min(1e-8)
        mean = (images * known).sum((2, 3), keepdim=True) / total
        return torch.where(known > 0, images, mean.expand_as(images))
    weighted = F.avg_pool2d(images * known, 2, ceil_mode=True)
    weight = F.avg_pool2d(known, 2, ceil_mode=True)
    coarse_known = (weight > 0).to(images.dtype)
    coarse = _push_pull(weighted / weight.clamp_min(1e-8), coarse_known)
    up = F.interpolate(coarse, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return torch.where(known > 0, images, up)


@torch.no_grad()
def harmonic_fill(images: torch.Tensor, pixel_missing: torch.Tensor, sweeps: int = 24) -> torch.Tensor:
    """Smooth fill of the holes (discrete Laplace equation, known pixels fixed).

    Args:
        images: float (B, C, H, W); hole pixels are ignored.
        pixel_missing: bool (B, H, W), True = missing.
        sweeps: Jacobi sweeps after the push-pull start (0 = push-pull only).

    Returns:
        float (B, C, H, W): ``images`` where known (bitwise), the fill in the holes.
        An image with no known pixel is filled with gray.
    """
    _check(images, pixel_missing)
    missing = pixel_missing[:, None]  # (B, 1, H, W)
    known = (~missing).to(images.dtype)
    start = gray_prefill(images, pixel_missing)
    x = _push_pull(start, known)
    x = torch.where(known.sum((2, 3), keepdim=True) > 0, x, start)  # all-missing: gray
    for _ in range(sweeps):  # Jacobi: each hole pixel <- mean of its 4 neighbours (edges replicated)
        p = F.pad(x, (1, 1, 1, 1), mode="replicate")
        neighbours = (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]) * 0.25
        x = torch.where(missing, neighbours, x)
    return torch.where(missing, x, images)


PREFILLS = {"gray": gray_prefill, "harmonic": harmonic_fill}
"""What the encoder sees in the holes: ``gray`` (the lab) or ``harmonic`` (default)."""


def get_prefill(name: str):
    """The prefill function called ``name``; ConfigError naming the choices otherwise."""
    try:
        return PREFILLS[name]
    except KeyError:
        raise ConfigError(f"unknown prefill {name!r}; choose from {sorted(PREFILLS)}") from None
