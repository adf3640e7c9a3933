"""Tests for maskgit_lib.decoding.iterative_decode with oracle and random models."""

import math

import pytest
import torch

from maskgit_lib.decoding import DecodeTrace, gumbel_noise, iterative_decode
from maskgit_lib.errors import ConfigError
from maskgit_lib.masking import get_schedule

K = 16  # codebook size; mask id = K
L = 36  # tokens per image (6x6 grid)


def oracle(truth: torch.Tensor, extra_column: bool = False):
    """tokens_to_logits that puts all the mass on the true token."""

    def tokens_to_logits(tokens: torch.Tensor) -> torch.Tensor:
        assert tokens.dtype == torch.int64
        logits = 100.0 * torch.nn.functional.one_hot(truth, K).float()  # (B, L, K)
        if extra_column:
            logits = torch.cat([logits, torch.full_like(logits[..., :1], 1e4)], -1)  # (B, L, K+1)
        return logits

    return tokens_to_logits


def random_model(seed: int = 0):
    """A deterministic model whose logits are random but depend on the input tokens."""
    table = torch.randn(K + 1, L, K, generator=torch.Generator().manual_seed(seed))

    def tokens_to_logits(tokens: torch.Tensor) -> torch.Tensor:
        return table[tokens, torch.arange(tokens.shape[1])] + 0.1 * tokens.float().mean(1)[:, None, None]

    return tokens_to_logits


def make_batch(batch: int, seed: int = 0, fractions=None):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, K, (batch, L), generator=g)
    scores = torch.rand(batch, L, generator=g)
    fractions = torch.rand(batch, generator=g) if fractions is None else torch.tensor(fractions)
    counts = (fractions * L).round().long()
    is_masked = scores.argsort(1).argsort(1) < counts[:, None]
    return truth, is_masked


def expected_counts(n0: int, steps: int, schedule: str, start_step: int = 0) -> list[int]:
    """The count rule of docs/maskgit_algorithm.md, written out independently."""
    gamma = get_schedule(schedule)
    unknown, out = n0, []
    for t in range(start_step, steps):
        if t == steps - 1:
            n = 0
        else:
            n = math.floor(n0 * gamma((t + 1) / steps))  # floor(N0 gamma(r))
            n = max(min(max(n, 1), unknown - 1), 0)  # clamp(n, 1, #unknown - 1)
        out.append(n)
        unknown = n
    return out


@pytest.mark.parametrize("schedule", ["cosine", "linear", "square", "pow2.5", "log", "arccos"])
@pytest.mark.parametrize("steps", [1, 8, 12])
def test_oracle_recovers_truth_and_counts(schedule, steps):
    truth, is_masked = make_batch(4, seed=steps, fractions=[0.0, 0.1, 0.6, 1.0])
    tokens = torch.where(is_masked, 0, truth)
    trace = iterative_decode(oracle(truth), tokens, is_masked, steps=steps, schedule=schedule,
                             mask_token_id=K, generator=torch.Generator().manual_seed(0))
    assert isinstance(trace, DecodeTrace) and len(trace) == steps
    assert trace.tokens.shape == (steps, 4, L) and trace.tokens.dtype == torch.int64
    assert trace.is_masked.shape == (steps, 4, L) and trace.is_masked.dtype == torch.bool
    assert trace.confidence.dtype == torch.float32
    assert torch.equal(trace.final, truth)
    assert not trace.is_masked[-1].any()
    for b in range(4):
        n0 = int(is_masked[b].sum())
        assert trace.num_masked[:, b].tolist() == expected_counts(n0, steps, schedule)
    # known tokens never change, at any step, in tokens or predictions
    for s in range(steps):
        assert torch.equal(trace.tokens[s][~is_masked], truth[~is_masked])
        assert torch.equal(trace.predicted[s][~is_masked], truth[~is_masked])
        assert torch.isinf(trace.confidence[s][~is_masked]).all()
        assert (trace.tokens[s][trace.is_masked[s]] == K).all()
    # the image with nothing to fill passes through unchanged
    assert torch.equal(trace.tokens[:, 0], truth[0].expand(steps, L))


