"""Images and masks as users hold them (PIL, numpy, tensors, files) <-> the model's 64x64 view.

Used by ``Inpainter.__call__`` (the diffusers-style one-liner) and by ``maskgit inpaint --size input``.
Nothing here runs a model: :func:`prepare_view` turns one full-resolution image and its mask into
the model's view, :meth:`View.paste` puts the filled view back into the full-resolution image.

Geometry: a square input, or a non-square one whose missing pixels all lie in its largest centred
square, is seen exactly as :func:`maskgit_lib.data.load_image` sees it (that square, Lanczos-resized
to S x S). Any other non-square input is resized whole to S x S (stretched): the centre crop would
drop holes outside it, so the model sees every pixel instead. The model's mask is conservative: a
view pixel is missing if any input pixel under it is missing. Going back, the filled view is
Lanczos-resized to the box it came from and only the input's missing pixels take its values, so
every known pixel of the output is byte-identical to the input (after RGBA -> RGB on white).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import INVERTED_WARNING_FRACTION, _mask_tensor, _open, _to_rgb, from_uint8, open_pair, to_uint8
from .errors import ConfigError, DataError

logger = logging.getLogger(__name__)

MASK_CONVENTIONS = ("lab", "white_is_hole")


def check_mask_convention(mask_convention: str) -> str:
    """Return ``mask_convention`` if it is "lab" or "white_is_hole", else raise :class:`ConfigError`."""
    if mask_convention not in MASK_CONVENTIONS:
        raise ConfigError(f"mask_convention must be 'lab' (0 = missing, 255 = known) or 'white_is_hole' "
                          f"(white = hole, as in diffusers/OpenCV), got {mask_convention!r}")
    return mask_convention


def check_image_range(images: torch.Tensor, pixel_missing: torch.Tensor | None = None) -> None:
    """Refuse float images that are evidently not in [-1, 1] (the library's convention).

    The rule, over the known pixels only (holes are ignored by the model): refuse if no value is
    negative (min >= 0), the values are not all equal (an all-white or flat image is valid in both
    conventions) and they are not all exact 8-bit levels of [-1, 1] (``from_uint8`` outputs, e.g.
    a pale image loaded by the library, pass). Values above 1.5 are reported as [0, 255] floats.

    Args:
        images: float (B, 3, H, W).
        pixel_missing: optional bool (B, H, W), True = missing.

    Raises:
        DataError: naming the observed min and max and the conversion to use.
    """
    values = images.detach().float()
    if pixel_missing is not None:
        values = values.movedim(1, -1)[~pixel_missing.to(values.device)]  # (N, 3) known pixels
    if values.numel() == 0:
        return
    low, high = float(values.min()), float(values.max())
    if low < 0 or low == high:
        return
    levels = (values + 1) * 127.5
    if bool(((levels - levels.round()).abs() < 1e-3).all()):
        return  # every value is an 8-bit level of [-1, 1]
    if high > 1.5:
        raise DataError(f"images look like [0, 255] floats (min {round(low, 2)}, max {round(high, 2)}); the "
                        "library expects [-1, 1]: pass images / 127.5 - 1 (or uint8 through "
                        "maskgit_lib.data.from_uint8)")
    raise DataError(f"images look like [0, 1] floats (min {round(low, 2)}, max {round(high, 2)}); the library "
                    "expects [-1, 1]: pass images * 2 - 1 (or uint8 through maskgit_lib.data.from_uint8)")


def to_rgb_array(image) -> np.ndarray:
    """Any image a user holds -> uint8 (H, W, 3) RGB.

    Args:
        image: a PIL image (any mode; alpha is composited onto white, like
            :func:`maskgit_lib.data.load_image`), a file path, a uint8 numpy array
            (H, W), (H, W, 3) or (H, W, 4) (RGBA on white), or a torch tensor: uint8
            like the arrays or (3, H, W), or float (3, H, W) in [-1, 1].

    Raises:
        DataError: an unreadable file, or an array/tensor of another shape, dtype or range.
    """
    if isinstance(image, (str, os.PathLike)):
        image = _open(Path(image))
    if isinstance(image, Image.Image):
        return np.array(_to_rgb(image), dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        if image.is_floating_point():
            if image.dim() != 3 or image.shape[0] != 3:
                raise DataError(f"a float image tensor must be (3, H, W) in [-1, 1], got {tuple(image.shape)}")
            check_image_range(image[None])
            return to_uint8(image.cpu()).permute(1, 2, 0).numpy()
        if image.dim() == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = image.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        image = image.cpu().numpy()
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))):
        raise DataError(f"an image array must be uint8 (H, W), (H, W, 3) or (H, W, 4), got {array.dtype} "
                        f"{array.shape}; convert floats with (x * 255).round().astype(np.uint8)")
    mode = {2: "L", 1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2] if array.ndim == 3 else 2]
    return np.array(_to_rgb(Image.fromarray(np.ascontiguousarray(array.reshape(array.shape[:2]) if mode == "L"
                                                                 else array), mode)), dtype=np.uint8)


def to_pixel_missing(mask, mask_convention: str = "lab") -> np.ndarray:
    """Any mask a user holds -> bool (H, W), True = missing pixel.

    8-bit values are binarized at 128: with "lab" values < 128 are missing (the lab's PNGs:
    0 = missing, 255 = known); with "white_is_hole" values >= 128 are (diffusers/OpenCV).
    Float masks in [0, 1] count as 8-bit x 255. A bool array or tensor is taken as
    ``pixel_missing`` itself (True = missing) whatever the convention. A mask with more
    than 70 % missing pixels (at its own resolution) logs a warning naming the other convention.

    Args:
        mask: PIL image, file path, numpy array or torch tensor, (H, W) or (H, W, C).
        mask_convention: "lab" or "white_is_hole".

    Raises:
        ConfigError: an unknown convention. DataError: an unreadable mask.
    """
    check_mask_convention(mask_convention)
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if isinstance(mask, np.ndarray) and mask.dtype == np.bool_:
        return mask.reshape(mask.shape[:2]) if mask.ndim == 3 and mask.shape[2] == 1 else mask
    if isinstance(mask, np.ndarray) and np.issubdtype(mask.dtype, np.floating):
        if mask.size and (mask.min() < 0 or mask.max() > 1):
            raise DataError(f"a float mask must lie in [0, 1], got min {mask.min():.3g}, max {mask.max():.3g}")
        mask = np.rint(mask * 255).astype(np.uint8)
    gray = to_rgb_array(mask).astype(np.uint16).sum(-1) / 3  # (H, W) gray 0..255
    missing = gray < 128 if mask_convention == "lab" else gray >= 128
    fraction = float(missing.mean()) if missing.size else 0.0
    if fraction > INVERTED_WARNING_FRACTION:
        other = "white_is_hole" if mask_convention == "lab" else "lab"
        logger.warning('the mask marks %.0f%% of pixels missing under mask_convention="%s", so it may be inverted: '
                       'if so pass mask_convention="%s" (CLI: --mask-convention %s).',
                       100 * fraction, mask_convention, other, other)
    return missing


def _conservative_resize(missing: np.ndarray, size: int) -> np.ndarray:
    """bool (h, w) -> bool (size, size): a pixel is missing if any input pixel it overlaps is missing."""
    h, w = missing.shape
    if (h, w) == (size, size):
        return missing.copy()
    integral = np.pad(missing.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # (h+1, w+1)
    j = np.arange(size)
    r0, r1 = (j * h) // size, -((-(j + 1) * h) // size)  # floor, ceil
    c0, c1 = (j * w) // size, -((-(j + 1) * w) // size)
    counts = (integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0])
    return counts > 0


@dataclass(frozen=True)
class View:
    """One full-resolution input and the model's S x S view of it.

    Attributes:
        rgb: uint8 (H, W, 3), the input (RGB, alpha on white).
        missing: bool (H, W), True = missing, at the input's resolution.
        box: (left, top, right, bottom), the region of ``rgb`` the view shows.
        image: uint8 (3, S, S), the view. view_missing: bool (S, S), its mask.
    """

    rgb: np.ndarray
    missing: np.ndarray
    box: tuple[int, int, int, int]
    image: torch.Tensor
    view_missing: torch.Tensor

    def paste(self, filled: torch.Tensor, composite: bool = True) -> Image.Image:
        """Put a filled view back at the input's own size.

        Args:
            filled: float (3, S, S) in [-1, 1] or uint8 (3, S, S), the model's output.
            composite: True: only missing pixels change; False: the whole box takes the
                resized model output (raw decoding).

        Returns:
            An RGB PIL image of the input's size.
        """
        u8 = filled if filled.dtype == torch.uint8 else to_uint8(filled)
        view = Image.fromarray(u8.cpu().permute(1, 2, 0).numpy(), "RGB")
        left, top, right, bottom = self.box
        if view.size != (right - left, bottom - top):
            view = view.resize((right - left, bottom - top), Image.Resampling.LANCZOS)
        up, out = np.asarray(view), self.rgb.copy()
        region = out[top:bottom, left:right]
        if composite:
            hole = self.missing[top:bottom, left:right]
            region[hole] = up[hole]
        else:
            region[...] = up
        return Image.fromarray(out, "RGB")


def make_view(rgb: np.ndarray, missing: np.ndarray, size: int = 64) -> View:
    """uint8 (H, W, 3) + bool (H, W) -> :class:`View` (see the module docstring for the geometry)."""
    h, w = missing.shape
    if rgb.shape[:2] != (h, w):
        raise DataError(f"the mask is {w}x{h} but the image is {rgb.shape[1]}x{rgb.shape[0]}; expected a mask "
                        "of the same size as its image")
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    inside = not missing.any() or not (missing.sum() - missing[top:top + side, left:left + side].sum())
    box = (left, top, left + side, top + side) if inside else (0, 0, w, h)
    im = Image.fromarray(rgb, "RGB").crop(box) if box != (0, 0, w, h) else Image.fromarray(rgb, "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    view_missing = _conservative_resize(missing[box[1]:box[3], box[0]:box[2]], size)
    image = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # (3, S, S)
    return View(rgb, missing, box, image, torch.from_numpy(view_missing))


def prepare_view(image, mask, mask_convention: str = "lab", size: int = 64) -> View:
    """Any image and mask (see :func:`to_rgb_array`, :func:`to_pixel_missing`) -> :class:`View`."""
    return make_view(to_rgb_array(image), to_pixel_missing(mask, mask_convention), size)


def view_batch(views: list[View]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack views: float32 (B, 3, S, S) in [-1, 1] and bool (B, S, S)."""
    return from_uint8(torch.stack([v.image for v in views])), torch.stack([v.view_missing for v in views])


def load_pair_view(image_path: Path, mask_path: Path, threshold: bool = False, mask_convention: str = "lab",
                   size: int = 64) -> View:
    """One lab-layout pair of files -> :class:`View` at the files' own size (``maskgit inpaint --size input``).

    The mask is read as :func:`maskgit_lib.data.load_mask` reads it (binary unless ``threshold``,
    the same warnings), at full resolution.

    Raises:
        DataError: an unreadable file, a non-binary mask, or a mask of another size than its image.
    """
    im_image, im_mask = open_pair(image_path, mask_path)
    missing = _mask_tensor(im_mask, mask_path, None, threshold, check_mask_convention(mask_convention)).numpy()
    return make_view(np.array(_to_rgb(im_image), dtype=np.uint8), missing, size)
