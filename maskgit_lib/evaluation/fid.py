"""Offline FID: pool3 Inception features of images and folders, cached statistics, the Frechet distance.

The network and its offline weights come from :mod:`maskgit_lib.evaluation.inception`.
Derived from scratch in ``notebooks/06_fid.ipynb`` (sections 1-3) and checked against
pytorch-fid there.

Protocol (pytorch-fid): RGB images in [0, 1], bilinear resize to 299 inside the
model, pool3 features (2048-d), mean and covariance (``np.cov``, ddof 1). A folder's
features are cached under ``cache_dir()/fid_stats/`` keyed by a hash of its file
names and bytes, so a changed file is never served stale. With fewer than 2048
images FID is biased high: compare only FIDs computed on the same image counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pytorch_fid.fid_score import calculate_frechet_distance
from tqdm.auto import tqdm

from .. import paths
from ..errors import ConfigError, DataError
from ..lab_files import read_lab_csv
from ..outputs import atomic_write
from ..runtime import resolve_device
from .fid_stats import read_fid_stats
from .inception import FEATURE_DIM, _shared_inception

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})  # pytorch-fid's
_CACHE_VERSION = "pytorch-fid-0.3.0/pool3-2048/features-v1"


# ----------------------------------------------------------------------------- features


def list_fid_images(folder: str | os.PathLike) -> list[Path]:
    """Return the image files of ``folder`` (pytorch-fid's extensions, any case), sorted.

    Raises:
        DataError: the folder is missing, not a folder, or holds no images.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file; expected a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder} holds no images; expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return files


def _read_rgb(path: Path) -> torch.Tensor:
    """Read an image as pytorch-fid does (PIL ``convert('RGB')``): (3,H,W) uint8."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)  # (H,W,3)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image (corrupt or truncated?): {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) uint8 [0,255] or float [-1,1] -> float32 [0,1], pytorch-fid's input range."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise DataError(f"images must be uint8 or float in [-1,1], got dtype {images.dtype}")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1.001 or hi > 1.001:
        raise DataError(f"float images must lie in [-1,1] (the library convention), got [{lo:.3g}, {hi:.3g}]")
    return ((images.float() + 1.0) / 2.0).clamp_(0.0, 1.0)


def inception_features(
    images: torch.Tensor | str | os.PathLike | Sequence[str | os.PathLike],
    batch_size: int = 50,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Pool3 Inception features, pytorch-fid's protocol.

    Args:
        images: (N,3,H,W) uint8 in [0,255] or float in [-1,1], or a folder of images,
            or a list of image files (read as RGB, any size; resized to 299 in the model).
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"``...; default CUDA if available.

    Returns:
        (N,2048) float64 features.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, (str, os.PathLike)):
        images = list_fid_images(images)
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"images must have shape (N,3,H,W), got {tuple(images.shape)}")
        n = images.shape[0]

        def load(lo: int, hi: int) -> list[torch.Tensor]:
            return [images[lo:hi]]

    else:
        files = [Path(p) for p in images]
        n = len(files)

        def load(lo: int, hi: int) -> list[torch.Tensor]:
            batch = [_read_rgb(p) for p in files[lo:hi]]
            groups: list[torch.Tensor] = []  # consecutive same-size runs, order kept
            start = 0
            for i in range(1, len(batch) + 1):
                if i == len(batch) or batch[i].shape != batch[start].shape:
                    groups.append(torch.stack(batch[start:i]))  # (b,3,H,W) uint8
                    start = i
            return groups

    dev = resolve_device("auto" if device is None else str(device))
    model = _shared_inception(str(dev))

    out = np.empty((n, FEATURE_DIM), dtype=np.float64)
    done = 0
    with torch.no_grad(), tqdm(total=n, desc="Inception features", unit="img", leave=False,
                               disable=n <= batch_size) as bar:
        for lo in range(0, n, batch_size):
            for chunk in load(lo, min(lo + batch_size, n)):
                feats = model(_as_unit_float(chunk.to(dev)))[0]  # (b,2048,1,1)
                out[done : done + len(chunk)] = feats.reshape(len(chunk), FEATURE_DIM).cpu().numpy()
                done += len(chunk)
                bar.update(len(chunk))
    return out


def folder_fingerprint(files: Sequence[Path]) -> str:
    """SHA-256 over the protocol version and each file's name, length and bytes."""
    h = hashlib.sha256(_CACHE_VERSION.encode())
    for p in files:
        data = p.read_bytes()
        h.update(f"{p.name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _require_two(n: int, what: str) -> None:
    if n < 2:
        raise DataError(f"{what} has {n} image(s); FID needs at least 2 per side (a covariance), ideally >= 2048")


def folder_features(
    folder: str | os.PathLike, batch_size: int = 50, device: str | torch.device | None = None, cache: bool = True
) -> np.ndarray:
    """Inception features of a folder, cached by content under ``cache_dir()/fid_stats/``.

    The cache stores the float32 network outputs (lossless; smaller than a covariance
    for fewer than 2048 images) in ``<sha256>.npz``, written atomically.

    Returns:
        (N,2048) float64 features, in sorted file-name order.
    """
    files = list_fid_images(folder)
    _require_two(len(files), f"image folder {folder}")
    if not cache:
        return inception_features(files, batch_size, device)
    return _cached_features(folder_fingerprint(files), len(files), str(Path(folder).resolve()),
                            lambda: inception_features(files, batch_size, device))


def _cached_features(fingerprint: str, n: int, source: str, compute) -> np.ndarray:
    """(n,2048) float64 features from ``cache_dir()/fid_stats/<fingerprint>.npz``, else ``compute()`` and cache."""
    cache_file = paths.cache_dir() / "fid_stats" / f"{fingerprint}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file) as z:
                feats = z["features"]
            if feats.shape == (n, FEATURE_DIM):
                logger.debug("FID features of %s from cache %s", source, cache_file)
                return feats.astype(np.float64)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            logger.warning("ignoring unreadable FID cache %s: %s", cache_file, exc)
    feats = compute()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a name
            np.savez(fh, features=feats.astype(np.float32), folder=source, version=_CACHE_VERSION)
        os.chmod(tmp, 0o644)

    atomic_write(cache_file, write)
    return feats


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D,D) float64 of (N,D) features, as pytorch-fid computes them."""
    features = np.asarray(features, dtype=np.float64)
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def folder_statistics(
    folder: str | os.PathLike, cache: bool = True, batch_size: int = 50, device: str | torch.device | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-fid statistics of a folder: mu (2048,) and sigma (2048,2048), float64 (cached)."""
    return feature_statistics(folder_features(folder, batch_size, device, cache))


