"""The training images in memory: train/val splits, decoded once to uint8, random flips.

Both trainers decode every image once into one uint8 tensor on the training
device (64x64 images are small: 10,000 of them are 120 MB) and index it per
batch, so there is no DataLoader and no worker process. Floats in [-1, 1] are
made per batch with :func:`maskgit_lib.data.from_uint8`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from ..data import list_images, load_image, to_uint8
from ..views import hflip


def resolve_splits(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """Training and validation image files of a dataset folder.

    ``DIR/train`` + ``DIR/val`` (the default dataset and the lab's layout); a
    ``DIR/train`` without ``val`` or a plain folder of images holds out every
    20th file (sorted by name) for validation.

    Raises:
        DataError: missing or empty folders (from :func:`maskgit_lib.data.list_images`).
    """
    data_dir = Path(data_dir)
    if (data_dir / "train").is_dir():
        train = list_images(data_dir / "train")
        if (data_dir / "val").is_dir():
            return train, list_images(data_dir / "val")
    else:
        train = list_images(data_dir)
    if len(train) < 2:
        return train, list(train)
    val = train[::20]
    return [p for i, p in enumerate(train) if i % 20], val


def load_images_uint8(files: Sequence[Path], size: int = 64) -> torch.Tensor:
    """Decode image files once into one uint8 tensor (N, 3, size, size) (threads, in order)."""

    def one(path: Path) -> torch.Tensor:
        return to_uint8(load_image(path, size))  # (3, size, size)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(one, files))
    return torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)


def random_hflip(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mirror each image left-right (:func:`maskgit_lib.views.hflip`) with probability 1/2.

    Args:
        images: (B, C, H, W) any dtype.
        generator: RNG; its device must be ``images``' device.

    Returns:
        (B, C, H, W), a new tensor.
    """
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5  # (B,)
    return torch.where(flip[:, None, None, None], hflip(images), images)
