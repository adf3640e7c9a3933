"""pytorch-fid's ``.npz`` statistics files: ``mu`` (D,) and ``sigma`` (D,D), read, checked and written.

``python -m pytorch_fid --save-stats PATH OUT.npz`` writes ``np.savez_compressed(OUT, mu=m, sigma=s)``
(pool3: D = 2048) and refuses an existing OUT; it reads statistics from any argument ending
in ``.npz`` (``f["mu"][:]``, ``f["sigma"][:]``). ``maskgit fid`` reads and writes the same files.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..outputs import atomic_write


def read_fid_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-fid's ``.npz`` statistics: ``mu`` (D,) and ``sigma`` (D,D), float64, checked.

    Raises:
        DataError: a missing or unreadable file, no ``mu``/``sigma`` arrays, wrong shapes, NaN or inf.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"statistics file {path} does not exist; expected pytorch-fid's .npz of mu and sigma")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: np.asarray(z[key], np.float64) for key in ("mu", "sigma") if key in z.files}
            names = sorted(z.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npz statistics file ({exc}); expected pytorch-fid's "
                        f"arrays mu (D,) and sigma (D,D)") from exc
    if len(arrays) < 2:
        raise DataError(f"{path} holds arrays {names}; expected pytorch-fid's statistics: mu (D,) and sigma (D,D)")
    mu, sigma = arrays["mu"], arrays["sigma"]
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise DataError(f"{path} holds mu {mu.shape} and sigma {sigma.shape}; expected shapes (D,) and (D,D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DataError(f"{path} holds NaN or inf statistics; expected finite mu and sigma")
    return mu, sigma


def check_stats_path(path: str | os.PathLike) -> Path:
    """Return ``path`` if it names a new ``.npz`` file (pytorch-fid reads only those, never overwrites one).

    Raises:
        ConfigError: ``path`` does not end in ``.npz`` or already exists.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ConfigError(f"--save-stats {path} must end in .npz (pytorch-fid reads statistics only from .npz)")
    if path.exists():
        raise ConfigError(f"--save-stats {path} already exists; choose a new file (it is never overwritten)")
    return path


def save_fid_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Write ``mu`` (D,) and ``sigma`` (D,D) as pytorch-fid's ``--save-stats`` does (``savez_compressed``)."""
    path = check_stats_path(path)

    def write(tmp: Path) -> None:  # a file object: np.savez_compressed would add ".npz" to a name
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))

    return atomic_write(path, write)