# ----------------------------------------------------------------------------- distance


_SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))  # ~1.5e-8


def _clamp_round_off(value: float, positive: float, dim: int) -> float:
    """Return 0.0 for a FID that is zero up to round-off, else ``value`` unchanged.

    FID is ``positive - 2 tr (S1 S2)^(1/2)`` with ``positive = |mu1-mu2|^2 + tr S1 + tr S2``;
    for equal statistics the two cancel, and round-off can leave a small negative
    value (``maskgit fid A A`` printed ``-0.000000``). Each of the ``dim`` square
    roots of an eigenvalue near zero can be off by ``sqrt(eps) * lambda_max``, so a
    negative value (or ``-0.0``) no further below zero than
    ``sqrt(eps) * dim * positive`` (3e-5 of ``positive`` at D=2048) becomes ``0.0``.
    A more negative one is returned as it is: it means the covariances were not PSD.

    Args:
        value: the computed distance.
        positive: the sum of its non-negative terms (the scale of the cancellation).
        dim: D, the feature dimension.
    """
    if value <= 0.0 and -value <= _SQRT_EPS * dim * abs(positive):
        return 0.0
    return value


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "eigh"
) -> float:
    """Frechet distance ``|mu1-mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians.

    Args:
        mu1, mu2: (D,) means; sigma1, sigma2: (D,D) symmetric PSD covariances.
        method: ``"eigh"`` (default): ``tr (S1 S2)^(1/2)`` as the sum of square roots of
            the eigenvalues of ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``),
            several times faster than ``scipy.linalg.sqrtm`` at D=2048 and exact for
            singular covariances; ``"sqrtm"``: pytorch-fid's own function.

    Returns:
        The distance, a float >= 0: round-off below zero (equal statistics) is
        returned as ``0.0`` (see :func:`_clamp_round_off`).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise DataError(
            f"FID statistics do not fit: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if method == "sqrtm":
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as said:
            warnings.filterwarnings("ignore", message=".*disp.*deprecated", category=DeprecationWarning)
            value = calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
        if said.getvalue().strip():
            logger.warning("pytorch-fid: %s", said.getvalue().strip())
        positive = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2))
        return _clamp_round_off(float(value), positive, d)
    if method != "eigh":
        raise ConfigError(f"unknown Frechet distance method {method!r}; expected 'eigh' or 'sqrtm'")
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # S1^(1/2), (D,D)
    inner = root1 @ sigma2 @ root1  # S1^(1/2) S2 S1^(1/2), (D,D)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    positive = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2))
    return _clamp_round_off(positive - 2.0 * float(tr_covmean), positive, d)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets (N1,D) and (N2,D); equals ``frechet_distance`` of their stats.

    When both N <= D the covariances have low rank and ``tr (S1 S2)^(1/2)`` is the
    nuclear norm of ``X1 X2^T / sqrt((N1-1)(N2-1))`` (X centred features): an
    (N1,N2) SVD instead of (D,D) eigen-decompositions. Round-off below zero (e.g.
    a set with itself) is returned as ``0.0``.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise DataError(f"feature arrays must be (N,D) with the same D, got {f1.shape} and {f2.shape}")
    _require_two(len(f1), "the first feature set")
    _require_two(len(f2), "the second feature set")
    if max(len(f1), len(f2)) > f1.shape[1]:
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    x1, x2 = f1 - mu1, f2 - mu2  # (N1,D), (N2,D)
    c1, c2 = len(f1) - 1, len(f2) - 1
    tr_covmean = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt(c1 * c2)  # (N1,N2) SVD
    diff = mu1 - mu2
    positive = float(diff @ diff + (x1 * x1).sum() / c1 + (x2 * x2).sum() / c2)
    return _clamp_round_off(positive - 2.0 * float(tr_covmean), positive, f1.shape[1])


def _warn_counts(n_pred: int, n_gt: int) -> None:
    if n_pred != n_gt:
        logger.warning(
            "FID of %d predicted vs %d ground-truth images: FID is biased by the image count, "
            "so it compares fairly only between runs with equal counts", n_pred, n_gt,
        )


def fid_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    cache_gt: bool = True,
    cache_pred: bool = False,
) -> float:
    """FID between a folder of predictions and a folder of ground truth (pytorch-fid protocol).

    Both folders are checked before any image is processed. The ground-truth features
    are cached by content; predictions too if ``cache_pred`` (also content-keyed).
    """
    n_pred, n_gt = len(list_fid_images(pred_dir)), len(list_fid_images(gt_dir))
    _require_two(n_pred, f"image folder {pred_dir}")
    _require_two(n_gt, f"image folder {gt_dir}")
    _warn_counts(n_pred, n_gt)
    gt = folder_features(gt_dir, batch_size, device, cache=cache_gt)
    pred = folder_features(pred_dir, batch_size, device, cache=cache_pred)
    return frechet_distance_from_features(pred, gt)


def fid_from_images(
    pred_images: torch.Tensor,
    gt_dir: str | os.PathLike,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    cache_gt: bool = True,
) -> float:
    """FID of in-memory predictions, (N,3,H,W) uint8 or float in [-1,1], against a folder."""
    _require_two(len(pred_images), "pred_images")
    gt = folder_features(gt_dir, batch_size, device, cache=cache_gt)
    _warn_counts(len(pred_images), len(gt))
    return frechet_distance_from_features(inception_features(pred_images, batch_size, device), gt)


# ----------------------------------------------------------------------------- inputs of maskgit fid


@dataclass
class FidInput:
    """One checked side of ``maskgit fid``: ``files`` (a folder), ``images`` (a tensor or lab CSV: uint8
    (N,3,H,W) or float in [-1,1]) or ``stats`` (mu (D,), sigma (D,D)); ``features`` (N,2048) float64 once
    computed."""

    label: str
    files: list[Path] | None = None
    images: torch.Tensor | None = None
    stats: tuple[np.ndarray, np.ndarray] | None = None
    features: np.ndarray | None = None

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)``: the file's, or those of the computed features."""
        return self.stats if self.stats is not None else feature_statistics(self.features)


