"""Tests for maskgit_lib.masking: schedules, MVTM masks, pixel -> token masks."""

import math

import pytest
import torch

from maskgit_lib.errors import ConfigError
from maskgit_lib.masking import (
    SCHEDULES,
    get_schedule,
    mask_tokens,
    mvtm_mask,
    mvtm_mask_inverted_bug,
    mvtm_num_masked,
    pixel_to_token_mask,
    pow_schedule,
    schedule_name,
    token_to_pixel_mask,
)

ALL_NAMES = sorted(SCHEDULES) + ["uniform", "pow2.5", "pow0.5", "pow1"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_schedule_endpoints_and_monotone(name):
    gamma = get_schedule(name)
    assert gamma(0.0) == 1.0
    assert gamma(1.0) == 0.0
    r = torch.linspace(0, 1, 501, dtype=torch.float64)
    values = gamma(r)
    assert values.shape == r.shape and values.dtype == torch.float64
    assert (values >= 0).all() and (values <= 1).all()
    assert (values[1:] <= values[:-1] + 1e-12).all()
    # float and tensor inputs agree
    for x in (0.1, 0.37, 0.5, 0.9):
        assert gamma(x) == pytest.approx(float(gamma(torch.tensor(x, dtype=torch.float64))), abs=1e-12)


def test_schedule_values_by_hand():
    assert SCHEDULES["linear"](0.25) == pytest.approx(0.75)
    assert SCHEDULES["cosine"](0.5) == pytest.approx(math.cos(math.pi / 4))
    assert SCHEDULES["square"](0.5) == pytest.approx(0.75)
    assert SCHEDULES["cubic"](0.5) == pytest.approx(0.875)
    assert SCHEDULES["sqrt"](0.25) == pytest.approx(0.5)
    assert SCHEDULES["arccos"](0.5) == pytest.approx(2 / 3)
    assert SCHEDULES["log"](0.5) == pytest.approx(1 / 8)  # -log2(0.5)/log2(256)
    assert SCHEDULES["exp"](0.5) == pytest.approx((1 - 256**-0.5) / (1 - 1 / 256))
    assert get_schedule("pow2.5")(0.5) == pytest.approx(1 - 0.5**2.5)
    assert get_schedule("uniform") is SCHEDULES["linear"]


def test_schedule_keeps_float32_and_clamps_r():
    r = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0])
    out = SCHEDULES["cosine"](r)
    assert out.dtype == torch.float32
    assert out.tolist() == pytest.approx([1.0, 1.0, math.cos(math.pi / 4), 0.0, 0.0], abs=1e-6)


def test_get_schedule_errors_and_callables():
    with pytest.raises(ConfigError, match="cosine"):
        get_schedule("cosyne")
    with pytest.raises(ConfigError):
        get_schedule("pow-1")
    with pytest.raises(ConfigError):
        pow_schedule(0)

    def mine(r):
        return 1 - r

    assert get_schedule(mine) is mine
    assert schedule_name(mine) == "mine"
    assert schedule_name(pow_schedule(2.5)) == "pow2.5"


def _first_ratios(seed, batch):
    """The r values mvtm_mask draws first from a generator seeded with ``seed``."""
    return torch.rand(batch, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["linear", "cosine", "square", "arccos"])
def test_mvtm_mask_ratio_is_gamma(name):
    batch, length = 64, 256
    is_masked = mvtm_mask(batch, length, name, generator=torch.Generator().manual_seed(3))
    assert is_masked.shape == (batch, length) and is_masked.dtype == torch.bool
    gamma = get_schedule(name)(_first_ratios(3, batch).double())
    expected = torch.ceil(gamma * length).clamp(1, length).long()  # n = ceil(gamma(r) L)
    assert torch.equal(is_masked.sum(1), expected)


def test_inverted_bug_regression():
    """Ours hides gamma(r) of the tokens; the reimplementation's bug hides 1 - gamma(r)."""
    length = 256
    r = float(_first_ratios(5, 1))
    gamma = SCHEDULES["cosine"](r)
    bug = mvtm_mask_inverted_bug(8, length, "cosine", generator=torch.Generator().manual_seed(5))
    assert (bug.sum(1) == length - math.floor(gamma * length)).all()  # ratio 1 - gamma
    ours = mvtm_mask(1, length, "cosine", generator=torch.Generator().manual_seed(5))
    assert int(ours.sum()) == math.ceil(gamma * length)  # ratio gamma
    # Over many draws: E[gamma(r)] = 2/pi for cosine; the bug gives 1 - 2/pi.
    g = torch.Generator().manual_seed(0)
    ours_mean = torch.stack([mvtm_mask(256, length, "cosine", g).float().mean() for _ in range(4)]).mean()
    bug_mean = torch.stack([mvtm_mask_inverted_bug(1, length, "cosine", g).float().mean() for _ in range(400)]).mean()
    assert float(ours_mean) == pytest.approx(2 / math.pi, abs=0.03)
    assert float(bug_mean) == pytest.approx(1 - 2 / math.pi, abs=0.05)