def test_counts_by_hand():
    """N0 = 5, T = 12, linear: floor(5 (1 - r)) = 4, 4, 3, 3, 2 ... clamped to 4, 3, 2, 1, 0."""
    assert expected_counts(5, 12, "linear") == [4, 3, 2, 1] + [0] * 8
    truth, is_masked = make_batch(1, fractions=[5 / L])
    trace = iterative_decode(oracle(truth), truth, is_masked, steps=12, schedule="linear", mask_token_id=K)
    assert trace.num_masked[:, 0].tolist() == [4, 3, 2, 1] + [0] * 8
    # N0 = 36, T = 8, cosine: floor(36 cos(pi t / 16)) for t = 1..7, then 0
    expected = [math.floor(36 * math.cos(math.pi * t / 16)) for t in range(1, 8)] + [0]
    assert expected == [35, 33, 29, 25, 20, 13, 7, 0]
    truth, is_masked = make_batch(1, fractions=[1.0])
    trace = iterative_decode(oracle(truth), truth, is_masked, steps=8, mask_token_id=K)
    assert trace.num_masked[:, 0].tolist() == expected


def test_seeds_reproduce_and_differ():
    truth, is_masked = make_batch(3, seed=1, fractions=[0.5, 0.8, 1.0])
    model = random_model()

    def run(seed):
        return iterative_decode(model, truth, is_masked, steps=6, mask_token_id=K,
                                generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    for name in ("tokens", "is_masked", "predicted", "confidence"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.final, c.final)
    assert torch.equal(a.final[~is_masked], truth[~is_masked])


def test_mask_class_never_sampled():
    truth, is_masked = make_batch(2, fractions=[1.0, 0.5])
    trace = iterative_decode(oracle(truth, extra_column=True), truth, is_masked, steps=5, mask_token_id=K,
                             record_logits=True)
    assert torch.equal(trace.final, truth)
    assert (trace.predicted < K).all()
    assert trace.logits is not None and trace.logits.shape == (5, 2, L, K)


def test_lab_variant_recovers_truth():
    truth, is_masked = make_batch(3, seed=2, fractions=[0.3, 0.7, 1.0])
    trace = iterative_decode(oracle(truth), truth, is_masked, steps=8, mask_token_id=K, confidence="lab",
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(trace.final, truth)
    assert trace.confidence_kind == "lab"
    unknown_conf = trace.confidence[0][is_masked]
    assert ((unknown_conf > -50) & (unknown_conf < 50)).all()  # probability + noise, not log p
    for b in range(3):
        assert trace.num_masked[:, b].tolist() == expected_counts(int(is_masked[b].sum()), 8, "cosine")


def test_lab_variant_writes_argmax():
    truth, is_masked = make_batch(2, seed=3, fractions=[1.0, 1.0])
    model = random_model(4)
    trace = iterative_decode(model, truth, is_masked, steps=1, mask_token_id=K, confidence="lab")
    argmax = model(torch.full_like(truth, K)).argmax(-1)
    assert torch.equal(trace.final, argmax)


def test_p_score_at_tau_0_is_the_lab_rule():
    """confidence "p" with argmax tokens (tau = 0) reproduces the lab's rule (tau = 1) step for step."""
    truth, is_masked = make_batch(4, seed=5)
    runs = [iterative_decode(random_model(6), truth, is_masked, steps=6, mask_token_id=K, confidence=kind,
                             sampling_temperature=tau, generator=torch.Generator().manual_seed(1))
            for kind, tau in (("p", 0.0), ("lab", 1.0))]
    for name in ("tokens", "is_masked", "predicted", "confidence"):
        assert torch.equal(getattr(runs[0], name), getattr(runs[1], name)), name


def test_p_score_samples_the_official_tokens_and_ranks_by_probability():
    """Same sampled tokens as the official rule at the first step; confidence is p (+ noise), not log p."""
    truth, is_masked = make_batch(3, seed=7, fractions=[1.0, 1.0, 1.0])
    official, prob = (iterative_decode(random_model(8), truth, is_masked, steps=4, mask_token_id=K,
                                       confidence=kind, choice_temperature=0.0,
                                       generator=torch.Generator().manual_seed(2)) for kind in ("official", "p"))
    assert torch.equal(official.predicted[0], prob.predicted[0])  # one Gumbel-max draw, same tokens
    assert torch.allclose(prob.confidence[0], official.confidence[0].exp())  # no noise: p = exp(log p)
    assert torch.equal(official.is_masked[0], prob.is_masked[0])  # exp is monotone: the same ranking


def test_sweet_spot_and_at():
    truth, is_masked = make_batch(2, fractions=[1.0, 0.5])
    trace = iterative_decode(random_model(), truth, is_masked, steps=12, mask_token_id=K,
                             generator=torch.Generator().manual_seed(0))
    step8 = trace.at(8)
    assert step8.step == 8 and torch.equal(step8.tokens, trace.tokens[7])
    sweet = trace.tokens_at(8)
    assert torch.equal(sweet, trace.predicted[7])
    assert (sweet < K).all()
    assert torch.equal(sweet[~step8.is_masked], step8.tokens[~step8.is_masked])
    assert torch.equal(trace.tokens_at(12), trace.final)
    for bad in (0, 13):
        with pytest.raises(ConfigError):
            trace.tokens_at(bad)


def test_start_step():
    truth, is_masked = make_batch(2, fractions=[0.5, 1.0])
    trace = iterative_decode(oracle(truth), truth, is_masked, steps=10, start_step=4, mask_token_id=K,
                             schedule="linear")
    assert len(trace) == 6 and trace.start_step == 4
    assert torch.equal(trace.final, truth)
    for b in range(2):
        n0 = int(is_masked[b].sum())
        assert trace.num_masked[:, b].tolist() == expected_counts(n0, 10, "linear", start_step=4)
    assert torch.equal(trace.at(5).tokens, trace.tokens[0])
    with pytest.raises(ConfigError):
        trace.at(4)


def test_greedy_and_mask_token_id_attribute():
    truth, is_masked = make_batch(2, fractions=[1.0, 0.5])
    model = oracle(truth)
    model.mask_token_id = K
    trace = iterative_decode(model, truth, is_masked, steps=4, sampling_temperature=0.0,
                             choice_temperature=0.0)
    assert torch.equal(trace.final, truth) and trace.mask_token_id == K
    assert torch.equal(trace.initial_tokens, torch.where(is_masked, K, truth))
    assert trace.schedule == "cosine" and trace.steps == 4


def test_validation_errors():
    truth, is_masked = make_batch(2, fractions=[0.5, 0.5])
    model = oracle(truth)
    with pytest.raises(ConfigError):
        iterative_decode(model, truth, is_masked, steps=0, mask_token_id=K)
    with pytest.raises(ConfigError, match="cosine"):
        iterative_decode(model, truth, is_masked, steps=4, schedule="nope", mask_token_id=K)
    with pytest.raises(ConfigError):
        iterative_decode(model, truth, is_masked, steps=4, start_step=4, mask_token_id=K)
    with pytest.raises(ConfigError):
        iterative_decode(model, truth, is_masked, steps=4, confidence="argmax", mask_token_id=K)
    with pytest.raises(ConfigError, match="mask_token_id"):
        iterative_decode(model, truth, is_masked, steps=4)
    with pytest.raises(ValueError):
        iterative_decode(model, truth.float(), is_masked, steps=4, mask_token_id=K)
    with pytest.raises(ValueError):
        iterative_decode(model, truth, is_masked[:, :5], steps=4, mask_token_id=K)
    with pytest.raises(ValueError):
        iterative_decode(model, truth, is_masked.long(), steps=4, mask_token_id=K)
    with pytest.raises(ValueError, match="logits"):
        iterative_decode(lambda t: torch.zeros(2, L, K + 2), truth, is_masked, steps=4, mask_token_id=K)
    bad = truth.clone()
    bad[~is_masked] = K
    with pytest.raises(ValueError, match="codebook"):
        iterative_decode(model, bad, is_masked, steps=4, mask_token_id=K)


def test_gumbel_noise_statistics():
    g = gumbel_noise((20000,), torch.Generator().manual_seed(0))
    assert float(g.mean()) == pytest.approx(0.5772, abs=0.03)  # Euler-Mascheroni constant
    assert torch.isfinite(g).all()
