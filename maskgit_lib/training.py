"""Shared trainer machinery: device, seeds, LR schedule, logs, resumable loop, torchrun.

Both trainers (:mod:`~maskgit_lib.train_vqgan`, :mod:`~maskgit_lib.train_transformer`)
hand a ``train_step`` and a ``validate`` function to :class:`Trainer`, which owns
everything else: the data order, the optimizer, the LR schedule, bf16 autocast,
gradient accumulation and clipping, the CSV log and curve plot, the NaN guard,
the time budget, resumable checkpoints, and DistributedDataParallel.

A run folder holds ``state.pt`` (resumable training state, weights-only
``torch.save``), ``final.safetensors`` (the model), ``log.csv``, ``curves.png``
and ``summary.json``. Every file is written atomically.

Determinism: all randomness of optimizer step ``s`` (data order, flips, MVTM
masks, dropout, codebook restarts) is drawn from generators seeded by
``derive_seed(seed, ..., s, rank)``, and the data order is a pure function of
``(seed, epoch)``, so nothing depends on the history of the process. On a CPU
the same seed gives bitwise the same weights, and a run killed at any moment
and resumed from its last checkpoint ends with bitwise the same weights as an
uninterrupted run (tests/test_train_vqgan.py checks both), as long as the LR
schedule follows steps (``max_steps > 0``): a decay that follows the time budget
depends on the wall clock. On a GPU, cuDNN autotuning and atomics make runs
close but not bitwise equal.

Under ``torchrun --nproc_per_node=N`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set)
:func:`setup_distributed` starts NCCL (CUDA) or gloo (CPU); each rank takes
the positions ``rank, rank+N, ...`` of the shared global batch (the same
semantics as ``DistributedSampler``); only rank 0 logs, shows progress and
writes files, with barriers around checkpoint writes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from . import __version__
from .argtypes import seed_int
from .checkpoint import atomic_write
from .config import TrainConfig, config_to_dict
from .errors import ConfigError, MaskgitError
from .outputs import exclusive_lock
from .runtime import (DistContext, autocast, barrier, broadcast_floats, cleanup_distributed,  # noqa: F401
                      configure_backends, derive_seed, exact_fp32, make_generator, process_start_time,
                      progress_bar, resolve_device, setup_distributed)

log = logging.getLogger(__name__)

STATE_NAME = "state.pt"
FINAL_NAME = "final.safetensors"
CSV_NAME = "log.csv"
PLOT_NAME = "curves.png"
SUMMARY_NAME = "summary.json"
PLOT_INTERVAL_S = 60.0  # redraw curves.png at a validation at most this often (and always at the end)
#: TrainConfig fields that may differ between a run and its resume.
RESUMABLE_FIELDS = frozenset({"max_steps", "max_minutes", "val_every", "ckpt_every", "log_every", "num_workers"})


class NonFiniteLossError(MaskgitError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine.

    The cosine progress is ``max(step fraction, time_fraction)``, so a run that
    ends on ``max_steps`` or on ``max_minutes`` (whichever first) ends near
    ``min_lr_ratio * lr``; with ``max_steps == 0`` only the time fraction counts.

    Args:
        step: optimizer steps already taken.
        cfg: ``lr``, ``warmup_steps``, ``max_steps``, ``min_lr_ratio``.
        time_fraction: elapsed fraction of the time budget, in [0, 1].
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
    """AdamW over :func:`param_groups` (fused kernels on CUDA)."""
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


def images_to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> float32 (B, 3, H, W) in [-1, 1]."""
    return images_u8.float() / 127.5 - 1.0


