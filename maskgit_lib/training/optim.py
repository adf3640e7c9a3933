"""What one optimizer step is made of: AdamW, the learning-rate schedule and the data order.

- :func:`check_train_config`: refuse a :class:`~maskgit_lib.config.TrainConfig`
  the loop cannot honour, before any data is loaded.
- :func:`lr_at`: linear warmup, then cosine decay (by steps or by the clock).
- :func:`param_groups` / :func:`make_optimizer`: AdamW with weight decay on
  weight matrices only.
- :class:`EpochSampler`: which training items step ``s`` sees, a pure function
  of ``(seed, s)`` (nothing to save for a resume).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError
from ..runtime import derive_seed
from ..views import parse_views


def check_train_config(cfg: TrainConfig, world_size: int = 1) -> None:
    """Refuse settings the loop cannot honour, with the flag to change.

    Args:
        cfg: the settings of the run.
        world_size: processes under torchrun (the batch is split across them).

    Raises:
        ConfigError: naming the offending value.
    """
    problems = []
    if cfg.max_steps < 0 or not cfg.max_minutes >= 0:
        problems.append("--max-steps and --max-minutes must be >= 0")
    if cfg.max_steps == 0 and cfg.max_minutes <= 0:
        problems.append("--max-steps 0 means 'until the time budget', so it needs --max-minutes > 0")
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.batch_size % (world_size * cfg.grad_accum):
        problems.append(f"--batch-size {cfg.batch_size} must be a positive multiple of "
                        f"processes ({world_size}) x --grad-accum ({cfg.grad_accum})")
    if min(cfg.val_every, cfg.ckpt_every, cfg.log_every) < 1:
        problems.append("--val-every, --ckpt-every and the log interval must be >= 1")
    if not 0 < cfg.lr < math.inf or cfg.warmup_steps < 0 or not 0 <= cfg.min_lr_ratio <= 1:
        problems.append("--lr must be > 0, warmup >= 0 and min_lr_ratio in [0, 1]")
    if not (cfg.weight_decay >= 0 and cfg.grad_clip >= 0 and cfg.gan_weight >= 0):
        problems.append("--weight-decay, --grad-clip and --gan-weight must be >= 0")
    if not (0 <= cfg.label_smoothing < 1 and 0 <= cfg.min_mask_ratio <= 1):
        problems.append("--label-smoothing must be in [0, 1) and --min-mask-ratio in [0, 1]")
    if not (0 <= cfg.hole_fraction <= 1 and cfg.hole_variants >= 1):
        problems.append(f"--hole-fraction must be in [0, 1] (got {cfg.hole_fraction}) and "
                        f"--hole-variants >= 1 (got {cfg.hole_variants})")
    try:
        parse_views(",".join(cfg.token_views))
    except ConfigError as exc:
        problems.append(f"--views: {exc}")
    if problems:
        raise ConfigError("invalid training settings: " + "; ".join(problems))


def lr_at(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine.

    The cosine progress is ``max(step fraction, time_fraction)``, so a run that
    ends on ``max_steps`` or on ``max_minutes`` (whichever first) ends near
    ``min_lr_ratio * lr``; with ``max_steps == 0`` only the time fraction counts::

        lr(s) = lr * (s + 1) / warmup                                  s < warmup
        lr(s) = lr * (m + (1 - m) * (1 + cos(pi * p)) / 2)             otherwise, m = min_lr_ratio

    Args:
        step: optimizer steps already taken.
        cfg: ``lr``, ``warmup_steps``, ``max_steps``, ``min_lr_ratio``.
        time_fraction: elapsed fraction of the time budget, in [0, 1].

    Returns:
        The learning rate (a float).
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = 0.0
    if cfg.max_steps > 0:
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, max(progress, time_fraction, 0.0))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices/kernels, none on norms, biases and embeddings.

    A parameter gets no decay if it has fewer than 2 dims (biases, norm scales,
    per-position biases), belongs to an embedding or norm layer, or its name
    contains ``emb`` or ``codebook`` (e.g. a learned positional embedding).

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]``.
    """
    decay, no_decay, seen = [], [], set()
    for mod_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{mod_name}.{name}".lower()
            skip = param.ndim < 2 or isinstance(module, _NO_DECAY_MODULES) or "emb" in full or "codebook" in full
            (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` with ``cfg.lr`` and ``cfg.betas`` (fused kernels on CUDA)."""
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), **kwargs)


class EpochSampler:
    """Stateless data order: an endless stream of per-epoch permutations of ``range(n)``.

    Epoch ``e``'s permutation is drawn from a CPU generator seeded by
    ``(seed, e)``; optimizer step ``s`` takes stream positions
    ``[s*G, (s+1)*G)`` (G = global batch), and rank ``r`` of ``W`` takes every
    W-th of those starting at ``r`` (``DistributedSampler`` semantics). The
    order is thus a pure function of ``(seed, step)``: nothing to save for a resume.

    Args:
        num_items: n, dataset size.
        global_batch: G, items per optimizer step over all ranks and micro-batches.
        seed: data-order seed.
        device: where the returned indices live (the permutation is uploaded once per epoch).
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, device: torch.device) -> None:
        if num_items < 1:
            raise ConfigError("the training set is empty")
        self.n, self.global_batch, self.seed, self.device = num_items, global_batch, seed, device
        self._perms: dict[int, torch.Tensor] = {}

    def epoch_of(self, step: int) -> int:
        """Epoch (0-based) that optimizer step ``step`` starts in."""
        return step * self.global_batch // self.n

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=gen).to(self.device)
        return self._perms[epoch]

    def indices(self, step: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """int64 (G / world_size,) dataset indices of ``rank``'s share of step ``step``."""
        start, stop = step * self.global_batch, (step + 1) * self.global_batch
        parts = []
        while start < stop:
            epoch, offset = divmod(start, self.n)
            take = min(stop - start, self.n - offset)
            parts.append(self._perm(epoch)[offset: offset + take])
            start += take
        batch = parts[0] if len(parts) == 1 else torch.cat(parts)  # (G,)
        return batch[rank::world_size]
