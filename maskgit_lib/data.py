"""Loading and validating images and hole masks.

Accepted: the default dataset (``maskgit prepare-data``), the course lab's layout
(``train/``, ``val/``, ``masked_image/image_NNN.png`` with ``mask64/mask_NNN.png``), and
any folder of images of any size and mode (centre-cropped, resized to 64x64 with
antialiasing, RGB: alpha on white, grayscale and 16-bit scaled properly).

Conventions: ``images`` are float32 (3, H, W) in [-1, 1]; masks are returned
as ``pixel_missing`` bool (H, W), True = missing pixel (the lab's mask value 0),
False = known (255). Every user error raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import paths
from .outputs import atomic_write
from .errors import DataError
from .views import hflip

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
INVERTED_WARNING_FRACTION = 0.7


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Return the image files directly inside ``folder``, sorted by name.

    Extensions (any case): png, jpg, jpeg, bmp, webp, gif, tif, tiff. Hidden files are skipped.

    Raises:
        DataError: if the folder is missing, is not a folder, or holds no images.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"Image folder {folder} does not exist; expected a folder of images "
                        "(for the default dataset run `maskgit prepare-data`).")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder; expected a folder of images.")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"Image folder {folder} holds no images; expected files ending in "
                        f"{', '.join(IMAGE_EXTENSIONS)}.")
    return files


def _open(path: Path, draft_size: int | None = None) -> Image.Image:
    """Open and fully decode ``path`` (first frame, EXIF orientation applied).

    ``draft_size`` lets JPEG decode huge photos at a reduced scale (at least that
    size). Every failure becomes a :class:`DataError` naming the file.
    """
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected an image file.")
    if not path.is_file():
        raise DataError(f"Image file {path} does not exist; expected an image file.")
    if path.stat().st_size == 0:
        raise DataError(f"Image file {path} is empty (0 bytes); expected an image file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if draft_size is not None:
                    im.draft("RGB", (draft_size, draft_size))
                im.load()
                if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation tag
                    return ImageOps.exif_transpose(im)
                return im
    except Image.DecompressionBombError as exc:
        raise DataError(f"Image file {path} is too large to decode safely ({exc}); "
                        "expected an image under about 178 million pixels.") from exc
    except PermissionError as exc:
        raise DataError(f"Image file {path} cannot be read (permission denied); check its permissions.") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{path} is not an image PIL can read; expected a PNG/JPEG/BMP/WebP/GIF/TIFF file.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"Image file {path} is truncated or corrupt ({exc}); expected a complete image file.") from exc


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: alpha onto white, 16/32-bit and float scaled to 0..255."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 16-bit -> 8-bit
        elif im.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _center_square(im: Image.Image) -> Image.Image:
    """Crop the largest centred square."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side)) if w != h else im


def load_image(path: str | os.PathLike, size: int = 64) -> torch.Tensor:
    """Load any image as a square RGB tensor.

    The image is decoded (first frame, EXIF orientation applied), converted to
    RGB (alpha composited onto white), centre-cropped to a square and resized
    to ``size`` with Lanczos antialiasing (skipped when already that size).

    Args:
        path: image file.
        size: output side in pixels.

    Returns:
        image: float32 (3, size, size) in [-1, 1].

    Raises:
        DataError: for a missing, empty, non-image, truncated or corrupt file.
    """
    return _image_tensor(_open(Path(path), draft_size=size), size)


def _image_tensor(im: Image.Image, size: int) -> torch.Tensor:
    """Decoded PIL image of any mode -> float32 (3, size, size) in [-1, 1]."""
    im = _center_square(_to_rgb(im))
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return from_uint8(torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map float images in [-1, 1] (any shape) to uint8 0..255, rounding and clamping."""
    return ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 0..255 (any shape) to float32 in [-1, 1]; ``to_uint8`` inverts it exactly."""
    return images.to(torch.float32) / 127.5 - 1.0


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write one image as an 8-bit RGB PNG (parent folders are created).

    Args:
        image: float (3, H, W) in [-1, 1]; values outside are clamped.
        path: destination file (the format follows the extension; use ``.png``).

    Returns:
        The path written.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"save_image expects one image of shape (3, H, W), got {tuple(image.shape)}")
    path = Path(path)
    pil = Image.fromarray(to_uint8(image.cpu()).permute(1, 2, 0).numpy(), "RGB")
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    return atomic_write(path, lambda tmp: pil.save(tmp, format=fmt))  # a full disk leaves no truncated file


