"""The course lab's CSV image files, such as its ground truth ``test_gt.csv`` (747 images of 64x64 RGB).

Format read here: a header row, then one row per image of 64*64*3 = 12288 pixel values,
integers 0..255 (``12`` or ``12.0``), optionally after one leading id column (a header of
12289 names; the id values are ignored). Pixel order: row-major (H, W, C) unless told
otherwise, i.e. column ``(h * 64 + w) * 3 + c`` holds channel c of the pixel at row h,
column w: what ``array.reshape(-1)`` writes for an (64, 64, 3) PIL/numpy image. The
header's names are not used to reorder anything; ``order="chw"`` reads planar files
(all red values, then green, then blue).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

LAB_SIZE = 64
PIXELS = LAB_SIZE * LAB_SIZE * 3  # 12288 values per row
ORDERS = ("hwc", "chw")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_header(path: Path, header: list[str]) -> int:
    """Validate the header row; return how many leading id columns it has (0 or 1)."""
    if len(header) not in (PIXELS, PIXELS + 1):
        raise DataError(f"{path}: the header row has {len(header)} columns; expected {PIXELS} pixel columns "
                        f"(64*64*3), optionally after one id column")
    skip = len(header) - PIXELS
    names = [name.strip() for name in header[skip:]]
    if all(_is_number(name) for name in names) and names != [str(k) for k in range(PIXELS)]:
        raise DataError(f"{path}: the first row holds pixel values, not column names; expected a header row "
                        f"(e.g. pixel_0,...,pixel_{PIXELS - 1}) before the images")
    return skip


def read_lab_csv(path: str | os.PathLike, order: str = "hwc") -> torch.Tensor:
    """Read a lab CSV of 64x64 RGB images (header row, one image per row) into uint8 images.

    Args:
        path: the CSV file, e.g. the lab's ``test_gt.csv``.
        order: pixel order of a row: ``"hwc"`` (default, row-major H, W, C:
            ``image_hwc.reshape(-1)``) or ``"chw"`` (planar, ``image_chw.reshape(-1)``).

    Returns:
        uint8 (N, 3, 64, 64) images, in the file's row order.

    Raises:
        DataError: a missing or unreadable file, a bad header, no image rows, or a row
            (named by its number, 1 = the first row after the header) whose value count
            is not 12288 or whose values are not integers in 0..255.
    """
    path = Path(path)
    if order not in ORDERS:
        raise DataError(f"unknown lab CSV pixel order {order!r}; expected one of {ORDERS}")
    if not path.is_file():
        raise DataError(f"lab CSV {path} does not exist or is not a file; expected a CSV of 64x64x3 pixel rows")
    images: list[np.ndarray] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path} is empty; expected a header row and one row of {PIXELS} pixels per image")
            skip = _check_header(path, header)
            for row_number, row in enumerate(reader, start=1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line (e.g. at the end of the file)
                images.append(_parse_row(path, row_number, row, skip, header))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a readable CSV file: {exc}") from exc
    if not images:
        raise DataError(f"{path} has a header but no image rows; expected one row of {PIXELS} pixels per image")
    stacked = np.stack(images)  # (N, 12288) uint8
    shape = (len(images), LAB_SIZE, LAB_SIZE, 3) if order == "hwc" else (len(images), 3, LAB_SIZE, LAB_SIZE)
    array = stacked.reshape(shape)
    if order == "hwc":
        array = array.transpose(0, 3, 1, 2)  # (N, 3, 64, 64)
    return torch.from_numpy(np.ascontiguousarray(array))


def _parse_row(path: Path, row_number: int, row: list[str], skip: int, header: list[str]) -> np.ndarray:
    """One data row -> (12288,) uint8, or a DataError naming the row (and the column of a bad value)."""
    where = f"{path}: row {row_number} (line {row_number + 1})"
    if len(row) != PIXELS + skip:
        raise DataError(f"{where} has {len(row) - skip} pixel values; expected {PIXELS} (64*64*3)"
                        + (" after the id column" if skip else ""))
    try:
        values = np.array(row[skip:], dtype=np.float64)  # (12288,)
    except ValueError:
        bad = next(k for k, text in enumerate(row[skip:]) if not _is_number(text))
        raise DataError(f"{where}, column {header[bad + skip]!r} holds {row[bad + skip]!r}; "
                        f"expected integers 0..255") from None
    ok = np.isfinite(values) & (values >= 0) & (values <= 255) & (values == np.round(values))
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise DataError(f"{where}, column {header[bad + skip]!r} holds {row[bad + skip]!r}; "
                        f"expected integers 0..255")
    return values.astype(np.uint8)
