"""Mask schedules gamma(r), MVTM training masks, and pixel -> token masks.

Derived in ``notebooks/05_mask_schedules.ipynb``, section 1 (the schedules), and
``notebooks/03_mvtm_training.ipynb``, sections 2-4 (the MVTM mask and the inverted-mask bug).

A mask schedule gamma: [0, 1] -> [0, 1] gives the fraction of tokens that are
masked. It is non-increasing with gamma(0) = 1 (everything hidden) and
gamma(1) = 0 (nothing hidden). Training draws r ~ U(0, 1) per image and hides
ceil(gamma(r) * L) random tokens (Masked Visual Token Modeling, MVTM); decoding
uses r = t/T (see :mod:`maskgit_lib.decoding`).

Schedules accept a Python float (and return a float) or a float tensor of any
shape (and return a tensor of the same shape and dtype). ``r`` is clamped to
[0, 1] and the result is clipped to [0, 1].
"""

from __future__ import annotations

import math
import re
from typing import Callable, Union

import torch
import torch.nn.functional as F

from .errors import ConfigError

Ratio = Union[float, torch.Tensor]
Schedule = Callable[[Ratio], Ratio]

#: The lab's token count L = 16*16, used to fix the official "log"/"exp" schedules.
LAB_NUM_TOKENS = 256


def _pure(name: str, formula: Callable[[torch.Tensor], torch.Tensor]) -> Schedule:
    """Wrap a tensor formula into a schedule taking a float or a tensor."""

    def gamma(r: Ratio) -> Ratio:
        if isinstance(r, torch.Tensor):
            x = r if r.is_floating_point() else r.double()
            return (formula(x.clamp(0.0, 1.0)).clamp(0.0, 1.0) + 0.0).to(x.dtype)  # + 0.0: no -0.0
        x = torch.tensor(float(r), dtype=torch.float64).clamp(0.0, 1.0)
        return float(formula(x).clamp(0.0, 1.0)) + 0.0

    gamma.__name__ = gamma.__qualname__ = name
    gamma.__doc__ = f"Mask schedule {name!r}: masked fraction gamma(r) for r in [0, 1]."
    return gamma


def pow_schedule(p: float) -> Schedule:
    """Return the official ``pow<p>`` schedule gamma(r) = 1 - r^p (p > 0).

    p = 1 is linear, 2 square, 3 cubic, 0.5 sqrt.
    """
    if not p > 0:
        raise ConfigError(f"pow schedule exponent must be > 0, got {p!r}")
    return _pure(f"pow{p:g}", lambda r: 1.0 - r**p)  # gamma(r) = 1 - r^p


def log_schedule(total: int = LAB_NUM_TOKENS) -> Schedule:
    """Return the official "log" schedule gamma(r) = -log2(r) / log2(total), clipped.

    The official code normalises by ``log2`` of each image's unknown-token count;
    a pure function of r needs a fixed ``total`` (256, the lab's L, by default).
    gamma hits 1 at r = 1/total (and stays 1 below it) and 0 at r = 1.
    """
    if total < 2:
        raise ConfigError(f"log schedule needs total >= 2, got {total!r}")
    return _pure("log", lambda r: -torch.log2(r) / math.log2(total))  # -log2(r)/log2(N)


def exp_schedule(total: int = LAB_NUM_TOKENS) -> Schedule:
    """Return the official "exp" schedule, rescaled so that gamma(0) = 1.

    Official: gamma(r) = 1 - 2^(-log2(N) (1 - r)) = 1 - N^(r - 1), whose gamma(0)
    is 1 - 1/N, not 1. We divide by (1 - 1/N) so the end points are exactly 1
    and 0; with N = 256 this changes values by at most 0.4%.
    """
    if total < 2:
        raise ConfigError(f"exp schedule needs total >= 2, got {total!r}")
    scale = 1.0 - 1.0 / total
    return _pure("exp", lambda r: (1.0 - float(total) ** (r - 1.0)) / scale)  # (1-N^(r-1))/(1-1/N)


def _cosine(r: torch.Tensor) -> torch.Tensor:
    return torch.where(r >= 1.0, 0.0, torch.cos(math.pi / 2 * r))  # gamma(r) = cos(pi r / 2)


