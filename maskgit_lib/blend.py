"""Putting the decoded hole content back into the image (compositing).

Derived in ``notebooks/04_iterative_decoding.ipynb``, section 5 (paste vs Poisson blending).

The VQGAN decodes a whole image, but only its hole pixels are new: the known
pixels are pasted back from the input (the lab's ``paste``). Where the decoded
image does not match the known pixels at the hole's border (another shade, a
slightly moved edge: the tokens around a hole were re-encoded from a prefilled
image), pasting leaves a visible seam.

``poisson`` blending (Perez, Gangnet and Blake, *Poisson image editing*,
SIGGRAPH 2003, "seamless cloning") keeps the decoded content's gradients but
matches the border: it adds to the decoded hole a harmonic correction whose
values on the known pixels are ``input - decoded``::

    correction = harmonic_fill(images - raw, pixel_missing)   # smooth in the hole, exact outside
    out        = paste(raw + correction, images, pixel_missing)

The correction is smooth (it solves Laplace's equation in the hole,
:func:`maskgit_lib.prefill.harmonic_fill`), so the content's edges and texture
stay as decoded; only a slowly varying offset is added. Known pixels are the
input's exactly in both modes.
"""

from __future__ import annotations

import torch

from .data import from_uint8, to_uint8
from .errors import ConfigError
from .prefill import harmonic_fill


def composite(raw: torch.Tensor, images: torch.Tensor, pixel_missing: torch.Tensor) -> torch.Tensor:
    """Paste known input pixels over ``raw`` in 8-bit space (the lab's compositing).

    Args:
        raw: float (B, 3, S, S) decoded images.
        images: float (B, 3, S, S) inputs in [-1, 1].
        pixel_missing: bool (B, S, S), True = take ``raw``.

    Returns:
        float32 (B, 3, S, S) on the 8-bit grid with ``to_uint8(out)[known] == to_uint8(images)[known]``.
    """
    out = torch.where(pixel_missing[:, None].to(raw.device), to_uint8(raw), to_uint8(images.to(raw.device)))
    return from_uint8(out)  # (B, 3, S, S)


def poisson_blend(raw: torch.Tensor, images: torch.Tensor, pixel_missing: torch.Tensor,
                  sweeps: int = 24) -> torch.Tensor:
    """Seamless compositing: ``raw`` plus a harmonic correction that meets the known pixels, then pasted.

    Args and returns as :func:`composite`; ``sweeps`` as :func:`~maskgit_lib.prefill.harmonic_fill`.
    An image with no known pixel gets no correction.
    """
    images = images.to(raw.device)
    pixel_missing = pixel_missing.to(raw.device)
    correction = harmonic_fill(images - raw, pixel_missing, sweeps)  # (B, 3, S, S)
    correction = correction * (~pixel_missing.flatten(1).all(1)).to(raw.dtype)[:, None, None, None]
    return composite((raw + correction).clamp(-1.0, 1.0), images, pixel_missing)


BLENDS = {"paste": composite, "poisson": poisson_blend}
"""How the decoded holes meet the known pixels: ``paste`` (the lab) or ``poisson`` (seamless)."""


def get_blend(name: str):
    """The blending function called ``name``; ConfigError naming the choices otherwise."""
    try:
        return BLENDS[name]
    except KeyError:
        raise ConfigError(f"unknown blend {name!r}; choose from {sorted(BLENDS)}") from None
