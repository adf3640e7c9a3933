"""Frozen configuration dataclasses with named presets.

Every checkpoint stores the config it was built from (``to_dict``) together
with the library version, so a checkpoint can always be rebuilt and a
mismatching one is refused with a clear message (nanoGPT's ``model_args``).

Presets:
    ``tiny``: seconds on a CPU; unit tests and smoke-mode notebooks.
    ``cpu``:  the default; trains on a laptop/GPU in minutes, inpaints a 64x64
              image in well under a second on two CPU cores.
    ``lab``:  the course lab's sizes (VQGAN codebook 1024 x 256, transformer
              768 wide, 15 layers, 16 heads, ~73M parameters): a GPU preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError

ATTENTION_IMPLS = ("sdpa", "scratch")  # written out in maskgit_lib.attention

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Return a JSON-friendly dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build ``cls`` from a dict, refusing unknown keys with a clear message.

    Args:
        cls: a config dataclass type.
        values: field name -> value (lists are turned back into tuples).

    Raises:
        ConfigError: if ``values`` holds keys that ``cls`` does not define.
    """
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(names)}"
        )
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**fixed)  # type: ignore[call-arg]


def _preset(presets: dict[str, C], name: str, kind: str) -> C:
    if name not in presets:
        raise ConfigError(f"unknown {kind} preset {name!r}; choose one of {sorted(presets)}")
    return presets[name]


@dataclass(frozen=True)
class VQGANConfig:
    """VQGAN tokenizer: 64x64 RGB image <-> (image_size / downsample_factor)^2 token grid.

    The encoder is taming-transformers style: ``conv_in`` to ``channels[0]``,
    then per level ``num_res_blocks`` ResBlocks to ``channels[i]`` and a 2x
    strided-conv downsample after the levels in ``downsample_after``, then a
    middle ResBlock-attention-ResBlock at the lowest resolution and
    GroupNorm/SiLU/conv to ``code_dim``. The decoder mirrors it with
    ``num_res_blocks + 1`` ResBlocks per level and nearest upsampling.

    Attributes:
        image_size: input side in pixels (64).
        channels: conv width per resolution level.
        num_res_blocks: encoder residual blocks per level (decoder: one more).
        attn_at_bottom: a self-attention block at the lowest resolution (in the
            middle block of the encoder and of the decoder).
        codebook_size: K, number of code vectors.
        code_dim: dimension of each code vector.
        beta: commitment loss weight (0.25 in the paper and the lab).
        dead_code_threshold: a code whose EMA usage count (uses per batch)
            falls below this is restarted from a random encoder output; 0
            disables restarts.
        ema_decay: decay of the EMA codebook updates and usage counts.
        use_ema: EMA codebook updates (True) or a codebook trained by the
            codebook loss ``||sg(z) - e||^2`` (False).
        downsample_after: indices of the levels followed by a 2x downsample;
            None means after every level except the last (the usual layout,
            so 3 levels give f=4: 64 -> 16).
    """

    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128)
    num_res_blocks: int = 2
    attn_at_bottom: bool = True
    codebook_size: int = 1024
    code_dim: int = 64
    beta: float = 0.25
    dead_code_threshold: float = 1.0
    ema_decay: float = 0.99
    use_ema: bool = True
    downsample_after: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        levels = len(self.channels)
        problems = []
        if levels < 1 or any(int(c) < 1 for c in self.channels):
            problems.append(f"channels must be a non-empty tuple of positive ints, got {self.channels}")
        if self.downsample_after is not None and (
            len(set(self.downsample_after)) != len(self.downsample_after)
            or any(not 0 <= i < levels - 1 for i in self.downsample_after)
        ):
            problems.append(
                f"downsample_after={self.downsample_after} must hold distinct level indices in "
                f"[0, {levels - 1}) (no downsample after the last level)"
            )
        elif self.image_size < 1 or self.image_size % self.downsample_factor:
            problems.append(
                f"image_size={self.image_size} is not divisible by the downsampling factor "
                f"{self.downsample_factor}"
            )
        if self.num_res_blocks < 1 or self.code_dim < 1 or self.codebook_size < 2:
            problems.append("num_res_blocks and code_dim must be >= 1 and codebook_size >= 2")
        if not 0.0 < self.ema_decay < 1.0 or self.beta < 0 or self.dead_code_threshold < 0:
            problems.append("ema_decay must be in (0, 1), beta and dead_code_threshold >= 0")
        if problems:
            raise ConfigError("invalid VQGANConfig: " + "; ".join(problems))

    @property
    def downsample_levels(self) -> tuple[int, ...]:
        """Indices of the levels followed by a 2x downsample."""
        if self.downsample_after is None:
            return tuple(range(len(self.channels) - 1))
        return tuple(sorted(self.downsample_after))

    @property
    def downsample_factor(self) -> int:
        return 2 ** len(self.downsample_levels)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample_factor

    @staticmethod
    def preset(name: str) -> "VQGANConfig":
        return _preset(VQGAN_PRESETS, name, "VQGAN")


# cpu (the default): 3.6M parameters (~15 MB fp32), ~11.6 GFLOP per image for a
# training step (forward + backward); most of it is the 64x64 level, kept at 32 wide.
# lab: the course lab's encoder widths [128, 128, 128, 256, 256, 512] are conv_in
# (128) followed by five levels of 2 ResBlocks (128, 128, 256, 256, 512), attention
# at 16x16, decoder with 3 ResBlocks per level. Here: the same widths and block
# counts, but only two downsamples (after levels 0 and 1: 64 -> 32 -> 16, f=4,
# the 256/256/512 levels run at 16x16) and attention only in the middle blocks.
VQGAN_PRESETS: dict[str, VQGANConfig] = {
    "tiny": VQGANConfig(channels=(8, 16, 32), num_res_blocks=1, attn_at_bottom=False,
                        codebook_size=64, code_dim=16),
    "cpu": VQGANConfig(),
    "lab": VQGANConfig(channels=(128, 128, 256, 256, 512), num_res_blocks=2, codebook_size=1024,
                       code_dim=256, downsample_after=(0, 1)),
}


