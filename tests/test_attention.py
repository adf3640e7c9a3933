"""Tests for maskgit_lib.attention: scratch and SDPA paths vs torch.nn.MultiheadAttention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskgit_lib.attention import MultiHeadSelfAttention, scaled_dot_product_attention
from maskgit_lib.errors import ConfigError

B, L, D, H = 3, 10, 32, 4
ATOL = 1e-5


def _ours_and_torch(
    impl: str = "scratch", dropout: float = 0.0
) -> tuple[MultiHeadSelfAttention, nn.MultiheadAttention]:
    """Our module and a torch MHA holding the same weights (in_proj = [Wq; Wk; Wv])."""
    torch.manual_seed(0)
    ours = MultiHeadSelfAttention(D, H, dropout=dropout, impl=impl)
    ref = nn.MultiheadAttention(D, H, dropout=dropout, bias=True, batch_first=True)
    with torch.no_grad():
        for proj in (ours.q_proj, ours.k_proj, ours.v_proj, ours.out_proj):
            proj.bias.normal_()
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ours.eval(), ref.eval()


def _padding() -> torch.Tensor:
    kpm = torch.zeros(B, L, dtype=torch.bool)  # (B, L), True = ignore key
    kpm[0, -3:] = True
    kpm[2, :4] = True
    return kpm


@pytest.mark.parametrize("impl", ["scratch", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_torch_multihead_attention(impl: str, padded: bool) -> None:
    ours, ref = _ours_and_torch(impl)
    x = torch.randn(B, L, D)
    kpm = _padding() if padded else None
    with torch.no_grad():
        out = ours(x, key_padding_mask=kpm)
        ref_out, ref_attn = ref(x, x, x, key_padding_mask=kpm, average_attn_weights=False)
        out2, attn = ours(x, key_padding_mask=kpm, return_attention=True)
    assert out.shape == (B, L, D) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(out2, ref_out, atol=ATOL, rtol=1e-4)
    assert attn.shape == (B, H, L, L)
    torch.testing.assert_close(attn, ref_attn, atol=ATOL, rtol=1e-4)


def test_sdpa_and_scratch_paths_agree() -> None:
    ours, _ = _ours_and_torch("sdpa")
    x = torch.randn(B, L, D)
    kpm = _padding()
    with torch.no_grad():
        fast = ours(x, key_padding_mask=kpm)
        ours.impl = "scratch"
        slow = ours(x, key_padding_mask=kpm)
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=1e-4)


def test_attention_rows_sum_to_one_and_ignore_padded_keys() -> None:
    q, k, v = (torch.randn(B, H, L, 8) for _ in range(3))
    kpm = _padding()
    out, attn = scaled_dot_product_attention(q, k, v, key_padding_mask=kpm)
    assert out.shape == (B, H, L, 8) and attn.shape == (B, H, L, L)
    torch.testing.assert_close(attn.sum(-1), torch.ones(B, H, L))
    assert (attn >= 0).all()
    assert (attn.masked_select(kpm[:, None, None, :].expand_as(attn)) == 0).all()
    # Reference: the textbook formula with padded keys dropped.
    manual = torch.softmax(q[0] @ k[0, :, :-3].transpose(-1, -2) / 8**0.5, dim=-1) @ v[0, :, :-3]
    torch.testing.assert_close(out[0], manual, atol=ATOL, rtol=1e-4)


def test_fully_padded_row_gives_zeros_in_both_paths() -> None:
    ours, _ = _ours_and_torch("scratch")
    x = torch.randn(B, L, D)
    kpm = _padding()
    kpm[1] = True
    with torch.no_grad():
        slow, attn = ours(x, key_padding_mask=kpm, return_attention=True)
        ours.impl = "sdpa"
        fast = ours(x, key_padding_mask=kpm)
    assert torch.isfinite(slow).all() and (attn[1] == 0).all()
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("impl", ["scratch", "sdpa"])
def test_permutation_equivariance(impl: str) -> None:
    ours, _ = _ours_and_torch(impl)
    x = torch.randn(B, L, D)
    perm = torch.randperm(L, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ours(x)
        out_perm = ours(x[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("impl", ["scratch", "sdpa"])
def test_dropout_only_in_training(impl: str) -> None:
    ours, _ = _ours_and_torch(impl, dropout=0.5)
    x = torch.randn(B, L, D)
    with torch.no_grad():
        assert torch.equal(ours(x), ours(x))
        ours.train()
        assert not torch.allclose(ours(x), ours(x))


def test_scratch_dropout_generator_is_reproducible() -> None:
    q, k, v = (torch.randn(B, H, L, 8) for _ in range(3))
    runs = [
        scaled_dot_product_attention(
            q, k, v, dropout_p=0.3, training=True, generator=torch.Generator().manual_seed(7)
        )[0]
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    no_drop, _ = scaled_dot_product_attention(q, k, v, dropout_p=0.3, training=False)
    assert not torch.allclose(runs[0], no_drop)


def test_bad_arguments_rejected() -> None:
    with pytest.raises(ConfigError, match="multiple of heads"):
        MultiHeadSelfAttention(30, 4)
    with pytest.raises(ConfigError, match="sdpa"):
        MultiHeadSelfAttention(32, 4, impl="flash")
    attn = MultiHeadSelfAttention(D, H)
    with pytest.raises(ValueError, match=r"\(B, L, 32\)"):
        attn(torch.randn(B, L, D + 1))
    with pytest.raises(ValueError, match="bool"):
        attn(torch.randn(B, L, D), key_padding_mask=torch.zeros(B, L))
    with pytest.raises(ValueError, match="shape"):
        attn(torch.randn(B, L, D), key_padding_mask=torch.zeros(B, L + 1, dtype=torch.bool))
