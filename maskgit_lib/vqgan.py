"""VQGAN tokenizer (MaskGIT stage 1): 64x64 RGB image <-> 16x16 grid of codebook ids.

Shown in ``notebooks/02_vqgan_tokenizer.ipynb``, sections 3-7 (tokens, reconstructions, codebook use).

Architecture (taming-transformers, Esser et al. 2021; sizes in
:class:`~maskgit_lib.config.VQGANConfig`)::

    images (B,3,64,64) -> conv_in -> [ResBlock x n, downsample] per level
      -> ResBlock, attention, ResBlock -> GroupNorm, SiLU, conv -> pre-quant 1x1
      -> z (B,C,16,16) -> VectorQuantizer -> z_q (B,C,16,16), tokens (B,16,16)
      -> post-quant 1x1 -> conv_in -> ResBlock, attention, ResBlock
      -> [ResBlock x (n+1), nearest upsample + conv] per level
      -> GroupNorm, SiLU, conv_out -> recon (B,3,64,64)

The decoder has no final tanh (as in taming): the reconstruction loss sees the
raw output, and :meth:`VQGAN.decode_tokens` clamps to [-1, 1]. The vector
quantizer (EMA updates, dead-code restarts) lives in :mod:`maskgit_lib.quantizer`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import build_checked, check_tensor_count, read_weights, save_weights
from .config import VQGANConfig, config_from_dict, config_to_dict
from .errors import CheckpointError, ConfigError, DataError
from .quantizer import VectorQuantizer, codebook_usage

__all__ = ["VQGAN", "Encoder", "Decoder", "codebook_usage", "save_vqgan", "load_vqgan"]

# what building a model from a config read from a file may raise (bad types, sizes torch refuses)
_CONFIG_ERRORS = (ConfigError, TypeError, ValueError, OverflowError, RuntimeError, ZeroDivisionError)


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (taming uses 32; small widths use fewer)."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, SiLU, conv3x3) x 2 plus a skip.

    Maps float (B, C_in, H, W) -> (B, C_out, H, W); the skip is a 1x1 conv when
    C_in != C_out.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, C_out, H, W)
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual: float (B, C, H, W) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, channels, height * width)  # (B, 3, C, HW)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v, (B, HW, C)
        out = out.transpose(-1, -2).reshape(batch, channels, height, width)  # (B, C, H, W)
        return x + self.proj(out)


def _middle(channels: int, attention: bool) -> nn.Sequential:
    """ResBlock, optional attention, ResBlock at the lowest resolution."""
    layers: list[nn.Module] = [ResBlock(channels, channels)]
    if attention:
        layers.append(AttnBlock(channels))
    layers.append(ResBlock(channels, channels))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """images float (B, 3, S, S) -> z float (B, code_dim, S/f, S/f), before the pre-quant conv."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        widths = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        width = widths[0]
        for level, out in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(width, out))
                width = out
            if level in cfg.downsample_levels:
                layers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))  # (B, C, H/2, W/2)
        layers += [_middle(width, cfg.attn_at_bottom), _norm(width), nn.SiLU(),
                   nn.Conv2d(width, cfg.code_dim, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


class Decoder(nn.Module):
    """z_q float (B, code_dim, S/f, S/f), after the post-quant conv -> images float (B, 3, S, S)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        widths = cfg.channels
        width = widths[-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, width, 3, padding=1),
                                   _middle(width, cfg.attn_at_bottom)]
        for level in reversed(range(len(widths))):
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResBlock(width, widths[level]))
                width = widths[level]
            if level - 1 in cfg.downsample_levels:
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"),  # (B, C, 2H, 2W)
                           nn.Conv2d(width, width, 3, padding=1)]
        layers += [_norm(width), nn.SiLU()]
        self.layers = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.layers(z_q))


class VQGAN(nn.Module):
    """The stage-1 tokenizer: encoder, vector quantizer and decoder.

    Args:
        cfg: architecture and quantizer settings (see ``VQGANConfig.preset``).

    Images are float (B, 3, S, S) in [-1, 1] with S = ``cfg.image_size``;
    token grids are int64 (B, h, w) with h = w = ``cfg.grid_size`` and ids in
    ``[0, K)``, K = ``cfg.codebook_size``.
    """

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.code_dim, cfg.code_dim, 1)
        self.quantizer = VectorQuantizer(
            cfg.codebook_size, cfg.code_dim, beta=cfg.beta, use_ema=cfg.use_ema,
            ema_decay=cfg.ema_decay, dead_code_threshold=cfg.dead_code_threshold,
        )
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.code_dim, 1)
        self.decoder = Decoder(cfg)

    @property
    def codebook_size(self) -> int:
        """K, the number of codebook ids (the transformer's mask token id)."""
        return self.cfg.codebook_size

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the decoder's last conv, for :func:`~maskgit_lib.discriminator.adaptive_gan_weight`."""
        return self.decoder.conv_out.weight

    def _check_images(self, images: Any) -> None:
        size = self.cfg.image_size
        if not isinstance(images, torch.Tensor):
            raise DataError(f"images must be a torch.Tensor of shape (B, 3, {size}, {size}), got {type(images).__name__}")
        if not images.is_floating_point():
            raise DataError(
                f"images must be a float tensor in [-1, 1], got dtype {images.dtype} "
                "(convert uint8 pixels with images.float() / 127.5 - 1)"
            )
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != size or images.shape[3] != size:
            raise DataError(
                f"images must have shape (B, 3, {size}, {size}) for this VQGAN "
                f"(image_size={size}), got {tuple(images.shape)}"
            )

    def _z(self, images: torch.Tensor) -> torch.Tensor:
        """images float (B, 3, S, S) -> pre-quantization features (B, C, h, w)."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Encode, quantize and decode (the training step's forward pass).

        In training mode the quantizer also updates its EMA statistics and
        restarts dead codes (drawing from ``generator``, else the global RNG).

        Args:
            images: float (B, 3, S, S) in [-1, 1].
            generator: optional RNG for the codebook init and restarts.

        Returns:
            ``(recon, vq_loss, info)``: ``recon`` (B, 3, S, S) float, not
            clamped; ``vq_loss`` float32 scalar (``beta * commitment`` with EMA
            updates, plus the codebook loss without); ``info`` holds
            ``tokens`` int64 (B, h, w) and detached float32 scalars
            ``perplexity``, ``usage`` (fraction of the K codes used in this
            batch) and ``commitment`` (unweighted ``||z - sg(e)||^2``).
        """
        z = self._z(images)  # (B, C, h, w)
        z_q, vq_loss, tokens, stats = self.quantizer(z, generator=generator)
        recon = self.decode(z_q)  # (B, 3, S, S)
        return recon, vq_loss, {"tokens": tokens, **stats}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Quantized latents (never updates the codebook).

        Args:
            images: float (B, 3, S, S) in [-1, 1].

        Returns:
            z_q float32 (B, C, h, w), C = ``cfg.code_dim``, with the
            straight-through gradient to the encoder.
        """
        z_q, _, _, _ = self.quantizer(self._z(images), update=False)
        return z_q

    @torch.no_grad()
    def encode_to_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Token grid of each image (no gradient; never updates the codebook).

        Args:
            images: float (B, 3, S, S) in [-1, 1].

        Returns:
            int64 (B, h, w) ids in ``[0, K)``.
        """
        z = self._z(images).float()  # (B, C, h, w)
        batch, channels, height, width = z.shape
        codes = self.quantizer.lookup(z.permute(0, 2, 3, 1).reshape(-1, channels))  # (B*h*w,)
        return codes.reshape(batch, height, width)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Decoder on quantized latents: float (B, C, h, w) -> float (B, 3, S, S), not clamped."""
        return self.decoder(self.post_quant_conv(z_q))

    def _check_tokens(self, tokens: Any) -> torch.Tensor:
        grid, k = self.cfg.grid_size, self.cfg.codebook_size
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.is_complex() \
                or tokens.dtype == torch.bool:
            raise DataError(f"tokens must be an integer tensor (int64), got {getattr(tokens, 'dtype', type(tokens))}")
        if tokens.ndim == 2 and tokens.shape[1] == grid * grid:
            tokens = tokens.reshape(tokens.shape[0], grid, grid)
        if tokens.ndim != 3 or tokens.shape[1:] != (grid, grid):
            raise DataError(
                f"tokens must have shape (B, {grid}, {grid}) or (B, {grid * grid}), got {tuple(tokens.shape)}"
            )
        if tokens.numel():
            low, high = int(tokens.min()), int(tokens.max())
            if high == k:
                raise DataError(
                    f"tokens contain the mask token id {k}; fill every masked position before decoding"
                )
            if low < 0 or high >= k:
                raise DataError(f"token ids must be in [0, {k}) for this codebook, got values in [{low}, {high}]")
        return tokens.long().to(self.quantizer.codebook.device)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Images from token ids (no gradient).

        Args:
            tokens: int64 (B, h, w) or (B, L) with L = h*w, ids in ``[0, K)``.

        Returns:
            float32 (B, 3, S, S) images clamped to [-1, 1].
        """
        tokens = self._check_tokens(tokens)  # (B, h, w)
        z_q = self.quantizer.embed(tokens).permute(0, 3, 1, 2)  # (B, C, h, w)
        return self.decode(z_q).float().clamp(-1.0, 1.0)


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_vqgan(model: nn.Module, path: str | os.PathLike, metrics: dict[str, Any] | None = None) -> Path:
    """Atomically write a VQGAN's weights, EMA buffers and config as safetensors.

    Args:
        model: a :class:`VQGAN` (or a DDP / ``torch.compile`` wrapper of one).
        path: destination ``*.safetensors`` file.
        metrics: optional JSON-friendly numbers stored with the weights.

    Returns:
        The destination path.
    """
    model = _unwrap(model)
    if not isinstance(model, VQGAN):
        raise TypeError(f"save_vqgan expects a VQGAN, got {type(model).__name__}")
    return save_weights(path, model.state_dict(), model_type="vqgan",
                        config=config_to_dict(model.cfg), metrics=metrics)


def load_vqgan(
    path: str | os.PathLike, device: str | torch.device = "cpu", expected_config: VQGANConfig | None = None
) -> VQGAN:
    """Rebuild a VQGAN from a checkpoint written by :func:`save_vqgan`, in eval mode.

    Args:
        path: a ``*.safetensors`` file.
        device: where to put the model.
        expected_config: if given, the stored config must equal it.

    Raises:
        CheckpointError: missing, empty, truncated or pickle file; another
            model type; metadata that is not JSON; NaN/inf weights; a config
            this library cannot build; a config other than ``expected_config``;
            weights that do not fit the config (checked on the meta device
            before the model is built, so lying metadata allocates nothing).
    """
    state_dict, meta = read_weights(path, expected_type="vqgan")
    cannot_build = f"{path} holds a VQGAN config this library version cannot build " \
                   f"(saved by maskgit_lib {meta['library_version']})"
    try:
        cfg = config_from_dict(VQGANConfig, meta["config"])
    except _CONFIG_ERRORS as exc:
        raise CheckpointError(f"{cannot_build}: {exc}") from exc
    if expected_config is not None and cfg != expected_config:
        stored, wanted = config_to_dict(cfg), config_to_dict(expected_config)
        diffs = [f"{k}: checkpoint {stored[k]} vs expected {wanted[k]}" for k in stored if stored[k] != wanted[k]]
        raise CheckpointError(f"{path} was trained with another VQGAN config ({'; '.join(diffs)})")
    try:
        # every ResBlock has >= 8 tensors: encoder levels x n, decoder levels x (n + 1), 2 per middle block
        res_blocks = len(cfg.channels) * (2 * cfg.num_res_blocks + 1) + 4
        what = f"{len(cfg.channels)} levels of num_res_blocks={cfg.num_res_blocks}"
    except _CONFIG_ERRORS as exc:
        raise CheckpointError(f"{cannot_build}: {exc}") from exc
    check_tensor_count(path, state_dict, 8 * res_blocks, what)
    try:
        model = build_checked(lambda: VQGAN(cfg), state_dict, path)
    except CheckpointError:
        raise
    except _CONFIG_ERRORS as exc:
        raise CheckpointError(f"{cannot_build}: {exc}") from exc
    return model.to(device).eval()
