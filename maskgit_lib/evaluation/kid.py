"""KID, the kernel inception distance: an unbiased MMD^2 between two sets of Inception features.

FID fits a Gaussian to each set and is biased high at the sizes of this course (64 to
747 images: the bias shrinks like 1/N, so FIDs compare only at equal N). KID (Binkowski
et al. 2018, "Demystifying MMD GANs") is the unbiased estimate of the squared maximum
mean discrepancy with the cubic polynomial kernel

    k(x, y) = (x . y / d + 1) ** 3        (d = the feature dimension, 2048 for pool3)

over the same pool3 features FID uses. As torch-fidelity and torchmetrics report it, it
is computed on ``subsets`` random subsets of ``m`` features per side (drawn without
replacement, ``m`` from :func:`kid_subset_size`: 1000, or half the smaller set when that is smaller) and given as the mean and the standard
deviation (ddof 0) over the subsets. Its expectation is 0 for two samples of one
distribution, so a small negative value is possible and means "indistinguishable".
A set against itself is not two independent samples: the estimate is then slightly
negative, shrinking like 1/m.

The subsets come from their own ``numpy.random.default_rng(seed)``: the global RNGs are
never touched, and the same features and seed always give the same numbers.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError

DEFAULT_SUBSETS = 100  # torch-fidelity's and torchmetrics' defaults
DEFAULT_SUBSET_SIZE = 1000
_GRAM_LIMIT = 4096  # up to this many features per side, the kernels are computed once for all subsets


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The KID kernel ``(x . y / d + 1) ** 3`` between the rows of x (n, d) and y (m, d): (n, m) float64."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples from their kernel matrices.

    ``sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
    - 2 sum_{i, j} k(x_i, y_j) / m^2`` (the estimator of torch-fidelity and torchmetrics).

    Args:
        k_xx, k_yy, k_xy: (m, m) float64 kernel matrices, m >= 2.
    """
    m = k_xx.shape[0]
    off_diagonal = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return float(off_diagonal / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid_subset_size(n1: int, n2: int, subset_size: int | None = None) -> int:
    """The subset size KID uses: ``min(subset_size, n1, n2)`` if given, else the default rule.

    The default (``subset_size=None``) is :data:`DEFAULT_SUBSET_SIZE` (1000, torch-fidelity's
    and torchmetrics') when both sets hold at least twice that, else half the smaller set
    (at least 2). With fewer images than 1000 (this course's 64 to 747) those libraries
    refuse, and ``m = N`` would make every subset the whole set: the reported standard
    deviation would be 0 and mean nothing. Half-size subsets keep the estimate unbiased
    and give the spread a meaning.
    """
    n = min(int(n1), int(n2))
    if subset_size is not None:
        return min(int(subset_size), n)
    return DEFAULT_SUBSET_SIZE if DEFAULT_SUBSET_SIZE <= n // 2 else max(2, n // 2)


def kid_from_features(
    f1: np.ndarray, f2: np.ndarray, subsets: int = DEFAULT_SUBSETS, subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between two feature sets: mean and standard deviation of the unbiased MMD^2 over random subsets.

    Each of the ``subsets`` draws picks ``m = kid_subset_size(N1, N2, subset_size)`` rows of each set
    without replacement (``numpy.random.default_rng(seed)``, never a global RNG) and
    computes :func:`mmd2_unbiased` with :func:`polynomial_kernel`. With ``m`` equal to
    both N, a subset is the whole set and every subset gives the same value. For N up
    to 4096 per side the three kernel matrices are computed once and each subset reads
    its rows from them (the same numbers up to round-off, many times faster).

    Args:
        f1: (N1, D) features, e.g. of predictions; f2: (N2, D) features, e.g. of ground
            truth (any float dtype; computed in float64).
        subsets: number of random subsets, >= 1 (default 100).
        subset_size: rows per side and subset, >= 2, capped at N1 and N2 (None: 1000, or half
            the smaller set when it holds fewer than 2000).
        seed: seed of the subsets' generator.

    Returns:
        ``(mean, std)``: floats, the mean and the ddof-0 standard deviation over subsets.

    Raises:
        DataError: features that are not (N, D) with the same D, fewer than 2 rows, or non-finite.
        ConfigError: ``subsets < 1`` or ``subset_size < 2``.
    """
    x, y = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise DataError(f"KID feature arrays must be (N,D) with the same D, got {x.shape} and {y.shape}")
    if min(len(x), len(y)) < 2:
        raise DataError(f"KID needs at least 2 feature rows per side, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError("KID features hold NaN or inf values; expected finite Inception features")
    if int(subsets) != subsets or subsets < 1:
        raise ConfigError(f"KID subsets must be an integer >= 1, got {subsets}")
    if subset_size is not None and (int(subset_size) != subset_size or subset_size < 2):
        raise ConfigError(f"KID subset size must be an integer >= 2, got {subset_size}")
    m = kid_subset_size(len(x), len(y), subset_size)
    rng = np.random.default_rng(seed)
    gram = max(len(x), len(y)) <= _GRAM_LIMIT
    if gram:
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    values = np.empty(int(subsets), dtype=np.float64)
    for s in range(int(subsets)):
        i = rng.choice(len(x), size=m, replace=False)  # (m,) rows of f1
        j = rng.choice(len(y), size=m, replace=False)  # (m,) rows of f2
        if gram:
            values[s] = mmd2_unbiased(k_xx[np.ix_(i, i)], k_yy[np.ix_(j, j)], k_xy[np.ix_(i, j)])
        else:
            xs, ys = x[i], y[j]
            values[s] = mmd2_unbiased(polynomial_kernel(xs, xs), polynomial_kernel(ys, ys), polynomial_kernel(xs, ys))
    return float(values.mean()), float(values.std())