SCHEDULES: dict[str, Schedule] = {
    "linear": _pure("linear", lambda r: 1.0 - r),  # gamma(r) = 1 - r  (official "uniform")
    "cosine": _pure("cosine", _cosine),
    "square": _pure("square", lambda r: 1.0 - r**2),  # gamma(r) = 1 - r^2
    "cubic": _pure("cubic", lambda r: 1.0 - r**3),  # gamma(r) = 1 - r^3
    "sqrt": _pure("sqrt", lambda r: 1.0 - torch.sqrt(r)),  # gamma(r) = 1 - sqrt(r)
    "log": log_schedule(),
    "exp": exp_schedule(),
    "arccos": _pure("arccos", lambda r: 2.0 / math.pi * torch.arccos(r)),  # 2/pi arccos(r)
}
"""Named schedules. ``get_schedule`` also accepts ``"pow<p>"`` and ``"uniform"``."""

_ALIASES = {"uniform": "linear"}
_POW = re.compile(r"^pow(\d+(?:\.\d*)?|\.\d+)$")


def get_schedule(schedule: str | Schedule) -> Schedule:
    """Return a schedule function from its name, or a callable unchanged.

    Args:
        schedule: a key of :data:`SCHEDULES`, ``"uniform"`` (= linear),
            ``"pow<p>"`` such as ``"pow2.5"``, or a callable gamma(r).

    Raises:
        ConfigError: for an unknown name, listing the valid ones.
    """
    if callable(schedule):
        return schedule
    name = str(schedule).strip().lower()
    name = _ALIASES.get(name, name)
    if name in SCHEDULES:
        return SCHEDULES[name]
    match = _POW.match(name)
    if match:
        return pow_schedule(float(match.group(1)))
    raise ConfigError(
        f"unknown mask schedule {schedule!r}; choose one of {sorted(SCHEDULES)}, "
        "'uniform', or 'pow<p>' such as 'pow2.5'"
    )


def schedule_name(schedule: str | Schedule) -> str:
    """Return a readable name for a schedule name or function (for logs and traces)."""
    if isinstance(schedule, str):
        return schedule
    return getattr(schedule, "__name__", repr(schedule))


def uniform(
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """U[0, 1) float32 noise drawn with ``generator`` (on its device), moved to ``device``."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def random_mask_with_counts(
    num_masked: torch.Tensor,
    num_tokens: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Hide exactly ``num_masked[b]`` uniformly random positions of row b.

    Args:
        num_masked: int64 (B,), each in [0, num_tokens].
        num_tokens: L.
        generator: optional random generator.

    Returns:
        is_masked: bool (B, L), row b has exactly ``num_masked[b]`` True entries.
    """
    scores = uniform((num_masked.shape[0], num_tokens), generator, num_masked.device)  # (B, L)
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, L) rank of each position, a random permutation
    return rank < num_masked[:, None]  # (B, L)


def mvtm_num_masked(
    ratios: torch.Tensor, num_tokens: int, schedule: str | Schedule, min_ratio: float = 0.0
) -> torch.Tensor:
    """Number of tokens MVTM hides for sampled ratios r: ceil(max(gamma(r), min_ratio) * L).

    Args:
        ratios: float (B,) values of r in [0, 1].
        num_tokens: L.
        schedule: schedule name or function.
        min_ratio: minimum masking rate (official MaskGIT training uses one).

    Returns:
        int64 (B,), clamped to [1, L].
    """
    gamma = get_schedule(schedule)(ratios.double()).clamp_min(min_ratio)  # (B,)
    n = torch.ceil(gamma * num_tokens)  # n = ceil(gamma(r) * L)
    return n.clamp(1, num_tokens).long()  # (B,)


def mvtm_mask(
    batch_size: int,
    num_tokens: int,
    schedule: str | Schedule = "cosine",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    min_ratio: float = 0.0,
) -> torch.Tensor:
    """Sample an MVTM training mask: r ~ U(0,1) per image, hide ceil(gamma(r) L) tokens.

    Args:
        batch_size: B.
        num_tokens: L.
        schedule: schedule name or function.
        generator: optional random generator (draws r first, then positions).
        device: device of the result.
        min_ratio: minimum fraction of tokens hidden.

    Returns:
        is_masked: bool (B, L), True = hidden; row b hides
        ``mvtm_num_masked(r_b, L, schedule, min_ratio)`` tokens.
    """
    ratios = uniform((batch_size,), generator, device)  # (B,) r ~ U(0, 1)
    num_masked = mvtm_num_masked(ratios, num_tokens, schedule, min_ratio)  # (B,)
    return random_mask_with_counts(num_masked, num_tokens, generator)  # (B, L)


