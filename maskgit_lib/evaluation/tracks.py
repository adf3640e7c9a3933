"""The benchmark's data and caches: the test images of each track, hole metrics, cached outputs and features.

Tracks use the same ground-truth images, fixed masks and holes painted gray 128:
``freeform`` (the test set's ``mask64``), ``box`` (a centred 50% square,
:func:`maskgit_lib.masks.box_mask`) and ``border`` (outpainting,
:func:`~maskgit_lib.masks.border_mask`). Outputs are cached under
``cache_dir()/benchmark/`` keyed by row settings, data, checkpoint hashes, device type,
batch size and seed (an interrupted run resumes); Inception features by content.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from .. import paths
from ..data import test_set, to_uint8
from ..errors import ConfigError
from ..masks import border_mask, box_mask
from ..outputs import atomic_write
from . import baselines
from .fid import folder_features, inception_features, list_fid_images
from .rows import BOX_FRAC, CACHE_VERSION, KEEP_FRAC, Row


@dataclass
class TrackData:
    """Inputs of one track: names (N,), inputs/gt uint8 (N, 3, S, S), pixel_missing bool (N, S, S)."""

    names: list[str]
    inputs: torch.Tensor
    pixel_missing: torch.Tensor
    gt: torch.Tensor
    gt_dir: Path

    def fingerprint(self) -> str:
        h = hashlib.sha256("\0".join(self.names).encode())
        for t in (self.inputs, self.pixel_missing, self.gt):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


def load_tracks(dataset_dir: str | os.PathLike | None, tracks: tuple[str, ...], limit: int | None) -> dict:
    """Load the test set (first ``limit`` images) once and build each track from its ground truths."""
    folder = test_set(dataset_dir)
    if folder.gt_dir is None:
        raise ConfigError(f"the test set {folder.images_dir.parent} has no gt/ folder; the benchmark needs it")
    if limit is not None:
        folder.pairs = folder.pairs[:limit]
    names, inputs, missing, gt = [], [], [], []
    for i, (name, image, pixel_missing) in enumerate(folder):
        names.append(name)
        inputs.append(to_uint8(image))
        missing.append(pixel_missing)
        gt.append(to_uint8(folder.ground_truth(i)))
    gt_u8, size = torch.stack(gt), gt[0].shape[-1]
    out = {}
    for track in tracks:
        if track == "freeform":
            pm, inp = torch.stack(missing), torch.stack(inputs)
        else:
            hole = box_mask(size, BOX_FRAC) if track == "box" else border_mask(size, KEEP_FRAC)
            pm = hole.expand(len(names), -1, -1).clone()
            inp = baselines.gray_fill(gt_u8, pm)
        out[track] = TrackData(names, inp, pm, gt_u8, folder.gt_dir)
    return out


def _ssim(pred: np.ndarray, gt: np.ndarray, missing: np.ndarray) -> tuple[float, float]:
    """(SSIM of the whole image, mean of its SSIM map over the missing pixels) of uint8 (S, S, 3) images."""
    win = min(7, pred.shape[0] - (1 - pred.shape[0] % 2))  # skimage's 7, or the largest odd size that fits
    whole, ssim_map = structural_similarity(gt, pred, channel_axis=2, data_range=255, win_size=win, full=True)
    return float(whole), float(ssim_map[missing].mean()) if missing.any() else float("nan")  # map (S, S, 3)


def hole_metrics(pred: torch.Tensor, gt: torch.Tensor, pixel_missing: torch.Tensor) -> dict:
    """PSNR, L1 and SSIM of the holes, per image then averaged over images that have a hole.

    SSIM is scikit-image's ``structural_similarity(gt, pred, channel_axis, data_range=255)``
    (7x7 uniform windows, or the largest odd window that fits a smaller image). Being
    windowed, it is computed on the whole image: ``ssim`` is skimage's score (the SSIM map
    averaged over channels and over pixels at least 3 from the border), ``ssim_hole`` the
    same map (each pixel's SSIM from the 7x7 window around it, which also sees known
    pixels near the hole's edge) averaged over the missing pixels and the 3 channels.

    Args:
        pred, gt: uint8 (N, 3, S, S). pixel_missing: bool (N, S, S).

    Returns:
        ``psnr_hole_db`` (peak 255, capped at 100 dB for an exact hole), ``l1_hole``
        (mean absolute error on the 0..1 scale), ``ssim``, ``ssim_hole`` (1 = identical)
        and ``images_with_hole``; metrics are None when no image has a hole.
    """
    diff = pred.double() - gt.double()  # (N, 3, S, S)
    m = pixel_missing[:, None].expand_as(diff).double()  # (N, 3, S, S)
    count = m.flatten(1).sum(1)  # (N,) 3 x hole pixels
    has = count > 0
    mse = (diff.square() * m).flatten(1).sum(1) / count.clamp_min(1)  # (N,)
    l1 = (diff.abs() * m).flatten(1).sum(1) / count.clamp_min(1) / 255.0  # (N,)
    psnr = (10 * torch.log10(255.0 ** 2 / mse)).clamp(max=100.0)  # (N,) mse = 0 -> inf -> 100
    if not bool(has.any()):
        return {"psnr_hole_db": None, "l1_hole": None, "ssim": None, "ssim_hole": None, "images_with_hole": 0}
    pred_hwc, gt_hwc = pred.permute(0, 2, 3, 1).numpy(), gt.permute(0, 2, 3, 1).numpy()  # (N, S, S, 3) uint8
    ssim = np.array([_ssim(pred_hwc[i], gt_hwc[i], pixel_missing[i].numpy()) for i in has.nonzero().flatten()])
    return {"psnr_hole_db": float(psnr[has].mean()), "l1_hole": float(l1[has].mean()),
            "ssim": float(ssim[:, 0].mean()), "ssim_hole": float(ssim[:, 1].mean()), "images_with_hole": int(has.sum())}


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (checkpoint identity in cache keys and the JSON)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_root() -> Path:
    return paths.cache_dir() / "benchmark"


def row_cache_path(row: Row, context: dict) -> Path:
    """``cache_dir()/benchmark/rows/<sha>.npz`` for a row in a context (data, checkpoints, device, seed...)."""
    key = json.dumps({"version": CACHE_VERSION, "row": row.spec(), **context}, sort_keys=True)
    return _cache_root() / "rows" / f"{_sha(key)}.npz"


def load_row(path: Path, n: int) -> tuple[torch.Tensor, float] | None:
    """Cached ``(outputs uint8 (n, 3, S, S), seconds)`` or None if absent/unreadable."""
    try:
        with np.load(path) as z:
            out, seconds = z["outputs"], float(z["seconds"])
        return (torch.from_numpy(out.copy()), seconds) if out.shape[0] == n and out.dtype == np.uint8 else None
    except (OSError, ValueError, KeyError, EOFError):
        return None


def save_row(path: Path, outputs: torch.Tensor, seconds: float, spec: dict) -> None:
    """Atomically write a row's outputs and inpainting time."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, outputs=outputs.numpy(), seconds=seconds, spec=json.dumps(spec))

    atomic_write(path, write)


def features(images: torch.Tensor, device: torch.device, use_cache: bool = True) -> np.ndarray:
    """Inception pool3 features (N, 2048) of uint8 images, cached by content."""
    path = _cache_root() / "features" / f"{_sha(images.contiguous().numpy().tobytes())}.npy"
    if use_cache and path.is_file():
        feats = np.load(path)
        if feats.shape == (len(images), 2048):
            return feats.astype(np.float64)
    feats = inception_features(images, device=device)
    if use_cache:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, feats.astype(np.float32))

        atomic_write(path, write)
    return feats.astype(np.float32).astype(np.float64)  # what the cache returns: same FID cold or warm


def gt_features(data: TrackData, device: torch.device, use_cache: bool = True) -> np.ndarray:
    """Ground-truth features: fid's folder cache when the track uses the whole gt folder, else in memory."""
    files = list_fid_images(data.gt_dir)
    if [f.stem for f in files] == data.names:  # float32 like fid's cache: the same FID cold or warm
        return folder_features(data.gt_dir, device=device, cache=use_cache).astype(np.float32).astype(np.float64)
    return features(data.gt, device, use_cache)