def test_mvtm_mask_seed_and_min_ratio():
    a = mvtm_mask(8, 64, "cosine", generator=torch.Generator().manual_seed(1))
    b = mvtm_mask(8, 64, "cosine", generator=torch.Generator().manual_seed(1))
    c = mvtm_mask(8, 64, "cosine", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    n = mvtm_num_masked(torch.tensor([0.0, 0.999, 1.0]), 64, "linear", min_ratio=0.25)
    assert n.tolist() == [64, 16, 16]
    assert mvtm_num_masked(torch.tensor([1.0]), 64, "linear").tolist() == [1]  # at least one


def test_mask_tokens():
    tokens = torch.tensor([[3, 4, 5], [6, 7, 8]])
    is_masked = torch.tensor([[True, False, False], [False, False, True]])
    assert mask_tokens(tokens, is_masked, 9).tolist() == [[9, 4, 5], [6, 7, 9]]
    with pytest.raises(ValueError):
        mask_tokens(tokens, is_masked[:, :2], 9)


def test_pixel_to_token_mask_hand_example():
    missing = torch.zeros(8, 8, dtype=torch.bool)  # 2x2 token grid with factor 4
    missing[0, 0] = True  # one pixel of token 0
    missing[5:8, 4:8] = True  # 3 of 4 rows of token 3
    out = pixel_to_token_mask(missing, factor=4)
    assert out.shape == (1, 4)
    assert out.tolist() == [[True, False, False, True]]
    batch = torch.stack([missing, torch.zeros_like(missing)])
    assert pixel_to_token_mask(batch).tolist() == [[True, False, False, True], [False] * 4]


def test_pixel_to_token_mask_dilate_hand_example():
    missing = torch.zeros(20, 20, dtype=torch.bool)  # 5x5 token grid
    missing[9, 9] = True  # token (2, 2)
    grid = pixel_to_token_mask(missing, dilate=0).reshape(5, 5)
    assert int(grid.sum()) == 1 and bool(grid[2, 2])
    grid = pixel_to_token_mask(missing, dilate=1).reshape(5, 5)
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[1:4, 1:4] = True
    assert torch.equal(grid, expected)
    corner = torch.zeros(20, 20, dtype=torch.bool)
    corner[0, 0] = True
    assert int(pixel_to_token_mask(corner, dilate=1).sum()) == 4  # clipped at the border


def test_pixel_to_token_mask_errors():
    with pytest.raises(ValueError, match="bool"):
        pixel_to_token_mask(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="divisible"):
        pixel_to_token_mask(torch.zeros(10, 8, dtype=torch.bool))
    with pytest.raises(ValueError):
        pixel_to_token_mask(torch.zeros(1, 1, 8, 8, dtype=torch.bool))


def _stroke_mask(seed: int, size: int = 64) -> torch.Tensor:
    """A free-form brush-stroke hole mask: a few thick random line segments."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    missing = torch.zeros(size, size, dtype=torch.bool)
    for _ in range(4):
        p0, p1 = torch.rand(2, 2, generator=g) * size
        width = 2.0 + 3.0 * float(torch.rand(1, generator=g))
        d = p1 - p0
        t = (((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / d.dot(d).clamp_min(1e-6)).clamp(0, 1)
        dist = torch.hypot(xs - (p0[0] + t * d[0]), ys - (p0[1] + t * d[1]))
        missing |= dist < width
    return missing


def test_token_fraction_exceeds_pixel_fraction():
    """docs/course_lab.md: on the lab's sample mask, 23.6% of pixels but 38.7% of tokens are masked."""
    for seed in range(5):
        missing = _stroke_mask(seed)
        pixel_fraction = float(missing.float().mean())
        token_fraction = float(pixel_to_token_mask(missing).float().mean())
        assert 0 < pixel_fraction < token_fraction


def test_token_to_pixel_mask_round_trip():
    is_masked = torch.tensor([[True, False, False, True]])
    pixels = token_to_pixel_mask(is_masked, grid_size=2, factor=4)
    assert pixels.shape == (1, 8, 8) and int(pixels.sum()) == 32
    assert torch.equal(pixel_to_token_mask(pixels), is_masked)