def open_fid_input(source: str | os.PathLike | torch.Tensor) -> FidInput:
    """Check one input before Inception runs: a tensor, a lab ``.csv`` (:func:`~maskgit_lib.lab_files.read_lab_csv`:
    uint8 (N,3,64,64), rows in H, W, C order), pytorch-fid's ``.npz`` (:func:`read_fid_stats`) or a folder."""
    if isinstance(source, torch.Tensor):
        _require_two(len(source), "the image tensor")
        return FidInput("images", images=source)
    path = Path(source)
    if path.suffix.lower() == ".npz" and not path.is_dir():
        return FidInput(str(path), stats=read_fid_stats(path))
    if path.suffix.lower() == ".csv" and not path.is_dir():
        images = read_lab_csv(path)
        _require_two(len(images), f"lab CSV {path}")
        return FidInput(str(path), images=images)
    files = list_fid_images(path)
    _require_two(len(files), f"image folder {path}")
    return FidInput(str(path), files=files)


def compute_fid_features(inp: FidInput, batch_size: int = 50, device: str | torch.device | None = None,
                         cache: bool = True) -> FidInput:
    """Fill ``inp.features`` (N,2048) float64 (folders and images cached by content when ``cache``); return ``inp``."""
    if inp.features is not None or inp.stats is not None:
        return inp
    if inp.files is not None:
        inp.features = folder_features(inp.label, batch_size, device, cache)
    elif cache:
        images = inp.images.detach().cpu().contiguous()
        key = hashlib.sha256(f"{_CACHE_VERSION}\0{images.dtype}{tuple(images.shape)}\0".encode())
        key.update(images.numpy().tobytes())
        inp.features = _cached_features(key.hexdigest(), len(images), inp.label,
                                        lambda: inception_features(images, batch_size, device))
    else:
        inp.features = inception_features(inp.images, batch_size, device)
    return inp