def _resize_mask(known: np.ndarray, size: int) -> np.ndarray:
    """Resize a bool (h, w) known-map: a pixel stays known only if its whole footprint is known."""
    im = _center_square(Image.fromarray(np.where(known, 255, 0).astype(np.uint8), "L"))
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BOX)
    return np.asarray(im) == 255


def load_mask(path: str | os.PathLike, size: int | None = None, threshold: bool = False,
              mask_convention: str = "lab") -> torch.Tensor:
    """Load a hole mask: ``mask_convention`` "lab" (0 = missing, 255 = known) or "white_is_hole" (255 = missing).

    Args:
        path: 8-bit grayscale mask image (RGB masks are converted to gray).
        size: if given, the mask is centre-cropped to a square and resized to
            ``size``; a resized pixel is known only if every source pixel under
            it is known (the conservative choice, like the lab's token rule).
        threshold: accept non-binary masks: values < 128 become missing (>= 128 with "white_is_hole").
        mask_convention: "lab" or "white_is_hole" (diffusers/OpenCV: white = hole).

    Returns:
        pixel_missing: bool (H, W), True = missing pixel.

    Raises:
        DataError: an unreadable file, or values other than 0 and 255 without ``threshold``.
    """
    path = Path(path)
    return _mask_tensor(_open(path), path, size, threshold, mask_convention)


def _mask_tensor(im: Image.Image, path: Path, size: int | None, threshold: bool,
                 convention: str = "lab") -> torch.Tensor:
    """Decoded mask image -> pixel_missing bool (H, W); see :func:`load_mask`."""
    gray = np.asarray(im.convert("L") if im.mode in ("L", "1") else _to_rgb(im).convert("L"))  # (H, W) uint8
    lab = convention == "lab"
    if threshold:
        known = (gray >= 128) == lab
    else:
        values = np.unique(gray)
        if not np.isin(values, (0, 255)).all():
            shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
            meaning = ("0 (missing) and 255 (known)", "< 128") if lab else ("0 (known) and 255 (hole)", ">= 128")
            raise DataError(f"Mask {path} is not binary (values {shown}); expected only {meaning[0]}. Pass "
                            f"threshold=True (CLI: --threshold) to treat values {meaning[1]} as missing.")
        known = gray == (255 if lab else 0)
    fraction = 1.0 - float(known.mean()) if known.size else 0.0  # at the mask's own resolution, before resizing
    if size is not None:
        known = _resize_mask(known, size)
    pixel_missing = torch.from_numpy(~known)  # (H, W) bool
    if fraction > INVERTED_WARNING_FRACTION:
        value, rule, other = ("0", "0 = missing, 255 = known", "white_is_hole") if lab else ("255", "255 = hole", "lab")
        logger.warning("Mask %s marks %.0f%% of pixels missing (value %s); the convention is %s, so this mask may be "
                       "inverted: if so pass --mask-convention %s (Python: mask_convention=\"%s\").",
                       path, 100 * fraction, value, rule, other, other)
    return pixel_missing


class ImageFolder(torch.utils.data.Dataset):
    """A torch Dataset of the images in one folder (see :func:`load_image`).

    Files are listed at construction and decoded lazily; an unreadable file
    raises :class:`DataError` naming it when it is reached. With
    ``skip_unreadable=True`` every file is decoded once up front and the bad
    ones are dropped with a logged warning.

    Args:
        folder: folder of images (:func:`list_images`). size: output side in pixels.
        hflip: randomly mirror images left-right (probability 0.5, :func:`maskgit_lib.views.hflip`).
        skip_unreadable: see above.
        generator: optional ``torch.Generator`` for the flips (leave it None with
            DataLoader workers: each worker would copy it and flip in lockstep).

    Items:
        image: float32 (3, size, size) in [-1, 1].
    """

    def __init__(self, folder: str | os.PathLike, size: int = 64, hflip: bool = False,
                 skip_unreadable: bool = False, generator: torch.Generator | None = None) -> None:
        self.folder = Path(folder)
        self.size, self.hflip, self.generator = size, hflip, generator
        self.files = list_images(self.folder)
        if skip_unreadable:
            good = []
            for f in self.files:
                try:
                    load_image(f, size)
                    good.append(f)
                except DataError as exc:
                    logger.warning("skipping unreadable image: %s", exc)
            if not good:
                raise DataError(f"Image folder {self.folder} holds no readable images.")
            self.files = good

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = load_image(self.files[index], self.size)  # (3, size, size)
        if self.hflip and float(torch.rand((), generator=self.generator)) < 0.5:
            image = hflip(image)
        return image