def mvtm_mask_inverted_bug(
    batch_size: int,
    num_tokens: int,
    schedule: str | Schedule = "cosine",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Reproduce, for teaching, the inverted MVTM mask of a popular reimplementation.

    That code draws one r for the whole batch, picks floor(gamma(r) L) random
    positions, then KEEPS those positions and replaces all the others by the mask
    token. The real masked fraction is therefore 1 - gamma(r): near-empty masks
    when gamma says "hide almost everything". Do not train with this.

    Returns:
        is_masked: bool (B, L) with L - floor(gamma(r) L) True entries per row.
    """
    ratio = uniform((1,), generator, device)  # (1,) one r for the whole batch
    n = torch.floor(get_schedule(schedule)(ratio.double()) * num_tokens).long()  # (1,)
    selected = random_mask_with_counts(n.expand(batch_size), num_tokens, generator)  # (B, L)
    return ~selected  # the bug: the sampled positions are the ones kept


def mask_tokens(tokens: torch.Tensor, is_masked: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """Replace hidden tokens by the mask token.

    Args:
        tokens: int64 (B, L) codebook ids.
        is_masked: bool (B, L), True = hidden.
        mask_token_id: K.

    Returns:
        int64 (B, L) model input.
    """
    if tokens.shape != is_masked.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and is_masked {tuple(is_masked.shape)} differ")
    return torch.where(is_masked, torch.full_like(tokens, mask_token_id), tokens)  # (B, L)


def pixel_to_token_mask(pixel_missing: torch.Tensor, factor: int = 4, dilate: int = 0) -> torch.Tensor:
    """Turn a pixel hole mask into a token mask with the lab's rule.

    A token is known only if its whole ``factor x factor`` pixel block is known,
    i.e. it is masked if any pixel in its block is missing (the lab does two 2x2
    average pools of the known mask, then ``== 1``). ``dilate = d`` then grows
    the masked region by d tokens in every direction ((2d+1)^2 max pool on the
    token grid), as official MaskGIT editing does with d = 1.

    Args:
        pixel_missing: bool (B, H, W) or (H, W), True = missing pixel; H and W
            divisible by ``factor``.
        factor: pixels per token side (4 for 64x64 -> 16x16).
        dilate: tokens to grow the masked region by (>= 0).

    Returns:
        is_masked: bool (B, (H/f)*(W/f)) in row-major token order (B = 1 for a
        (H, W) input).
    """
    if pixel_missing.dtype != torch.bool:
        raise ValueError(f"pixel_missing must be a bool tensor (True = missing), got {pixel_missing.dtype}")
    if pixel_missing.dim() == 2:
        pixel_missing = pixel_missing[None]
    if pixel_missing.dim() != 3:
        raise ValueError(f"pixel_missing must be (B, H, W) or (H, W), got {tuple(pixel_missing.shape)}")
    _, height, width = pixel_missing.shape
    if factor < 1 or height % factor or width % factor:
        raise ValueError(f"pixel mask {height}x{width} is not divisible by factor {factor}")
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0, got {dilate}")
    missing = pixel_missing[:, None].float()  # (B, 1, H, W)
    grid = F.max_pool2d(missing, factor)  # (B, 1, H/f, W/f), 1 if any pixel of the block is missing
    if dilate:
        grid = F.max_pool2d(grid, 2 * dilate + 1, stride=1, padding=dilate)  # (B, 1, H/f, W/f)
    return grid.flatten(1) > 0  # (B, L)


def token_to_pixel_mask(is_masked: torch.Tensor, grid_size: int, factor: int = 4) -> torch.Tensor:
    """Upsample a token mask to pixels (each token covers a ``factor x factor`` block).

    Args:
        is_masked: bool (B, L) with L = grid_size**2.
        grid_size: tokens per side (16).
        factor: pixels per token side.

    Returns:
        bool (B, grid_size*factor, grid_size*factor), True = pixel of a hidden token.
    """
    grid = is_masked.reshape(-1, grid_size, grid_size)  # (B, h, w)
    return grid.repeat_interleave(factor, 1).repeat_interleave(factor, 2)  # (B, H, W)
