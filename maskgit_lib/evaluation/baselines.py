"""Classical inpainting baselines and the tokenizer ceiling, for the benchmark.

Every classical baseline has one signature::

    inpaint_fn(images, pixel_missing) -> uint8 (B, 3, S, S)

``images`` are uint8 (B, 3, S, S) in 0..255 or float (B, 3, S, S) in [-1, 1]
(hole pixels are ignored); ``pixel_missing`` is bool (B, S, S), True = missing.
Known pixels of the output are byte-identical to ``to_uint8(images)``.

- ``gray``: the lab's masked input itself, holes filled with (128, 128, 128).
- ``telea``: OpenCV's fast-marching method (Telea 2004), radius 3. OpenCV reads
  hole pixels where a hole touches the image edge, so holes are painted gray
  first (the lab's input): every baseline depends on the known pixels only.
- ``navier_stokes``: OpenCV's Navier-Stokes method (Bertalmio et al. 2001), radius 3.
- ``biharmonic``: scikit-image's biharmonic-equation fill.

:func:`vqgan_ceiling` is not an inpainter: it encodes and decodes the full
ground truth, the best any sampler of this tokenizer's tokens can do (raw), or
that reconstruction pasted into the holes of the ground truth (composited).
OpenCV and scikit-image are optional (the ``course`` extra) and imported lazily.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data import from_uint8, to_uint8
from ..errors import ConfigError, DataError
from ..masks import GRAY

InpaintFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CV2_RADIUS = 3


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) unchanged, or float in [-1, 1] -> uint8 (rounded, clamped); on the CPU."""
    if images.dtype == torch.uint8:
        return images.cpu()
    if not images.is_floating_point():
        raise DataError(f"images must be uint8 or float in [-1, 1], got dtype {images.dtype}")
    return to_uint8(images).cpu()


def check_inputs(images: torch.Tensor, pixel_missing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and return ``(uint8 (B, 3, S, S), bool (B, S, S))`` on the CPU.

    Raises:
        DataError: wrong dtype or shapes that do not fit.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise DataError(f"images must be (B, 3, S, S), got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if pixel_missing.dtype != torch.bool or tuple(pixel_missing.shape) != (b, h, w):
        raise DataError(f"pixel_missing must be bool ({b}, {h}, {w}) (True = missing), "
                        f"got {pixel_missing.dtype} {tuple(pixel_missing.shape)}")
    return as_uint8(images), pixel_missing.cpu()


def paste_known(filled: torch.Tensor, images_u8: torch.Tensor, pixel_missing: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S): ``filled`` in the holes, ``images_u8`` elsewhere (byte-identical)."""
    return torch.where(pixel_missing[:, None], filled, images_u8)


def gray_fill(images: torch.Tensor, pixel_missing: torch.Tensor) -> torch.Tensor:
    """The lab's masked input: holes painted (128, 128, 128). Returns uint8 (B, 3, S, S)."""
    images_u8, pixel_missing = check_inputs(images, pixel_missing)
    return paste_known(torch.full_like(images_u8, GRAY), images_u8, pixel_missing)


def _per_image(images: torch.Tensor, pixel_missing: torch.Tensor,
               fill: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> torch.Tensor:
    """Apply ``fill(rgb uint8 (S, S, 3), missing bool (S, S)) -> uint8 (S, S, 3)`` to each image."""
    images_u8, pixel_missing = check_inputs(images, pixel_missing)
    out = images_u8.clone()
    for i in range(len(out)):
        missing = pixel_missing[i].numpy()
        if missing.any():
            rgb = np.ascontiguousarray(images_u8[i].permute(1, 2, 0).numpy())  # (S, S, 3)
            out[i] = torch.from_numpy(np.ascontiguousarray(fill(rgb, missing))).permute(2, 0, 1)
    return paste_known(out, images_u8, pixel_missing)


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - the course extra installs it
        raise ConfigError("the OpenCV baselines need opencv-python-headless "
                          "(pip install -e '.[course]')") from exc
    return cv2


def _opencv(method: str, radius: int) -> InpaintFn:
    def inpaint_fn(images: torch.Tensor, pixel_missing: torch.Tensor) -> torch.Tensor:
        cv2 = _cv2()
        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS

        def fill(rgb: np.ndarray, missing: np.ndarray) -> np.ndarray:
            rgb = np.where(missing[..., None], np.uint8(GRAY), rgb)  # Telea reads hole pixels at the image edge
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            mask = missing.astype(np.uint8) * 255  # OpenCV: 255 = to inpaint
            return cv2.cvtColor(cv2.inpaint(bgr, mask, radius, flag), cv2.COLOR_BGR2RGB)

        return _per_image(images, pixel_missing, fill)

    inpaint_fn.__name__ = method
    inpaint_fn.__doc__ = f"OpenCV ``cv2.inpaint`` ({method}, radius {radius}); returns uint8 (B, 3, S, S)."
    return inpaint_fn


telea = _opencv("telea", CV2_RADIUS)
navier_stokes = _opencv("navier_stokes", CV2_RADIUS)


def biharmonic(images: torch.Tensor, pixel_missing: torch.Tensor) -> torch.Tensor:
    """scikit-image ``inpaint_biharmonic`` per image (channel_axis=-1). Returns uint8 (B, 3, S, S)."""
    try:
        from skimage.restoration import inpaint_biharmonic
    except ImportError as exc:  # pragma: no cover - the course extra installs it
        raise ConfigError("the biharmonic baseline needs scikit-image (pip install -e '.[course]')") from exc

    def fill(rgb: np.ndarray, missing: np.ndarray) -> np.ndarray:
        out = inpaint_biharmonic(rgb.astype(np.float64) / 255.0, missing, channel_axis=-1)  # (S, S, 3)
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)

    return _per_image(images, pixel_missing, fill)


BASELINES: dict[str, InpaintFn] = {
    "gray": gray_fill,
    "telea": telea,
    "navier_stokes": navier_stokes,
    "biharmonic": biharmonic,
}
"""The classical inpainters by name (all share the ``inpaint_fn`` signature)."""


def get_baseline(name: str) -> InpaintFn:
    """Return a classical inpainter by name (:data:`BASELINES`); :class:`ConfigError` if unknown."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[name]


@torch.no_grad()
def vqgan_ceiling(vqgan: torch.nn.Module, ground_truth: torch.Tensor, pixel_missing: torch.Tensor,
                  composite: bool = True, batch_size: int = 64) -> torch.Tensor:
    """Tokenizer ceiling: VQGAN encode + decode of the full ground truth.

    Args:
        vqgan: a :class:`maskgit_lib.vqgan.VQGAN` (eval mode; its device is used).
        ground_truth: uint8 (B, 3, S, S) or float in [-1, 1], the unmasked images.
        pixel_missing: bool (B, S, S), True = hole.
        composite: paste the reconstruction into the holes only (known pixels stay
            the ground truth); False returns the raw reconstruction everywhere.
        batch_size: images per VQGAN pass (fp32).

    Returns:
        uint8 (B, 3, S, S).
    """
    gt_u8, pixel_missing = check_inputs(ground_truth, pixel_missing)
    device = next(vqgan.parameters()).device
    recon = []
    for chunk in gt_u8.split(batch_size):
        tokens = vqgan.encode_to_tokens(from_uint8(chunk).to(device))  # (b, h, w)
        recon.append(to_uint8(vqgan.decode_tokens(tokens).float()).cpu())  # (b, 3, S, S)
    recon_u8 = torch.cat(recon) if recon else gt_u8.clone()
    return paste_known(recon_u8, gt_u8, pixel_missing) if composite else recon_u8