def random_hflip(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2 (draws on ``generator``'s device).

    Args:
        images: (B, C, H, W) any dtype.
        generator: RNG; its device must be ``images``' device.
    """
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5  # (B,)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, NumPy, Python) as weights-only-loadable objects."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only if the device count matches)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def config_mismatches(stored: dict[str, Any], wanted: dict[str, Any], ignore: frozenset = frozenset()) -> list[str]:
    """Readable ``key: stored X vs requested Y`` lines for differing keys."""
    keys = sorted((set(stored) | set(wanted)) - set(ignore))
    return [f"{k}: checkpoint {stored.get(k, '<absent>')!r} vs requested {wanted.get(k, '<absent>')!r}"
            for k in keys if stored.get(k, "<absent>") != wanted.get(k, "<absent>")]


class CsvLogger:
    """Append-only CSV of training rows, safe across resumes.

    On a resume, rows logged after the checkpoint (``step > resume_step``) are
    dropped, so the file reads as if the run had never been interrupted; a
    half-written last line (a crash mid-write) is dropped too. A file with
    another header is moved aside to ``log.<n>.csv``. Disabled loggers (ranks
    other than 0) do nothing.

    Args:
        path: the CSV file.
        fieldnames: columns; must include ``step``.
        resume_step: keep existing rows up to this step; None starts a new file.
        enabled: write at all.
    """

    def __init__(self, path: Path, fieldnames: Sequence[str], *, resume_step: int | None, enabled: bool = True) -> None:
        self.path, self.fieldnames, self.enabled = Path(path), list(fieldnames), enabled
        if not enabled:
            return
        kept: list[dict[str, str]] = []
        if resume_step is not None and self.path.exists():
            header, rows = read_csv(self.path)
            if header == self.fieldnames:
                kept = [r for r in rows if int(float(r["step"])) <= resume_step]
            else:
                n = 1
                while self.path.with_name(f"{self.path.stem}.{n}.csv").exists():
                    n += 1
                self.path.rename(self.path.with_name(f"{self.path.stem}.{n}.csv"))
        self._filled = {(int(float(r["step"])), k) for r in kept for k, v in r.items() if v not in (None, "")}
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write(self.path, lambda tmp: tmp.write_text(text.getvalue()))

    def has_value(self, step: int, column: str) -> bool:
        """Whether a row of ``step`` with a value in ``column`` is in the file (kept or logged)."""
        return self.enabled and (step, column) in self._filled

    def log(self, row: dict[str, Any]) -> None:
        """Append one row (missing columns stay empty; floats with 6 significant digits)."""
        if not self.enabled:
            return
        unknown = set(row) - set(self.fieldnames)
        if unknown:
            raise ValueError(f"CSV row has columns {sorted(unknown)} not in {self.fieldnames}")
        out = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.fieldnames, lineterminator="\n").writerow(out)
        self._filled.update((int(row["step"]), k) for k, v in row.items() if v is not None)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and well-formed rows of a CSV log (rows with a bad ``step`` are skipped)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                continue
            try:
                int(float(row["step"]))
            except (KeyError, ValueError):
                continue
            rows.append(row)
    return header, rows


def plot_curves(csv_path: Path, png_path: Path, title: str = "") -> Path | None:
    """Plot every numeric CSV column against ``step`` into one PNG (matplotlib, no pyplot).

    Returns:
        ``png_path``, or None if the log has no rows yet.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    header, rows = read_csv(Path(csv_path))
    series = {}
    for key in header:
        if key in ("step", "epoch", "elapsed_s"):
            continue
        pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if pts:
            series[key] = pts
    if not series:
        return None
    cols = min(3, len(series))
    nrows = math.ceil(len(series) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * nrows))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.12 / nrows, top=1 - 0.12 / nrows, hspace=0.55, wspace=0.3)
    for i, (key, pts) in enumerate(series.items()):
        ax = fig.add_subplot(nrows, cols, i + 1)
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if key.startswith("val_") and len(xs) < 30 else None, ms=3)
        positive = all(y > 0 for y in ys if math.isfinite(y))
        if positive and key in ("loss", "lr") and max(ys) > 20 * min(ys):
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def library_version() -> str:
    """The ``maskgit_lib`` version stored in training states."""
    return __version__