_LAB_NAME = re.compile(r"^(?:image|mask)_(.+)$", re.DOTALL)


def _pair_key(stem: str) -> tuple[str, object]:
    """Pairing key of a file stem: ``image_X`` and ``mask_X`` share one (a number ``X`` by its value).

    Other stems pair as they are. Stems are compared in Unicode NFC form, so names typed on different systems
    (e.g. an accent or emoji stored composed or decomposed) still pair.
    """
    stem = unicodedata.normalize("NFC", stem)
    m = _LAB_NAME.match(stem)
    if m is None:
        return ("stem", stem)
    rest = m.group(1)
    return ("lab", int(rest)) if rest.isdecimal() else ("lab", rest)


def _expected_mask_name(image: Path) -> str:
    """The mask name an image pairs with by default: ``image_X.*`` -> ``mask_X.png``, else ``<stem>.png``."""
    stem = image.stem
    return ("mask_" + stem[len("image_"):] if stem.startswith("image_") else stem) + ".png"


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def _group(files: list[Path]) -> dict[tuple[str, object], list[Path]]:
    groups: dict[tuple[str, object], list[Path]] = {}
    for f in files:
        groups.setdefault(_pair_key(f.stem), []).append(f)
    return groups


def _competing(files: list[Path]) -> str:
    """``a.png and b.png would both`` / ``a.png, b.png and c.png would all``."""
    names = [f.name for f in files]
    return f"{', '.join(names[:-1])} and {names[-1]} in {files[0].parent} would {'both' if len(names) == 2 else 'all'}"


def open_pair(image_path: Path, mask_path: Path) -> tuple[Image.Image, Image.Image]:
    """Open an image and its mask (checked as :func:`load_image` checks); DataError unless equal sizes."""
    im_image, im_mask = _open(image_path), _open(mask_path)
    if im_image.size != im_mask.size:
        raise DataError(f"Mask {mask_path} is {im_mask.width}x{im_mask.height} but image {image_path} is "
                        f"{im_image.width}x{im_image.height}; expected a mask of the same size as its image.")
    return im_image, im_mask


class InpaintFolder(torch.utils.data.Dataset):
    """Pairs of masked image and hole mask, in the lab's test layout.

    ``image_X.*`` pairs with ``mask_X.*`` (``X`` any text, e.g. ``image_007 cat.png``
    with ``mask_007 cat.png``; a number matches by value, so ``image_7`` pairs with
    ``mask_007``); other files pair by identical stem. Two images (or two masks)
    that would share one partner (``image_000.png`` and ``image_000.jpg``, or
    ``image_000.png`` and ``image_0.png``) are refused, as is one folder given
    for both. Size policy: image and mask must have the same size; inputs
    that are not ``size`` x ``size`` are centre-cropped and resized (image with
    Lanczos, mask so that a pixel is known only if all pixels under it were).

    Args:
        images_dir: masked images (holes may hold any colour, the lab uses gray 128).
        masks_dir: masks, 0 = missing, 255 = known.
        size: output side in pixels.
        threshold: accept non-binary masks (values < 128 missing). mask_convention: see :func:`load_mask`.
        gt_dir: optional ground-truth folder (``image_NNN.png``), see :meth:`ground_truth`.

    Items:
        ``(name, image, pixel_missing)``: name str (image file stem), image float32
        (3, size, size) in [-1, 1], pixel_missing bool (size, size), True = missing.

    Raises:
        DataError: the same folder for images and masks, an image with no mask
            partner, two files competing for one partner, or a mask whose size differs.
    """

    def __init__(self, images_dir: str | os.PathLike, masks_dir: str | os.PathLike, size: int = 64,
                 threshold: bool = False, gt_dir: str | os.PathLike | None = None,
                 mask_convention: str = "lab") -> None:
        self.images_dir, self.masks_dir = Path(images_dir), Path(masks_dir)
        self.size, self.threshold, self.mask_convention = size, threshold, mask_convention
        self.gt_dir = Path(gt_dir) if gt_dir is not None else None
        mask_files = list_images(self.masks_dir)
        image_files = list_images(self.images_dir)
        if _same_folder(self.images_dir, self.masks_dir):
            raise DataError(f"--images and --masks are the same folder {self.images_dir}; masks must be in their "
                            "own folder (e.g. masked_image/ and mask64/).")
        masks = _group(mask_files)
        self.pairs: list[tuple[Path, Path]] = []
        for key, images in _group(image_files).items():
            candidates = masks.pop(key, [])
            if len(images) > 1:
                partner = candidates[0].name if candidates else _expected_mask_name(images[0])
                raise DataError(f"{_competing(images)} pair with the mask {partner}; keep one (or rename it).")
            image = images[0]
            if not candidates:
                raise DataError(f"Image {image} has no mask in {self.masks_dir}; expected a mask named "
                                f"{_expected_mask_name(image)} (0 = missing, 255 = known).")
            if len(candidates) > 1:
                raise DataError(f"{_competing(candidates)} pair with the image {image.name}; keep one "
                                "(or rename it).")
            self.pairs.append((image, candidates[0]))
        if masks:
            unpaired = [m for group in masks.values() for m in group]
            logger.warning("%d mask(s) in %s have no image, e.g. %s", len(unpaired), self.masks_dir,
                           unpaired[0].name)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        im_image, im_mask = open_pair(image_path, mask_path)
        image = _image_tensor(im_image, self.size)  # (3, size, size)
        pixel_missing = _mask_tensor(im_mask, mask_path, self.size, self.threshold, self.mask_convention)
        return image_path.stem, image, pixel_missing

    def ground_truth(self, index: int) -> torch.Tensor:
        """Load the ground truth of item ``index`` from ``gt_dir``: float32 (3, size, size) in [-1, 1]."""
        if self.gt_dir is None:
            raise DataError(f"No ground-truth folder is set for {self.images_dir}.")
        name = self.pairs[index][0].name
        return load_image(self.gt_dir / name, self.size)


