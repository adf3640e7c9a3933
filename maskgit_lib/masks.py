"""Hole masks in pixel space: the lab's free-form brush strokes, a centred box, an outpainting border.

Conventions: ``pixel_missing`` is bool (H, W) or (B, H, W), True = missing pixel.
On disk (the lab's ``mask64/mask_NNN.png``) a mask is 8-bit grayscale with
0 = missing and 255 = known; :func:`maskgit_lib.data.load_mask` converts.
Masked input images fill their holes with :data:`GRAY` (128, 128, 128), as the lab does.
Everything random takes an optional ``torch.Generator``, so the benchmark's holes are
the same on every machine. Pixel masks become token masks in :mod:`maskgit_lib.masking`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

GRAY = 128  # the lab's hole fill, per channel, in uint8


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _draw_stroke(draw: ImageDraw.ImageDraw, size: int, generator: torch.Generator | None) -> None:
    """One DeepFill-style free-form stroke: a random walk of thick line segments."""
    scale = size / 64
    x, y = _uniform(generator, 0, size), _uniform(generator, 0, size)
    width = _uniform(generator, 3, 9) * scale
    angle = _uniform(generator, 0, 2 * math.pi)
    n_vertex = int(_uniform(generator, 3, 9))
    draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=0)
    for _ in range(n_vertex):
        angle += _uniform(generator, -1.2, 1.2)
        length = _uniform(generator, 4, 16) * scale
        nx = min(max(x + length * math.cos(angle), 0.0), size - 1.0)
        ny = min(max(y + length * math.sin(angle), 0.0), size - 1.0)
        draw.line([(x, y), (nx, ny)], fill=0, width=max(1, round(width)))
        draw.ellipse([nx - width / 2, ny - width / 2, nx + width / 2, ny + width / 2], fill=0)
        x, y = nx, ny


def brush_stroke_mask(
    size: int = 64,
    generator: torch.Generator | None = None,
    min_ratio: float = 0.15,
    max_ratio: float = 0.45,
) -> torch.Tensor:
    """Draw a free-form brush-stroke hole mask (lab / DeepFill style).

    A target fraction is drawn uniformly in ``[min_ratio, max_ratio]``; strokes
    (random walks of thick lines with random width, angle and length) are added
    until the missing fraction reaches it; a mask that overshoots ``max_ratio``
    is discarded and redrawn.

    Args:
        size: side of the square mask in pixels.
        generator: optional ``torch.Generator`` for reproducible masks.
        min_ratio: smallest allowed fraction of missing pixels.
        max_ratio: largest allowed fraction of missing pixels.

    Returns:
        pixel_missing: bool (size, size), True = missing pixel.
    """
    if not 0.0 <= min_ratio < max_ratio <= 1.0:
        raise ValueError(f"need 0 <= min_ratio < max_ratio <= 1, got {min_ratio}, {max_ratio}")
    for _ in range(1000):
        canvas = Image.new("L", (size, size), 255)
        draw = ImageDraw.Draw(canvas)
        ratio, target = 0.0, _uniform(generator, min_ratio, max_ratio)
        while ratio < target:
            _draw_stroke(draw, size, generator)
            ratio = float((np.asarray(canvas) == 0).mean())
        if ratio <= max_ratio:
            return torch.from_numpy(np.asarray(canvas) == 0)
    raise RuntimeError(f"could not draw a brush mask with {min_ratio}..{max_ratio} missing at size {size}")


def box_mask(size: int = 64, box_frac: float = 0.5) -> torch.Tensor:
    """Centred square hole of side ``round(size * box_frac)`` (inpainting track).

    Returns:
        pixel_missing: bool (size, size), True inside the box.
    """
    side = round(size * box_frac)
    start = (size - side) // 2
    pixel_missing = torch.zeros(size, size, dtype=torch.bool)
    pixel_missing[start:start + side, start:start + side] = True
    return pixel_missing


def border_mask(size: int = 64, keep_frac: float = 0.5) -> torch.Tensor:
    """Outpainting mask: keep a centred square of side ``round(size * keep_frac)``.

    Returns:
        pixel_missing: bool (size, size), True everywhere outside the kept box.
    """
    return ~box_mask(size, keep_frac)
