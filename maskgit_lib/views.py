"""Fixed views of the training images: the transformer's data augmentation.

The transformer trains on token grids that the frozen VQGAN computed once
(token cache), so its augmentation is a fixed set of *views* of each training
image, each tokenized once. A view is a name made of ``+``-joined parts:

- ``id``: the image itself; ``flip``: its mirror image (left-right);
- ``small``: the content shrunk to 7/8 of the side, centred on white (emoji
  sit on white, so this is a smaller emoji, not a cropped one);
- ``large``: the content enlarged to 9/8 of the side, centre-cropped.

e.g. ``small+flip``. The default ``id,flip`` doubles the data as the lab's
random flips do; ``id,flip,small,small+flip,large,large+flip`` gives 6x. Zoomed
views move the content off the 4-pixel token grid, so they also give the
transformer new token patterns of the same shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError

PARTS = ("id", "flip", "small", "large")
DEFAULT_VIEWS = ("id", "flip")
ZOOM = {"small": 7 / 8, "large": 9 / 8}
WHITE = 255


def check_view(view: str) -> str:
    """Return ``view`` if it is a valid view name, else raise ConfigError saying what is allowed."""
    parts = view.split("+")
    zooms = [p for p in parts if p in ZOOM]
    if (not view or any(p not in PARTS for p in parts) or len(set(parts)) != len(parts) or len(zooms) > 1
            or ("id" in parts and len(parts) > 1)):
        raise ConfigError(f"bad view {view!r}: expected 'id', or '+'-joined parts from flip, small|large "
                          f"(e.g. 'small+flip')")
    return view


def parse_views(text: str) -> tuple[str, ...]:
    """``"id,flip,small"`` -> ``("id", "flip", "small")`` (ConfigError on an unknown or repeated view)."""
    views = tuple(v.strip() for v in text.split(","))
    for view in views:
        check_view(view)
    if len(set(views)) != len(views):
        raise ConfigError(f"views {text!r} repeat a view")
    return views


def hflip(images: torch.Tensor) -> torch.Tensor:
    """Mirror left-right: (..., H, W) -> a new (..., H, W) tensor, any dtype (the library's one flip).

    Used for the ``flip`` view, the VQGAN's random flips
    (:func:`maskgit_lib.training.data.random_hflip`) and the mirrored hole masks
    (:mod:`maskgit_lib.training.hole_examples`).
    """
    return images.flip(-1)


def _zoom(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale uint8 (N, 3, S, S) content by ``factor`` about the centre; white where nothing lands."""
    size = images.shape[-1]
    new = round(size * factor)
    scaled = F.interpolate(images.float(), size=(new, new), mode="bilinear", antialias=True, align_corners=False)
    scaled = scaled.round().clamp(0, 255).to(torch.uint8)  # (N, 3, new, new)
    if new >= size:
        lo = (new - size) // 2
        return scaled[..., lo:lo + size, lo:lo + size].contiguous()
    out = torch.full_like(images, WHITE)
    lo = (size - new) // 2
    out[..., lo:lo + new, lo:lo + new] = scaled
    return out


def apply_view(images_u8: torch.Tensor, view: str) -> torch.Tensor:
    """The ``view`` of uint8 images (N, 3, S, S) -> uint8 (N, 3, S, S); the input is not modified."""
    parts = check_view(view).split("+")
    if images_u8.dtype != torch.uint8 or images_u8.dim() != 4:
        raise ConfigError(f"apply_view expects uint8 images (N, 3, S, S), got {images_u8.dtype} "
                          f"{tuple(images_u8.shape)}")
    out = images_u8
    for part in parts:
        if part in ZOOM:
            out = _zoom(out, ZOOM[part])
    if "flip" in parts:
        out = hflip(out)
    return out.clone() if out is images_u8 else out