def _dataset_dir(dataset_dir: str | os.PathLike | None) -> Path:
    folder = Path(dataset_dir) if dataset_dir is not None else paths.default_dataset_dir()
    if not folder.is_dir():
        raise DataError(f"Dataset folder {folder} does not exist; run `maskgit prepare-data` (or `make data`) "
                        "to build the default dataset, or pass a folder in the lab's layout.")
    return folder


def split_dir(split: str, dataset_dir: str | os.PathLike | None = None) -> Path:
    """Return ``<dataset>/<split>`` (``train`` or ``val``), checking that it exists."""
    folder = _dataset_dir(dataset_dir) / split
    if not folder.is_dir():
        raise DataError(f"Dataset folder {folder.parent} has no {split}/ folder; expected train/ and val/ "
                        "image folders (the lab's layout or `maskgit prepare-data`'s).")
    return folder


def _test_layouts(root: Path) -> list[tuple[Path, Path, Path]]:
    """(masked_image, mask64, gt) folders :func:`test_set` tries, in order."""
    layouts = [(base / "masked_image", base / "mask64", base / "gt") for base in (root / "test", root)]
    return layouts + ([(root, root.parent / "mask64", root.parent / "gt")] if root.name == "masked_image" else [])


def test_set(dataset_dir: str | os.PathLike | None = None, size: int = 64, threshold: bool = False) -> InpaintFolder:
    """The inpainting test set of a dataset folder DIR, in the first layout that fits.

    ``DIR/test/{masked_image,mask64,gt}`` (``maskgit prepare-data``); the lab's
    ``DIR/{masked_image,mask64}`` (+ ``DIR/gt`` if present); or DIR is the
    ``masked_image`` folder itself, with ``../mask64`` (+ ``../gt``) beside it.

    Returns:
        An :class:`InpaintFolder` whose ``gt_dir`` is the ground-truth folder, or None.
    """
    layouts = _test_layouts(root := _dataset_dir(dataset_dir))
    for images, masks, gt in layouts:
        if images.is_dir() and masks.is_dir():
            return InpaintFolder(images, masks, size, threshold, gt_dir=gt if gt.is_dir() else None)
    for images, masks, _ in layouts:
        if images.is_dir():
            raise DataError(f"Test images {images} have no mask folder {masks} beside them; expected the hole "
                            "masks there (mask_000.png ..., 0 = missing, 255 = known).")
    raise DataError(f"Dataset folder {root} has no test set; looked for test/masked_image/ + test/mask64/ "
                    "(maskgit prepare-data), masked_image/ + mask64/ directly in it (the course lab), or the "
                    "folder being masked_image/ itself with ../mask64/ beside it.")


test_set.__test__ = False  # a library function, not a pytest test, even when imported into a test module
