"""Property tests (hypothesis) for token masks and the iterative decoder's invariants."""

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from maskgit_lib.decoding import iterative_decode
from maskgit_lib.masking import SCHEDULES, get_schedule, mvtm_mask, pixel_to_token_mask

FAST = settings(max_examples=25, deadline=None, database=None)


@st.composite
def pixel_masks(draw):
    """(pixel_missing (B, H, W) bool, factor) with random size, density and seed."""
    batch = draw(st.integers(1, 3))
    factor = draw(st.sampled_from([1, 2, 4]))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.3, 0.7, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    noise = torch.rand(batch, h * factor, w * factor, generator=torch.Generator().manual_seed(seed))
    return noise < density, factor


@FAST
@given(pixel_masks())
def test_token_known_iff_whole_block_known(case):
    missing, factor = case
    batch, height, width = missing.shape
    blocks = missing.reshape(batch, height // factor, factor, width // factor, factor)
    expected = blocks.any(dim=4).any(dim=2).flatten(1)  # masked iff any pixel of the block missing
    out = pixel_to_token_mask(missing, factor=factor)
    assert out.dtype == torch.bool and torch.equal(out, expected)
    assert float(out.float().mean()) >= float(missing.float().mean())  # token % >= pixel %
    if factor == 4:  # the lab's rule: two 2x2 average pools of the known mask, then == 1
        known = (~missing)[:, None].float()
        lab = F.avg_pool2d(F.avg_pool2d(known, 2), 2) == 1
        assert torch.equal(out, ~lab.flatten(1))


@FAST
@given(pixel_masks(), st.integers(1, 2))
def test_dilation_only_adds_masked_tokens(case, dilate):
    missing, factor = case
    base = pixel_to_token_mask(missing, factor=factor)
    grown = pixel_to_token_mask(missing, factor=factor, dilate=dilate)
    assert torch.equal(grown | base, grown)
    assert grown.any() == base.any()


@FAST
@given(st.integers(1, 3), st.integers(1, 6), st.sampled_from([1, 2, 4]), st.integers(0, 2))
def test_all_known_and_all_missing(batch, side, factor, dilate):
    shape = (batch, side * factor, side * factor)
    assert not pixel_to_token_mask(torch.zeros(shape, dtype=torch.bool), factor, dilate).any()
    assert pixel_to_token_mask(torch.ones(shape, dtype=torch.bool), factor, dilate).all()


@FAST
@given(st.integers(1, 4), st.integers(1, 40), st.sampled_from(sorted(SCHEDULES)), st.integers(0, 10**6))
def test_mvtm_mask_counts(batch, length, schedule, seed):
    is_masked = mvtm_mask(batch, length, schedule, generator=torch.Generator().manual_seed(seed))
    ratios = torch.rand(batch, generator=torch.Generator().manual_seed(seed)).double()
    expected = torch.ceil(get_schedule(schedule)(ratios) * length).clamp(1, length).long()
    assert torch.equal(is_masked.sum(1), expected)


@st.composite
def decode_cases(draw):
    batch = draw(st.integers(1, 3))
    length = draw(st.sampled_from([1, 4, 9, 16, 25]))
    k = draw(st.integers(2, 12))
    steps = draw(st.integers(1, 12))
    start_step = draw(st.integers(0, steps - 1))
    schedule = draw(st.sampled_from(sorted(SCHEDULES) + ["pow2.5"]))
    confidence = draw(st.sampled_from(["official", "lab"]))
    density = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    return batch, length, k, steps, start_step, schedule, confidence, density, seed


@settings(max_examples=40, deadline=None, database=None)
@given(decode_cases())
def test_sampler_invariants(case):
    batch, length, k, steps, start_step, schedule, confidence, density, seed = case
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, k, (batch, length), generator=g)
    is_masked = torch.rand(batch, length, generator=g) < density
    table = torch.randn(k + 1, length, k + 1, generator=g) * 3  # includes a mask-class column

    def tokens_to_logits(x):
        return table[x, torch.arange(length)]  # (B, L, K+1)

    trace = iterative_decode(tokens_to_logits, tokens, is_masked, steps=steps, schedule=schedule,
                             start_step=start_step, confidence=confidence, mask_token_id=k, generator=g)
    known = ~is_masked  # (B, L)
    assert len(trace) == steps - start_step
    assert not trace.is_masked[-1].any()
    assert (trace.final < k).all() and (trace.predicted < k).all()
    assert torch.equal(trace.tokens[:, known], tokens[known].expand(len(trace), -1))  # known unchanged
    assert not (trace.is_masked & known).any()
    gamma = get_schedule(schedule)
    counts = trace.num_masked.T.tolist()  # (B, S)
    for b, n0 in enumerate(is_masked.sum(1).tolist()):
        previous = n0
        for t, now in zip(range(start_step, steps), counts[b]):
            assert previous == 0 and now == 0 or now < previous  # at least one revealed per step
            if t < steps - 1:
                n = math.floor(n0 * gamma((t + 1) / steps))  # floor(N0 gamma(r))
                assert now == max(min(max(n, 1), previous - 1), 0)  # clamp(n, 1, #unknown - 1)
            previous = now
