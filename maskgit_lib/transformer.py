"""MaskGIT stage 2: the bidirectional transformer over VQGAN tokens.

Its attention is derived in ``notebooks/01_attention_from_scratch.ipynb`` (sections 1-2; section 5
looks at the trained model's attention maps).

Architecture (the course lab's ``BidirectionalTransformer``, BERT-style):

    h0 = Dropout(LN(E_tok[tokens] + E_pos))                    # (B, L, D)
    for each block (post-norm):
        x = LN(x + Dropout(MHSA(x)))
        x = LN(x + Dropout(W2 GELU(W1 x)))
    h = LN(GELU(W_p h + b_p))                                  # token predictor
    logits = h E_tok[:K]^T + b_pos                             # (B, L, K)

``E_tok`` has K+1 rows; row K is the ``[MASK]`` token (``cfg.mask_token_id``).
The output layer is weight-tied to the first K rows of ``E_tok`` plus a learned
bias per position and class (L, K).

**The mask class is never in the output.** Logits have exactly K classes. A
known defect of the lab lineage computes logits against all K+1 embedding rows,
so the model can "predict" the mask id and decoding can write ``[MASK]`` into an
image (which the VQGAN cannot decode); slicing the tied weight to K rows fixes
this by construction and also saves the wasted column.

Helpers: :func:`count_parameters`, :func:`flops_per_image` (for MFU numbers),
:func:`set_attention_impl` (switch ``"sdpa"``/``"scratch"`` at run time), and
:func:`save_transformer` / :func:`load_transformer` (safetensors + config).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attention import MultiHeadSelfAttention, _check_impl
from .checkpoint import build_checked, check_tensor_count, read_weights, save_weights
from .config import TransformerConfig, config_from_dict, config_to_dict
from .errors import CheckpointError, MaskgitError

MODEL_TYPE = "transformer"
LN_EPS = 1e-12  # the lab's (and BERT's) LayerNorm epsilon
INIT_STD = 0.02  # BERT / MaskGIT initializer range


class TransformerBlock(nn.Module):
    """One post-norm encoder block: ``x = LN(x + Attn(x)); x = LN(x + MLP(x))``.

    Args:
        cfg: width, heads, MLP width, dropout and attention implementation.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        attn_p = cfg.dropout if cfg.attention_dropout is None else cfg.attention_dropout
        self.attn = MultiHeadSelfAttention(cfg.dim, cfg.heads, dropout=attn_p, impl=cfg.attention)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.norm1 = nn.LayerNorm(cfg.dim, eps=LN_EPS)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, cfg.mlp_dim),
            nn.GELU(),
            nn.Linear(cfg.mlp_dim, cfg.dim),
            nn.Dropout(cfg.dropout),
        )
        self.norm2 = nn.LayerNorm(cfg.dim, eps=LN_EPS)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x float (B, L, D). Returns ``(x, attn)``: (B, L, D) and (B, H, L, L) or None."""
        attn = None
        if return_attention:
            a, attn = self.attn(x, return_attention=True)  # (B, L, D), (B, H, L, L)
        else:
            a = self.attn(x)  # (B, L, D)
        x = self.norm1(x + self.attn_drop(a))  # (B, L, D)
        x = self.norm2(x + self.mlp(x))  # (B, L, D)
        return x, attn


class MaskGITTransformer(nn.Module):
    """Bidirectional transformer: token ids with ``[MASK]`` -> logits over the K codes.

    Args:
        cfg: the model config (``TransformerConfig.preset("tiny"|"cpu"|"lab")``).

    Attributes:
        cfg: the config (``attention`` follows :func:`set_attention_impl`).
        validate_inputs: check token dtype/shape/range on every forward (one
            small reduction; a trainer on a GPU may switch it off).

    Raises:
        ConfigError: if the config is not usable (e.g. ``dim`` not divisible by ``heads``).
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.validate_inputs = True
        self.tok_emb = nn.Embedding(cfg.codebook_size + 1, cfg.dim)  # row K = [MASK]
        self.pos_emb = nn.Parameter(torch.zeros(cfg.num_tokens, cfg.dim))  # (L, D)
        self.emb_norm = nn.LayerNorm(cfg.dim, eps=LN_EPS)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.depth))
        self.token_predictor = nn.Sequential(
            nn.Linear(cfg.dim, cfg.dim),
            nn.GELU(),
            nn.LayerNorm(cfg.dim, eps=LN_EPS),
        )
        self.logit_bias = nn.Parameter(torch.zeros(cfg.num_tokens, cfg.codebook_size))  # (L, K)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT/MaskGIT init: N(0, 0.02) weights and embeddings, zero biases, LN = identity."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.pos_emb, mean=0.0, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
        nn.init.zeros_(self.logit_bias)

    @property
    def mask_token_id(self) -> int:
        """K, the id of the mask token (so the model can be passed to iterative_decode)."""
        return self.cfg.mask_token_id

    @property
    def output_weight(self) -> torch.Tensor:
        """The tied output weight: a view of ``tok_emb.weight[:K]``, float (K, D)."""
        return self.tok_emb.weight[: self.cfg.codebook_size]

    def _check_tokens(self, tokens: Any) -> None:
        cfg = self.cfg
        if not isinstance(tokens, torch.Tensor):
            raise ValueError(
                f"tokens must be a torch.Tensor of int64 ids, shape (B, {cfg.num_tokens}); "
                f"got {type(tokens).__name__}"
            )
        if tokens.dtype != torch.int64:
            raise ValueError(
                f"tokens must be int64 (torch.long) codebook ids; got {tokens.dtype} (use tokens.long())"
            )
        if tokens.dim() != 2 or tokens.shape[1] != cfg.num_tokens:
            raise ValueError(
                f"tokens must have shape (B, L) = (B, {cfg.num_tokens}); got {tuple(tokens.shape)} "
                "(flatten a (B, h, w) grid with tokens.flatten(1))"
            )
        if tokens.numel() and self.validate_inputs:
            lo, hi = torch.aminmax(tokens)
            if int(lo) < 0 or int(hi) > cfg.codebook_size:
                raise ValueError(
                    f"token ids must lie in [0, {cfg.codebook_size}] "
                    f"(codebook ids 0..{cfg.codebook_size - 1}, "
                    f"mask token {cfg.mask_token_id}); got values in [{int(lo)}, {int(hi)}]"
                )

    def forward(
        self, tokens: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Predict every position's code from the visible ones.

        Args:
            tokens: int64 (B, L) ids in [0, K]; ``K`` (``cfg.mask_token_id``) marks
                hidden positions.
            return_attention: also return each block's attention maps (computed
                by the scratch path, whatever ``cfg.attention`` is).

        Returns:
            ``logits`` float (B, L, K) (float32 also under bf16 autocast, through
            the fp32 bias), or ``(logits, maps)`` with ``maps`` a list of
            ``cfg.depth`` tensors (B, H, L, L).

        Raises:
            ValueError: if ``tokens`` is not int64 (B, L) with values in [0, K].
        """
        self._check_tokens(tokens)
        x = self.tok_emb(tokens) + self.pos_emb  # (B, L, D)
        x = self.emb_drop(self.emb_norm(x))  # (B, L, D), LN then dropout (lab / official)
        maps: list[torch.Tensor] = []
        for block in self.blocks:
            x, attn = block(x, return_attention=return_attention)  # (B, L, D), (B, H, L, L) | None
            if attn is not None:
                maps.append(attn)
        h = self.token_predictor(x)  # (B, L, D)
        logits = torch.matmul(h, self.output_weight.t()) + self.logit_bias  # (B, L, K), no [MASK] column
        if return_attention:
            return logits, maps
        return logits


def set_attention_impl(model: MaskGITTransformer, impl: str) -> MaskGITTransformer:
    """Switch every attention layer of ``model`` to ``"sdpa"`` or ``"scratch"`` in place.

    The parameters are shared by both paths, so outputs agree within float
    tolerance; ``model.cfg.attention`` is updated so a saved checkpoint records it.

    Returns:
        The same model, for chaining.

    Raises:
        ConfigError: if ``impl`` is unknown.
    """
    _check_impl(impl)
    for module in model.modules():
        if isinstance(module, MultiHeadSelfAttention):
            module.impl = impl
    model.cfg = dataclasses.replace(model.cfg, attention=impl)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_image(cfg: TransformerConfig, training: bool = False) -> float:
    """Model FLOPs of one forward pass over one image's L tokens (for MFU).

    Counting one multiply-add as 2 FLOPs, and ignoring element-wise work
    (LayerNorm, GELU, softmax, bias adds) and the embedding lookup::

        N_mm   = depth * (4 D^2 + 2 D mlp_dim) + D^2      # matmul weights per token
        F_mm   = 2 * N_mm * L                              # all Linear layers
        F_attn = depth * 4 * L^2 * D                       # Q K^T and A V, all heads
        F_out  = 2 * L * D * K                             # tied logits layer
        forward = F_mm + F_attn + F_out;   training = 3 * forward

    (backward costs about twice the forward). ``lab`` preset: 39.96 GFLOP forward.

    Args:
        cfg: the model config.
        training: count forward + backward instead of forward only.

    Returns:
        FLOPs per image as a float.
    """
    d, n, k = cfg.dim, cfg.num_tokens, cfg.codebook_size
    matmul_params = cfg.depth * (4 * d * d + 2 * d * cfg.mlp_dim) + d * d
    forward = 2.0 * matmul_params * n + cfg.depth * 4.0 * n * n * d + 2.0 * n * d * k
    return 3.0 * forward if training else forward


def save_transformer(
    model: MaskGITTransformer, path: str | os.PathLike, metrics: dict[str, Any] | None = None
) -> Path:
    """Atomically write the model's weights and config as safetensors.

    Args:
        model: the transformer.
        path: destination ``*.safetensors`` file.
        metrics: optional JSON-friendly numbers stored with the weights.

    Returns:
        The destination path.
    """
    return save_weights(
        path, model.state_dict(), model_type=MODEL_TYPE, config=config_to_dict(model.cfg), metrics=metrics
    )


def load_transformer(
    path: str | os.PathLike, device: str | torch.device = "cpu", cfg: TransformerConfig | None = None
) -> MaskGITTransformer:
    """Rebuild a transformer from a file written by :func:`save_transformer`.

    Args:
        path: a ``*.safetensors`` transformer checkpoint.
        device: where to put the model.
        cfg: optional config the checkpoint must fit (e.g. a trainer's); by
            default the config stored in the file is used.

    Returns:
        The model on ``device``, in eval mode.

    Raises:
        CheckpointError: missing/truncated/corrupt file, another model type,
            metadata that is not JSON, NaN/inf weights, a stored config that is
            not a valid transformer config, or weights that do not fit the config
            (names the mismatching tensors; checked on the meta device before the
            model is built, so lying metadata allocates nothing).
        ConfigError: if ``cfg`` is given and is not a usable config.
    """
    state, meta = read_weights(path, expected_type=MODEL_TYPE)
    stored = cfg is None
    if stored:  # a given cfg was validated when it was built (TransformerConfig.__post_init__)
        try:
            cfg = config_from_dict(TransformerConfig, meta["config"])
        except (MaskgitError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} stores an unusable transformer config: {exc}") from exc
    # each block has >= 8 tensors (two LayerNorms, two Linear layers), plus 9 outside the blocks
    check_tensor_count(path, state, 8 * cfg.depth + 9, f"depth={cfg.depth}")
    try:
        model = build_checked(lambda: MaskGITTransformer(cfg), state, path)
    except CheckpointError:
        raise
    except (MaskgitError, TypeError, ValueError, OverflowError, RuntimeError) as exc:  # sizes torch refuses
        if not stored:
            raise
        raise CheckpointError(f"checkpoint {path} stores an unusable transformer config: {exc}") from exc
    return model.to(device).eval()