def frechet_distance_to_features(mu1: np.ndarray, sigma1: np.ndarray, features2: np.ndarray) -> float:
    """FID of statistics mu1 (D,), sigma1 (D,D) against features (N2,D), N2 <= D: equals ``frechet_distance``.

    ``S1 S2 = S1 X2^T X2 / (N2-1)`` has the nonzero spectrum of the (N2,N2) PSD matrix
    ``X2 S1 X2^T / (N2-1)`` (X2 centred features), so no (D,D) eigen-decomposition is needed.
    """
    f2 = np.asarray(features2, np.float64)
    mu1, sigma1 = np.asarray(mu1, np.float64), np.asarray(sigma1, np.float64)
    if f2.ndim != 2 or mu1.shape != (f2.shape[1],) or sigma1.shape != (f2.shape[1],) * 2:
        raise DataError(f"FID statistics do not fit the features: mu {mu1.shape}, sigma {sigma1.shape}, "
                        f"features {f2.shape}")
    mu2, c2 = f2.mean(axis=0), len(f2) - 1
    x2 = f2 - mu2  # (N2,D)
    inner = x2 @ sigma1 @ x2.T / c2  # (N2,N2)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    positive = float(diff @ diff + np.trace(sigma1) + (x2 * x2).sum() / c2)
    return _clamp_round_off(positive - 2.0 * float(tr_covmean), positive, len(mu1))


def fid_of_inputs(pred: FidInput, gt: FidInput) -> float:
    """FID between two computed inputs: from the features when both have them, else from the statistics."""
    if pred.features is not None and gt.features is not None:
        _warn_counts(len(pred.features), len(gt.features))
        return frechet_distance_from_features(pred.features, gt.features)
    stats, feats = (pred, gt) if pred.features is None else (gt, pred)
    if feats.features is not None and len(feats.features) <= feats.features.shape[1]:
        return frechet_distance_to_features(*stats.statistics(), feats.features)
    return frechet_distance(*pred.statistics(), *gt.statistics())


