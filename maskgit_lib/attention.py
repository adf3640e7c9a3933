"""Multi-head self-attention, written out from scratch, plus a fast SDPA path.

Derived in ``notebooks/01_attention_from_scratch.ipynb``, sections 1 (scaled dot-product attention by hand)
and 2 (multi-head, checked against ``torch.nn.MultiheadAttention``).

Scaled dot-product attention (Vaswani et al., 2017, eq. 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Multi-head attention projects the input with separate ``W_q``, ``W_k``, ``W_v``
(each ``D x D`` with bias), splits the result into ``H`` heads of ``d = D / H``
channels, attends in every head independently, concatenates the heads and
applies the output projection ``W_o``.

Two implementations compute the same function with the same parameters:

- ``"scratch"``: :func:`scaled_dot_product_attention` below, every step visible;
  the only path that can return the attention maps.
- ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention`, which
  picks a fused kernel (flash / memory-efficient / math) for the device.

Attention here has no positional information and no causal mask: MaskGIT's
transformer is bidirectional, every token sees every other token. Padding uses
the convention of :class:`torch.nn.MultiheadAttention`: ``key_padding_mask``
is bool ``(B, L)`` with True = ignore that key.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ATTENTION_IMPLS
from .errors import ConfigError



def _check_impl(impl: str) -> str:
    if impl not in ATTENTION_IMPLS:
        raise ConfigError(f"unknown attention implementation {impl!r}; choose one of {list(ATTENTION_IMPLS)}")
    return impl


def _check_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k, v must be 4-D (B, H, L, d); got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            "q (B, H, Lq, d), k (B, H, Lk, d) and v (B, H, Lk, dv) do not fit together: "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(
                f"key_padding_mask must be bool (True = ignore that key); got {key_padding_mask.dtype}"
            )
        if tuple(key_padding_mask.shape) != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"key_padding_mask must have shape (B, Lk) = {(k.shape[0], k.shape[2])}; "
                f"got {tuple(key_padding_mask.shape)}"
            )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d_k)) V, written out, returning the attention maps too.

    Args:
        q: queries, float (B, H, Lq, d).
        k: keys, float (B, H, Lk, d).
        v: values, float (B, H, Lk, dv).
        key_padding_mask: optional bool (B, Lk), True = ignore that key (as in
            :class:`torch.nn.MultiheadAttention`). A query whose keys are all
            ignored attends to nothing: its attention row and output are 0
            (what the SDPA kernels return too).
        dropout_p: probability of zeroing an attention weight (only if ``training``).
        training: apply attention dropout (pass ``module.training``).
        generator: optional random generator for the dropout pattern.

    Returns:
        ``(out, attn)``: ``out`` float (B, H, Lq, dv) in the dtype of ``v`` (after
        autocast), and ``attn`` (B, H, Lq, Lk), the attention probabilities
        *before* dropout; each row sums to 1 over the keys that are not ignored,
        and is 0 on ignored keys.

    Raises:
        ValueError: if the shapes or the padding mask's dtype do not fit.
    """
    _check_qkv(q, k, v, key_padding_mask)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q * scale, k.transpose(-2, -1))  # (B, H, Lq, Lk) = Q K^T / sqrt(d_k)
    if key_padding_mask is not None:
        ignored = key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
        scores = scores.masked_fill(ignored, float("-inf"))  # (B, H, Lq, Lk)
    attn = scores.softmax(dim=-1, dtype=torch.float32)  # (B, H, Lq, Lk), fp32 for a stable softmax
    if key_padding_mask is not None:
        all_ignored = key_padding_mask.all(dim=-1)[:, None, None, None]  # (B, 1, 1, 1)
        attn = attn.masked_fill(all_ignored, 0.0)  # rows of -inf gave NaN; make them 0
    attn = attn.to(v.dtype)  # (B, H, Lq, Lk)
    weights = attn
    if training and dropout_p > 0.0:
        if generator is None:
            weights = F.dropout(attn, p=dropout_p, training=True)  # (B, H, Lq, Lk)
        else:
            keep = torch.rand(attn.shape, device=attn.device, generator=generator) >= dropout_p
            weights = attn * keep / (1.0 - dropout_p)  # (B, H, Lq, Lk)
    out = torch.matmul(weights, v)  # (B, H, Lq, dv)
    return out, attn


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value projections.

    Parameters (all with bias): ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``,
    each ``Linear(D, D)``. ``impl`` chooses the kernel and may be changed at any
    time (the parameters are the same); see :func:`maskgit_lib.transformer.set_attention_impl`.

    Args:
        dim: D, model width (divisible by ``heads``).
        heads: H, number of heads; each has d = D / H channels.
        dropout: attention-weight dropout probability, active in training mode.
        impl: ``"sdpa"`` (fused kernel) or ``"scratch"`` (written out).

    Raises:
        ConfigError: if ``dim`` is not divisible by ``heads``, ``dropout`` is not
            in [0, 1), or ``impl`` is unknown.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, impl: str = "sdpa") -> None:
        super().__init__()
        if dim <= 0 or heads <= 0 or dim % heads != 0:
            raise ConfigError(f"attention width dim={dim} must be a positive multiple of heads={heads}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"attention dropout must be in [0, 1); got {dropout}")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.impl = _check_impl(impl)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dropout={self.dropout}, impl={self.impl!r}"

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from every token to every (non-ignored) token.

        Args:
            x: float (B, L, D).
            key_padding_mask: optional bool (B, L), True = ignore that key.
            return_attention: also return the attention maps (always computed
                with the scratch path, whatever ``impl`` is).

        Returns:
            ``out`` float (B, L, D), or ``(out, attn)`` with ``attn`` (B, H, L, L)
            the attention probabilities before dropout (rows sum to 1 over keys).

        Raises:
            ValueError: if ``x`` is not (B, L, D) with this module's D.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"attention input must have shape (B, L, {self.dim}); got {tuple(x.shape)}")
        b, n, _ = x.shape
        q = self._split_heads(self.q_proj(x))  # (B, H, L, d)
        k = self._split_heads(self.k_proj(x))  # (B, H, L, d)
        v = self._split_heads(self.v_proj(x))  # (B, H, L, d)
        dropout_p = self.dropout if self.training else 0.0
        attn = None
        if self.impl == "scratch" or return_attention:
            heads_out, attn = scaled_dot_product_attention(
                q, k, v, key_padding_mask=key_padding_mask, dropout_p=dropout_p, training=self.training
            )  # (B, H, L, d), (B, H, L, L)
        else:
            allowed = None
            if key_padding_mask is not None:
                _check_qkv(q, k, v, key_padding_mask)
                allowed = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, L), True = take part
            heads_out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, dropout_p=dropout_p
            )  # (B, H, L, d)
        merged = heads_out.transpose(1, 2).reshape(b, n, self.dim)  # (B, L, D), heads concatenated
        out = self.out_proj(merged)  # (B, L, D)
        if return_attention:
            return out, attn
        return out