def state_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes, bytes): equal iff bitwise equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class Trainer:
    """The resumable, time-boxed, optionally distributed training loop.

    Args:
        kind: ``"vqgan"`` or ``"transformer"`` (stored in and checked against the state).
        run_dir: folder for ``state.pt``, ``final.safetensors``, ``log.csv``,
            ``curves.png``, ``summary.json``.
        cfg: optimisation settings.
        ctx: device and rank (:func:`setup_distributed`).
        model: the plain model, already on ``ctx.device`` (wrapped in DDP here).
        model_config: the model config dict (a resume must match it).
        train_step: ``(model, indices, generator, step) -> dict`` with the
            scalar ``"loss"`` to minimise plus any detached scalars to log;
            ``model`` may be DDP-wrapped, ``indices`` int64 (B,) on the device
            index this rank's micro-batch in the training set, ``generator``
            lives on the device, ``step`` is the 0-based optimizer step. Runs
            under autocast when ``cfg.bf16``.
        validate: ``() -> dict[str, float]``; called on rank 0 in eval mode,
            under ``torch.no_grad()`` with TF32 off.
        save_final: ``(path, metrics) -> None`` writes the final weights (rank 0).
        num_train: training set size (for the data order).
        loss_names: the keys ``train_step`` returns (CSV columns).
        val_names: the keys ``validate`` returns (CSV columns, prefixed ``val_`` by the caller).
        extra_config: more settings a resume must match (e.g. the tokenizer's hash).
        stop_at_step: stop (cleanly) after this step even if ``max_steps`` is
            larger; the LR schedule still follows ``max_steps``.
        resume: continue from ``run_dir/state.pt`` if it exists.
        start_time: ``time.monotonic()`` at the start of the command (the time
            budget counts setup too); default now.
        show_progress: tqdm bar on rank 0.
        extras: more objects with ``state_dict``/``load_state_dict`` saved in
            and restored from the training state (e.g. a discriminator and its
            optimizer).
        after_step: ``(step) -> dict`` of detached scalars, called after each
            optimizer step (e.g. a discriminator update).
        weights_dtype: ``torch.float16``/``torch.bfloat16`` to round the final
            weights to that precision (after the final ``state.pt`` is written,
            before the final validation), so ``final.safetensors``, its recorded
            metrics and a half-size :func:`export_weights` copy all agree; None
            or float32 keeps full precision.
    """

    def __init__(self, *, kind: str, run_dir: Path, cfg: TrainConfig, ctx: DistContext, model: nn.Module,
                 model_config: dict[str, Any], train_step, validate, save_final, num_train: int,
                 loss_names: Sequence[str], val_names: Sequence[str], extra_config: dict[str, Any] | None = None,
                 stop_at_step: int | None = None, resume: bool = True, start_time: float | None = None,
                 show_progress: bool = True, extras: dict[str, Any] | None = None, after_step=None,
                 weights_dtype: torch.dtype | None = None) -> None:
        import time

        check_train_config(cfg, ctx.world_size)
        if stop_at_step is not None and stop_at_step < 1:
            raise ConfigError(f"--stop-at-step must be >= 1, got {stop_at_step}")
        if Path(run_dir).exists() and not Path(run_dir).is_dir():
            raise ConfigError(f"--out {run_dir} is a file; expected a run folder (created if missing)")
        self.kind, self.run_dir, self.cfg, self.ctx, self.model = kind, Path(run_dir), cfg, ctx, model
        self.model_config, self.extra_config = model_config, dict(extra_config or {})
        self.train_step, self.validate, self.save_final = train_step, validate, save_final
        self.num_train, self.stop_at_step, self.resume = num_train, stop_at_step, resume
        self.start_time = time.monotonic() if start_time is None else start_time
        self.show_progress = show_progress
        self.extras, self.after_step = dict(extras or {}), after_step
        self.weights_dtype = weights_dtype
        self.loss_names = list(loss_names) + (["grad_norm"] if cfg.grad_clip > 0 else [])
        self.val_names = list(val_names)
        self.optimizer = make_optimizer(model, cfg, ctx.device)
        self.sampler = EpochSampler(num_train, cfg.batch_size, cfg.seed, ctx.device)
        self.prior_elapsed = 0.0
        self._last_val_s = self._last_ckpt_s = 0.0
        self._last_plot = time.monotonic()

    # ----------------------------------------------------------------- state
    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_NAME

    def elapsed(self) -> float:
        """Seconds of this run so far, earlier sessions of a resumed run included."""
        import time

        return self.prior_elapsed + time.monotonic() - self.start_time

    def _state(self, step: int) -> dict[str, Any]:
        return {
            "format": 1, "kind": self.kind, "library_version": __version__, "step": step,
            "epoch": self.sampler.epoch_of(step), "elapsed_s": self.elapsed(), "seed": self.cfg.seed,
            "data_order": {"seed": self.cfg.seed, "num_items": self.num_train, "global_batch": self.cfg.batch_size},
            "train_config": config_to_dict(self.cfg), "model_config": self.model_config,
            "extra_config": self.extra_config, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
            "extras": {name: obj.state_dict() for name, obj in self.extras.items()},
        }

    def save_state(self, step: int) -> None:
        """Rank 0 atomically writes ``state.pt``; every rank waits for it."""
        import time

        from .checkpoint import save_training_state

        t0 = time.monotonic()
        if self.ctx.is_main:
            save_training_state(self.state_path, self._state(step))
        barrier(self.ctx)
        self._last_ckpt_s = time.monotonic() - t0

    def _load_state(self) -> int:
        from .checkpoint import load_training_state

        state = load_training_state(self.state_path)
        diffs = []
        if state.get("kind") != self.kind:
            diffs.append(f"model kind: checkpoint {state.get('kind')!r} vs requested {self.kind!r}")
        diffs += config_mismatches(state.get("model_config", {}), self.model_config)
        diffs += config_mismatches(state.get("train_config", {}), config_to_dict(self.cfg), RESUMABLE_FIELDS)
        diffs += config_mismatches(state.get("extra_config", {}), self.extra_config)
        if diffs:
            raise ConfigError(
                f"refusing to resume from {self.state_path}: it was written with other settings "
                f"({'; '.join(diffs)}). Run with the same settings, pass --no-resume to start over "
                f"(overwrites the state and log in {self.run_dir}), or choose another --out folder."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, obj in self.extras.items():
            obj.load_state_dict(state["extras"][name])
        set_rng_state(state["rng"])
        self.prior_elapsed = float(state.get("elapsed_s", 0.0))
        return int(state["step"])

    # ------------------------------------------------------------------ loop
    def _wrapped(self) -> nn.Module:
        if not self.ctx.distributed:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.ctx.local_rank] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    def _one_step(self, fwd: nn.Module, step: int) -> dict[str, torch.Tensor]:
        cfg, ctx = self.cfg, self.ctx
        indices = self.sampler.indices(step, ctx.rank, ctx.world_size)  # (G / W,)
        micro = indices.chunk(cfg.grad_accum) if cfg.grad_accum > 1 else (indices,)
        torch.manual_seed(derive_seed(cfg.seed, "global", step, ctx.rank))  # dropout etc.
        totals: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro):
            gen = make_generator(derive_seed(cfg.seed, "batch", step, i, ctx.rank), ctx.device)
            last = i == len(micro) - 1
            with (fwd.no_sync() if ctx.distributed and not last else contextlib.nullcontext()):
                with autocast(ctx.device, cfg.bf16):
                    out = self.train_step(fwd, batch, gen, step)
                (out["loss"] / len(micro)).backward()
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float() / len(micro)
        if cfg.grad_clip > 0:
            totals["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.after_step is not None:
            totals.update(self.after_step(step))
        return totals

    def _flush(self, pending: list[dict[str, torch.Tensor]], step: int) -> dict[str, float]:
        """Mean of the pending steps' logs; raises if any of them was non-finite."""
        keys = [k for k in self.loss_names if all(k in p for p in pending)]
        stacked = torch.stack([torch.stack([p[k].float() for k in keys]) for p in pending])  # (n, keys)
        if self.ctx.distributed:
            import torch.distributed as dist

            dist.all_reduce(stacked)
            stacked /= self.ctx.world_size
        values = stacked.cpu()
        bad = ~torch.isfinite(values).all(dim=1)  # (n,)
        if bool(bad.any()):
            first = step - len(pending) + int(bad.nonzero()[0]) + 1
            what = {k: float(v) for k, v in zip(keys, values[int(bad.nonzero()[0])])}
            kept = (f"the last good checkpoint {self.state_path} is kept untouched"
                    if self.state_path.exists() else "no checkpoint was written")
            raise NonFiniteLossError(
                f"{self.kind} training stopped: the loss became non-finite at step {first} ({what}); "
                f"{kept}. Lower --lr, keep --grad-clip on, or try without --bf16."
            )
        return {k: float(v) for k, v in zip(keys, values.mean(dim=0))}

    def _time_status(self) -> tuple[float, bool]:
        """(elapsed fraction of the time budget, stop now?) as decided on rank 0."""
        if self.cfg.max_minutes <= 0:
            return 0.0, False
        limit = self.cfg.max_minutes * 60.0
        elapsed = self.elapsed()
        # the final validation + state + weights + plot must fit too: budget them from the last ones
        usable = max(1e-3, limit - max(0.02 * limit, self._last_val_s + 2.0 * self._last_ckpt_s + 1.0))
        frac, stop = broadcast_floats(self.ctx, [min(1.0, elapsed / usable), float(elapsed >= usable)])
        return frac, bool(stop)

    def _validate(self, step: int, csv_log: CsvLogger, log_row: bool = True) -> dict[str, float]:
        """Validate on rank 0; ``log_row=False`` when the CSV already holds this step's row (a rerun)."""
        import time

        t0 = time.monotonic()
        metrics: dict[str, float] = {}
        if self.ctx.is_main:
            self.model.eval()
            with torch.no_grad(), exact_fp32():
                metrics = {k: v if isinstance(v, int) else float(v) for k, v in self.validate().items()}
            self.model.train()
            if log_row:
                csv_log.log({"step": step, "epoch": step * self.cfg.batch_size / self.num_train,
                             "elapsed_s": self.elapsed(), **{f"val_{k}": v for k, v in metrics.items()}})
            if time.monotonic() - self._last_plot >= PLOT_INTERVAL_S:  # plotting costs ~1 s on a CPU
                plot_curves(csv_log.path, self.run_dir / PLOT_NAME, f"{self.kind} training")
                self._last_plot = time.monotonic()
            log.info("%s step %d: %s", self.kind, step, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        barrier(self.ctx)
        self._last_val_s = time.monotonic() - t0
        return metrics

    def run(self) -> dict[str, Any]:
        """Train until ``max_steps``, ``stop_at_step`` or the time budget; return a summary.

        Rank 0 holds an exclusive lock on the run folder for the whole run (a second
        trainer on the same ``--out`` is refused, naming the first one's pid) and
        writes the final weights (``save_final``), the state, the CSV, the plot and
        ``summary.json``.

        Raises:
            NonFiniteLossError: the loss became NaN/inf (names the step).
            ConfigError: a resume with other settings.
            DataError: another process trains into the same run folder.
        """
        lock = exclusive_lock(self.run_dir, f"train-{self.kind}") if self.ctx.is_main else contextlib.nullcontext()
        with lock:
            return self._run()

    def _run(self) -> dict[str, Any]:
        import time

        cfg, ctx = self.cfg, self.ctx
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.tmp"):  # left by a run killed mid-write
                stale.unlink(missing_ok=True)
        barrier(ctx)
        resumed_from = None
        if self.resume and self.state_path.exists():
            resumed_from = self._load_state()
            log.info("resuming %s from step %d (%s)", self.kind, resumed_from, self.state_path)
        elif self.state_path.exists():
            log.warning("--no-resume: starting over; %s will be overwritten", self.state_path)
        step = resumed_from or 0
        csv_log = CsvLogger(self.run_dir / CSV_NAME,
                            ["step", "epoch", "lr", "elapsed_s", *self.loss_names, "images_per_s",
                             *[f"val_{k}" for k in self.val_names]],
                            resume_step=resumed_from, enabled=ctx.is_main)
        limits = [s for s in (cfg.max_steps, self.stop_at_step) if s]
        end_step = min(limits) if limits else None
        fwd = self._wrapped()
        self.model.train()
        bar = progress_bar(end_step, step, ctx.is_main and self.show_progress, self.kind)
        pending: list[dict[str, torch.Tensor]] = []
        frac, stop_reason = 0.0, "max_steps" if end_step == cfg.max_steps else "stop_at_step"
        session_steps, busy_s, t_mark = 0, 0.0, time.monotonic()
        lr = lr_at(step, cfg)
        try:
            while end_step is None or step < end_step:
                lr = lr_at(step, cfg, frac)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                pending.append(self._one_step(fwd, step))
                step += 1
                session_steps += 1
                if any(step % n == 0 for n in (cfg.log_every, cfg.val_every, cfg.ckpt_every)) or step == end_step:
                    means = self._flush(pending, step)
                    now = time.monotonic()
                    busy_s += now - t_mark
                    rate = len(pending) * cfg.batch_size / max(now - t_mark, 1e-9)
                    csv_log.log({"step": step, "epoch": step * cfg.batch_size / self.num_train, "lr": lr,
                                 "elapsed_s": self.elapsed(), "images_per_s": rate, **means})
                    bar.set_postfix(loss=f"{means['loss']:.4g}", lr=f"{lr:.2e}", refresh=False)
                    pending, t_mark = [], time.monotonic()
                bar.update(1)
                if ctx.world_size == 1 or step % cfg.log_every == 0:
                    frac, stop = self._time_status()
                    if stop:
                        stop_reason = "max_minutes"
                        break
                if end_step is not None and step >= end_step:
                    break
                if step % cfg.val_every == 0:
                    self._validate(step, csv_log)
                if step % cfg.ckpt_every == 0:
                    self.save_state(step)
                if step % cfg.val_every == 0 or step % cfg.ckpt_every == 0:
                    t_mark = time.monotonic()  # pending is empty here: these are flush steps
            if pending:
                means = self._flush(pending, step)
                busy_s += time.monotonic() - t_mark
                csv_log.log({"step": step, "epoch": step * cfg.batch_size / self.num_train, "lr": lr,
                             "elapsed_s": self.elapsed(), **means})
        finally:
            bar.close()
        self.save_state(step)  # full precision: a later resume continues exactly
        if self.weights_dtype not in (None, torch.float32):
            with torch.no_grad():
                for tensor in self.model.state_dict().values():
                    if tensor.is_floating_point():
                        tensor.copy_(tensor.to(self.weights_dtype))  # round to the shipped precision
        metrics = self._validate(step, csv_log, log_row=not csv_log.has_value(step, f"val_{self.val_names[0]}")
                                 if self.val_names else True)
        summary = {
            "kind": self.kind, "steps": step, "epochs": step * cfg.batch_size / self.num_train,
            "stop_reason": stop_reason, "wall_time_s": self.elapsed(), "resumed_from_step": resumed_from,
            "final_lr": lr, "session_steps": session_steps,
            "step_time_s": busy_s / session_steps if session_steps else None,
            "images_per_s": session_steps * cfg.batch_size / busy_s if busy_s > 0 else None,
            "world_size": ctx.world_size, "device": str(ctx.device), "metrics": metrics,
            "train_config": config_to_dict(cfg), "model_config": self.model_config,
            "state": str(self.state_path), "final": str(self.run_dir / FINAL_NAME),
            "csv": str(csv_log.path), "plot": str(self.run_dir / PLOT_NAME),
        }
        summary["replicas_in_sync"] = self._replicas_in_sync()
        if ctx.is_main:
            self.save_final(self.run_dir / FINAL_NAME, {
                **{f"val_{k}": v for k, v in metrics.items()}, "steps": step,
                "wall_time_s": round(self.elapsed(), 2), "seed": cfg.seed,
                "weights_dtype": str(self.weights_dtype or torch.float32).replace("torch.", ""),
                **self.extra_config})
            plot_curves(csv_log.path, self.run_dir / PLOT_NAME, f"{self.kind} training")
            write_json(self.run_dir / SUMMARY_NAME, summary)
        barrier(ctx)
        return summary

    def _replicas_in_sync(self) -> bool:
        """Under torchrun: do all ranks hold bitwise the same weights (after syncing buffers)?"""
        if not self.ctx.distributed:
            return True
        import torch.distributed as dist

        for buf in self.model.buffers():
            dist.broadcast(buf.data, src=0)
        digests: list[str | None] = [None] * self.ctx.world_size
        dist.all_gather_object(digests, state_digest(self.model))
        if len(set(digests)) != 1:
            log.error("model replicas differ across ranks: %s", digests)
        return len(set(digests)) == 1


def check_train_config(cfg: TrainConfig, world_size: int = 1) -> None:
    """Refuse settings the loop cannot honour, with the flag to change.

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
        from .views import parse_views

        parse_views(",".join(cfg.token_views))
    except ConfigError as exc:
        problems.append(f"--views: {exc}")
    if problems:
        raise ConfigError("invalid training settings: " + "; ".join(problems))


# ---------------------------------------------------------------- data in memory
def resolve_splits(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """Training and validation image files of a dataset folder.

    ``DIR/train`` + ``DIR/val`` (the default dataset and the lab's layout); a
    ``DIR/train`` without ``val`` or a plain folder of images holds out every
    20th file (sorted by name) for validation.

    Raises:
        DataError: missing or empty folders (from :func:`maskgit_lib.data.list_images`).
    """
    from .data import list_images

    data_dir = Path(data_dir)
    if (data_dir / "train").is_dir():
        train = list_images(data_dir / "train")
        if (data_dir / "val").is_dir():
            return train, list_images(data_dir / "val")
    else:
        train = list_images(data_dir)
    if len(train) < 2:
        return train, list(train)
    val = train[::20]
    return [p for i, p in enumerate(train) if i % 20], val


def load_images_uint8(files: Sequence[Path], size: int = 64) -> torch.Tensor:
    """Decode image files once into one uint8 tensor (N, 3, size, size) (threads, in order)."""
    from concurrent.futures import ThreadPoolExecutor

    from .data import load_image, to_uint8

    def one(path: Path) -> torch.Tensor:
        return to_uint8(load_image(path, size))  # (3, size, size)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(one, files))
    return torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)


# ---------------------------------------------------------------------- CLI glue
def add_train_arguments(parser, default_out: Path) -> None:
    """Options shared by ``train-vqgan`` and ``train-transformer`` (None = preset value)."""
    import argparse

    from . import paths

    parser.add_argument("--data", type=Path, default=None,
                        help=f"dataset folder with train/ and val/, or any folder of images "
                             f"(default: {paths.default_dataset_dir()})")
    parser.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "lab"],
                        help="model size and training defaults (default: cpu)")
    parser.add_argument("--out", type=Path, default=default_out,
                        help=f"run folder: state.pt, final.safetensors, log.csv, curves.png, summary.json "
                             f"(default: {default_out})")
    parser.add_argument("--export", type=Path, default=None, help="also copy the final weights here")
    parser.add_argument("--weights-dtype", choices=sorted(WEIGHT_DTYPES), default="float32",
                        help="round the final weights to this precision (validated after rounding); "
                             "--export then stores them at that size (default: float32)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="optimizer steps; 0 = until --max-minutes, with the LR decay following the clock")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop cleanly (final validation, weights, state) within this wall time")
    parser.add_argument("--stop-at-step", type=int, default=None,
                        help="stop after this step although the LR schedule follows --max-steps "
                             "(train in several sessions; resume continues)")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size per optimizer step")
    parser.add_argument("--grad-accum", type=int, default=None, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear LR warmup steps")
    parser.add_argument("--min-lr-ratio", type=float, default=None, help="final LR / peak LR of the cosine decay")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay")
    parser.add_argument("--grad-clip", type=float, default=None, help="max gradient norm (0: off)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 autocast (default: on for CUDA, off for CPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--seed", type=seed_int, default=None, help="random seed (default 0)")
    parser.add_argument("--val-every", type=int, default=None, help="validate every N steps")
    parser.add_argument("--ckpt-every", type=int, default=None, help="write state.pt every N steps")
    parser.add_argument("--log-every", type=int, default=None, help="CSV row + NaN check every N steps")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from OUT/state.pt if it exists (default: on)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar (default: on)")


_ARG_FIELDS = {"max_steps": "max_steps", "max_minutes": "max_minutes", "batch_size": "batch_size",
               "grad_accum": "grad_accum", "lr": "lr", "warmup_steps": "warmup_steps",
               "min_lr_ratio": "min_lr_ratio", "weight_decay": "weight_decay", "grad_clip": "grad_clip",
               "seed": "seed", "val_every": "val_every", "ckpt_every": "ckpt_every", "log_every": "log_every",
               "label_smoothing": "label_smoothing", "schedule": "schedule", "min_mask_ratio": "min_mask_ratio",
               "hole_fraction": "hole_fraction", "hole_variants": "hole_variants", "views": "token_views",
               "recon_loss": "recon_loss", "gan_weight": "gan_weight", "gan_start": "gan_start",
               "hflip": "hflip"}


def train_config_from_args(args: Any, preset: dict[str, Any], device: torch.device) -> TrainConfig:
    """TrainConfig = defaults <- preset values <- flags given on the command line."""
    import dataclasses

    values = dict(preset)
    for arg, field in _ARG_FIELDS.items():
        value = getattr(args, arg, None)
        if value is not None:
            values[field] = value
    bf16 = getattr(args, "bf16", None)
    values["bf16"] = device.type == "cuda" if bf16 is None else bool(bf16)
    if values["bf16"] and device.type == "cpu":
        from .speed import native_bf16

        if not native_bf16(device):
            log.warning("--bf16 on a CPU without native bf16 matmuls (no AVX512-BF16/AMX): autocast is emulated "
                        "and several times slower than fp32 here (maskgit bench measures it); drop --bf16")
    cfg = dataclasses.replace(TrainConfig(), **values)
    check_train_config(cfg)  # fail before loading data; Trainer checks again with the world size
    return cfg


WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_weights(src: Path, dst: Path, dtype: torch.dtype | None = None) -> Path:
    """Atomically copy a weights file to ``dst`` (``--export``), storing floats as ``dtype``.

    With ``dtype`` float16/bfloat16 the copy is half the size; it holds the same
    values as ``src`` when the trainer rounded them (``--weights-dtype``).
    """
    import shutil

    from .checkpoint import read_weights, save_weights

    if dtype in (None, torch.float32):
        return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
    tensors, meta = read_weights(src)
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return save_weights(dst, cast, model_type=meta["model_type"], config=meta["config"], metrics=meta["metrics"])