@dataclass(frozen=True)
class TransformerConfig:
    """Bidirectional transformer over a grid of VQGAN tokens (MaskGIT stage 2).

    Attributes:
        codebook_size: K; the token embedding has K+1 rows, row K is the mask token.
        num_tokens: L, tokens per image (16*16 = 256).
        dim: D, model width.
        depth: number of transformer blocks.
        heads: H, attention heads (D must be divisible by H).
        mlp_dim: hidden width of each block's MLP.
        dropout: dropout on residual branches and embeddings (and on attention
            weights unless ``attention_dropout`` is set).
        attention_dropout: dropout on attention weights; None = ``dropout`` (the
            lab and the official code: 0.1). The ``cpu`` preset uses 0: with
            dropout on the weights, SDPA on a CPU falls back to its unfused
            kernel and training runs about 1.6x slower (``maskgit bench``).
        attention: "sdpa" (fast, ``F.scaled_dot_product_attention``) or
            "scratch" (written out, can return attention maps).
    """

    codebook_size: int = 1024
    num_tokens: int = 256
    dim: int = 256
    depth: int = 8
    heads: int = 8
    mlp_dim: int = 1024
    dropout: float = 0.1
    attention_dropout: float | None = None
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        for name in ("codebook_size", "num_tokens", "dim", "depth", "heads", "mlp_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"TransformerConfig.{name} must be a positive integer; got {value!r}")
        if self.dim % self.heads != 0:
            raise ConfigError(f"TransformerConfig.dim={self.dim} must be divisible by heads={self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"TransformerConfig.dropout must be in [0, 1); got {self.dropout}")
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError(f"TransformerConfig.attention_dropout must be None or in [0, 1); "
                              f"got {self.attention_dropout}")
        if self.attention not in ATTENTION_IMPLS:
            raise ConfigError(f"unknown attention implementation {self.attention!r}; "
                              f"choose one of {list(ATTENTION_IMPLS)}")

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size

    @staticmethod
    def preset(name: str) -> "TransformerConfig":
        return _preset(TRANSFORMER_PRESETS, name, "transformer")


TRANSFORMER_PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(codebook_size=64, dim=64, depth=2, heads=4, mlp_dim=128),
    "cpu": TransformerConfig(attention_dropout=0.0),
    "lab": TransformerConfig(dim=768, depth=15, heads=16, mlp_dim=1536),
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by both trainers (``maskgit_lib.training``).

    Every field is saved in the training state; a resume is refused when a field
    other than those in ``maskgit_lib.training.state.RESUMABLE_FIELDS`` (``max_steps``,
    ``max_minutes``, ``val_every``, ``ckpt_every``, ``log_every``) differs from the
    stored one.

    Attributes:
        batch_size: global batch size per optimizer step (split across processes
            under torchrun and across ``grad_accum`` micro-batches).
        lr: peak learning rate.
        weight_decay: AdamW weight decay (never applied to norms, biases, embeddings).
        betas: Adam betas ((0.9, 0.96) in MaskGIT).
        warmup_steps: linear warmup steps, then cosine decay to ``min_lr_ratio * lr``.
        min_lr_ratio: final learning rate of the cosine decay, relative to ``lr``.
        max_steps: total optimizer steps; 0 means "until ``max_minutes``" (the
            cosine decay then follows the elapsed fraction of the time budget).
        grad_accum: micro-batches accumulated per optimizer step.
        grad_clip: max global gradient norm (0 disables).
        label_smoothing: cross-entropy label smoothing (transformer only).
        schedule: MVTM masking schedule name used in training (transformer only).
        min_mask_ratio: minimum MVTM masking rate (transformer only).
        hole_fraction: probability that a training example is a hole example
            (brush-stroke hole, context encoded from the prefilled image; see
            :mod:`maskgit_lib.training.hole_examples`) instead of plain MVTM (transformer only).
        hole_variants: hole examples built per training image (transformer only).
        token_views: views of each training image tokenized for the transformer
            (:mod:`maskgit_lib.views`; ``("id", "flip")`` = image + mirror image).
        recon_loss: VQGAN pixel loss, ``"l1"``, ``"mse"`` or ``"l1+mse"``.
        gan_weight: weight of the PatchGAN hinge loss (VQGAN only; 0 disables).
        gan_start: optimizer step at which the GAN loss is switched on.
        hflip: random horizontal flips of training images (VQGAN; the
            transformer instead tokenizes flipped copies once).
        bf16: autocast to bfloat16 (CPU or CUDA).
        seed: random seed (model init, data order, augmentation, masks, dropout).
        val_every: validate every this many steps.
        ckpt_every: write a resumable checkpoint every this many steps.
        log_every: write a CSV row (and check the loss is finite) every this many steps.
        max_minutes: stop cleanly (final validation + checkpoint) after this many
            minutes of wall time (0: no limit).
    """

    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.96)
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    max_steps: int = 5000
    grad_accum: int = 1
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    schedule: str = "cosine"
    min_mask_ratio: float = 0.0
    hole_fraction: float = 0.0
    hole_variants: int = 4
    token_views: tuple[str, ...] = ("id", "flip")
    recon_loss: str = "l1+mse"
    gan_weight: float = 0.0
    gan_start: int = 0
    hflip: bool = True
    bf16: bool = False
    seed: int = 0
    val_every: int = 250
    ckpt_every: int = 250
    log_every: int = 10
    max_minutes: float = 0.0
