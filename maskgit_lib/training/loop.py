"""The training loop both stages share: resumable, time-boxed, optionally distributed.

Each stage (:mod:`~maskgit_lib.training.vqgan`, :mod:`~maskgit_lib.training.transformer`)
describes what it trains in a :class:`TrainTask` (the model, a ``train_step`` and a
``validate`` function) and hands it to :class:`Trainer`, which owns everything else:
the data order, the optimizer, the LR schedule, bf16 autocast, gradient
accumulation and clipping, the CSV log and curve plot, the NaN guard, the time
budget, resumable checkpoints, and DistributedDataParallel. A :class:`TrainSession`
says where the run lives and how this session of it runs.

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
:func:`maskgit_lib.runtime.setup_distributed` starts NCCL (CUDA) or gloo (CPU); each
rank takes the positions ``rank, rank+N, ...`` of the shared global batch (the
same semantics as ``DistributedSampler``); only rank 0 logs, shows progress and
writes files, with barriers around checkpoint writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..checkpoint import load_training_state, save_training_state
from ..config import TrainConfig, config_to_dict
from ..errors import ConfigError, MaskgitError
from ..outputs import exclusive_lock, write_json
from ..runtime import (DistContext, autocast, barrier, broadcast_floats, derive_seed, exact_fp32, make_generator,
                       progress_bar)
from .logs import CsvLogger, plot_curves
from .optim import EpochSampler, check_train_config, lr_at, make_optimizer
from .state import RESUMABLE_FIELDS, RETIRED_FIELDS, config_mismatches, rng_state, set_rng_state, state_digest

log = logging.getLogger(__name__)

STATE_NAME = "state.pt"
FINAL_NAME = "final.safetensors"
CSV_NAME = "log.csv"
PLOT_NAME = "curves.png"
SUMMARY_NAME = "summary.json"
PLOT_INTERVAL_S = 60.0  # redraw curves.png at a validation at most this often (and always at the end)


class NonFiniteLossError(MaskgitError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainTask:
    """What one stage trains: the model, its objective and its validation.

    Attributes:
        kind: ``"vqgan"`` or ``"transformer"`` (stored in and checked against the state).
        model: the plain model, already on the device (wrapped in DDP by the loop).
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
        num_train: training set size N (for the data order).
        loss_names: the keys ``train_step`` returns (CSV columns).
        val_names: the keys ``validate`` returns (CSV columns, prefixed ``val_``).
        extra_config: more settings a resume must match (e.g. the tokenizer's hash);
            also recorded in the final weights' metrics.
        extras: more objects with ``state_dict``/``load_state_dict`` saved in
            and restored from the training state (e.g. a discriminator and its optimizer).
        after_step: ``(step) -> dict`` of detached scalars, called after each
            optimizer step (e.g. a discriminator update).
    """

    kind: str
    model: nn.Module
    model_config: dict[str, Any]
    train_step: Callable[..., dict[str, torch.Tensor]]
    validate: Callable[[], dict[str, float]]
    save_final: Callable[[Path, dict[str, Any]], Any]
    num_train: int
    loss_names: Sequence[str]
    val_names: Sequence[str]
    extra_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    after_step: Callable[[int], dict[str, torch.Tensor]] | None = None


@dataclasses.dataclass(frozen=True)
class TrainSession:
    """Where a run lives and how this session of it runs (none of it must match on a resume).

    Attributes:
        run_dir: folder for ``state.pt``, ``final.safetensors``, ``log.csv``,
            ``curves.png``, ``summary.json``.
        resume: continue from ``run_dir/state.pt`` if it exists.
        stop_at_step: stop (cleanly) after this step even if ``max_steps`` is
            larger; the LR schedule still follows ``max_steps``.
        weights_dtype: ``torch.float16``/``torch.bfloat16`` to round the final
            weights to that precision (after the final ``state.pt`` is written,
            before the final validation), so ``final.safetensors``, its recorded
            metrics and a half-size export all agree; None or float32 keeps full precision.
        show_progress: tqdm bar on rank 0.
        start_time: ``time.monotonic()`` at the start of the command (the time
            budget counts setup too); None: when the Trainer is built.
    """

    run_dir: Path
    resume: bool = True
    stop_at_step: int | None = None
    weights_dtype: torch.dtype | None = None
    show_progress: bool = True
    start_time: float | None = None


class Trainer:
    """The resumable, time-boxed, optionally distributed training loop.

    Args:
        task: what to train (:class:`TrainTask`).
        cfg: optimisation settings.
        ctx: device and rank (:func:`maskgit_lib.runtime.setup_distributed`).
        session: run folder, resume, stop step, final precision, progress (:class:`TrainSession`).
    """

    def __init__(self, task: TrainTask, cfg: TrainConfig, ctx: DistContext, session: TrainSession) -> None:
        check_train_config(cfg, ctx.world_size)
        if session.stop_at_step is not None and session.stop_at_step < 1:
            raise ConfigError(f"--stop-at-step must be >= 1, got {session.stop_at_step}")
        if Path(session.run_dir).exists() and not Path(session.run_dir).is_dir():
            raise ConfigError(f"--out {session.run_dir} is a file; expected a run folder (created if missing)")
        self.task, self.cfg, self.ctx, self.session = task, cfg, ctx, session
        self.kind, self.model, self.run_dir = task.kind, task.model, Path(session.run_dir)
        self.start_time = time.monotonic() if session.start_time is None else session.start_time
        self.loss_names = list(task.loss_names) + (["grad_norm"] if cfg.grad_clip > 0 else [])
        self.val_names = list(task.val_names)
        self.optimizer = make_optimizer(task.model, cfg, ctx.device)
        self.sampler = EpochSampler(task.num_train, cfg.batch_size, cfg.seed, ctx.device)
        self.prior_elapsed = 0.0
        self._last_val_s = self._last_ckpt_s = 0.0
        self._last_plot = time.monotonic()

    # ----------------------------------------------------------------- state
    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_NAME

    def elapsed(self) -> float:
        """Seconds of this run so far, earlier sessions of a resumed run included."""
        return self.prior_elapsed + time.monotonic() - self.start_time

    def _state(self, step: int) -> dict[str, Any]:
        task = self.task
        return {
            "format": 1, "kind": self.kind, "library_version": __version__, "step": step,
            "epoch": self.sampler.epoch_of(step), "elapsed_s": self.elapsed(), "seed": self.cfg.seed,
            "data_order": {"seed": self.cfg.seed, "num_items": task.num_train, "global_batch": self.cfg.batch_size},
            "train_config": config_to_dict(self.cfg), "model_config": task.model_config,
            "extra_config": task.extra_config, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
            "extras": {name: obj.state_dict() for name, obj in task.extras.items()},
        }

    def save_state(self, step: int) -> None:
        """Rank 0 atomically writes ``state.pt``; every rank waits for it."""
        t0 = time.monotonic()
        if self.ctx.is_main:
            save_training_state(self.state_path, self._state(step))
        barrier(self.ctx)
        self._last_ckpt_s = time.monotonic() - t0

    def _load_state(self) -> int:
        state = load_training_state(self.state_path)
        task, diffs = self.task, []
        if state.get("kind") != self.kind:
            diffs.append(f"model kind: checkpoint {state.get('kind')!r} vs requested {self.kind!r}")
        diffs += config_mismatches(state.get("model_config", {}), task.model_config)
        diffs += config_mismatches(state.get("train_config", {}), config_to_dict(self.cfg),
                                   RESUMABLE_FIELDS | RETIRED_FIELDS)
        diffs += config_mismatches(state.get("extra_config", {}), task.extra_config)
        if diffs:
            raise ConfigError(
                f"refusing to resume from {self.state_path}: it was written with other settings "
                f"({'; '.join(diffs)}). Run with the same settings, pass --no-resume to start over "
                f"(overwrites the state and log in {self.run_dir}), or choose another --out folder."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, obj in task.extras.items():
            obj.load_state_dict(state["extras"][name])
        set_rng_state(state["rng"])
        self.prior_elapsed = float(state.get("elapsed_s", 0.0))
        return int(state["step"])

    # ------------------------------------------------------------------ loop
    def _wrapped(self) -> nn.Module:
        if not self.ctx.distributed:
            return self.model
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
                    out = self.task.train_step(fwd, batch, gen, step)
                (out["loss"] / len(micro)).backward()
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float() / len(micro)
        if cfg.grad_clip > 0:
            totals["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.task.after_step is not None:
            totals.update(self.task.after_step(step))
        return totals

    def _flush(self, pending: list[dict[str, torch.Tensor]], step: int) -> dict[str, float]:
        """Mean of the pending steps' logs; raises if any of them was non-finite."""
        keys = [k for k in self.loss_names if all(k in p for p in pending)]
        stacked = torch.stack([torch.stack([p[k].float() for k in keys]) for p in pending])  # (n, keys)
        if self.ctx.distributed:
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

    def _epoch(self, step: int) -> float:
        return step * self.cfg.batch_size / self.task.num_train

    def _validate(self, step: int, csv_log: CsvLogger, log_row: bool = True) -> dict[str, float]:
        """Validate on rank 0; ``log_row=False`` when the CSV already holds this step's row (a rerun)."""
        t0 = time.monotonic()
        metrics: dict[str, float] = {}
        if self.ctx.is_main:
            self.model.eval()
            with torch.no_grad(), exact_fp32():
                metrics = {k: v if isinstance(v, int) else float(v) for k, v in self.task.validate().items()}
            self.model.train()
            if log_row:
                csv_log.log({"step": step, "epoch": self._epoch(step), "elapsed_s": self.elapsed(),
                             **{f"val_{k}": v for k, v in metrics.items()}})
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

        Returns:
            The summary (what ``summary.json`` holds): steps, stop reason, times,
            final validation ``metrics`` (rank 0; ``{}`` elsewhere), configs and file paths.

        Raises:
            NonFiniteLossError: the loss became NaN/inf (names the step).
            ConfigError: a resume with other settings.
            DataError: another process trains into the same run folder.
        """
        lock = exclusive_lock(self.run_dir, f"train-{self.kind}") if self.ctx.is_main else contextlib.nullcontext()
        with lock:
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg, ctx, session = self.cfg, self.ctx, self.session
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.tmp"):  # left by a run killed mid-write
                stale.unlink(missing_ok=True)
        barrier(ctx)
        resumed_from = None
        if session.resume and self.state_path.exists():
            resumed_from = self._load_state()
            log.info("resuming %s from step %d (%s)", self.kind, resumed_from, self.state_path)
        elif self.state_path.exists():
            log.warning("--no-resume: starting over; %s will be overwritten", self.state_path)
        step = resumed_from or 0
        csv_log = CsvLogger(self.run_dir / CSV_NAME,
                            ["step", "epoch", "lr", "elapsed_s", *self.loss_names, "images_per_s",
                             *[f"val_{k}" for k in self.val_names]],
                            resume_step=resumed_from, enabled=ctx.is_main)
        limits = [s for s in (cfg.max_steps, session.stop_at_step) if s]
        end_step = min(limits) if limits else None
        fwd = self._wrapped()
        self.model.train()
        bar = progress_bar(end_step, self.kind, ctx.is_main and session.show_progress, initial=step)
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
                    csv_log.log({"step": step, "epoch": self._epoch(step), "lr": lr,
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
                csv_log.log({"step": step, "epoch": self._epoch(step), "lr": lr,
                             "elapsed_s": self.elapsed(), **means})
        finally:
            bar.close()
        self.save_state(step)  # full precision: a later resume continues exactly
        return self._finish(step, csv_log, {
            "kind": self.kind, "steps": step, "epochs": self._epoch(step),
            "stop_reason": stop_reason, "wall_time_s": self.elapsed(), "resumed_from_step": resumed_from,
            "final_lr": lr, "session_steps": session_steps,
            "step_time_s": busy_s / session_steps if session_steps else None,
            "images_per_s": session_steps * cfg.batch_size / busy_s if busy_s > 0 else None,
        })

    def _finish(self, step: int, csv_log: CsvLogger, summary: dict[str, Any]) -> dict[str, Any]:
        """Round the weights, validate, write final weights, plot and summary (rank 0)."""
        cfg, ctx, dtype = self.cfg, self.ctx, self.session.weights_dtype
        if dtype not in (None, torch.float32):
            with torch.no_grad():
                for tensor in self.model.state_dict().values():
                    if tensor.is_floating_point():
                        tensor.copy_(tensor.to(dtype))  # round to the shipped precision
        metrics = self._validate(step, csv_log, log_row=not csv_log.has_value(step, f"val_{self.val_names[0]}")
                                 if self.val_names else True)
        summary["wall_time_s"] = self.elapsed()  # the final validation included
        summary.update({
            "world_size": ctx.world_size, "device": str(ctx.device), "metrics": metrics,
            "train_config": config_to_dict(cfg), "model_config": self.task.model_config,
            "state": str(self.state_path), "final": str(self.run_dir / FINAL_NAME),
            "csv": str(csv_log.path), "plot": str(self.run_dir / PLOT_NAME),
        })
        summary["replicas_in_sync"] = self._replicas_in_sync()
        if ctx.is_main:
            self.task.save_final(self.run_dir / FINAL_NAME, {
                **{f"val_{k}": v for k, v in metrics.items()}, "steps": step,
                "wall_time_s": round(self.elapsed(), 2), "seed": cfg.seed,
                "weights_dtype": str(dtype or torch.float32).replace("torch.", ""),
                **self.task.extra_config})
            plot_curves(csv_log.path, self.run_dir / PLOT_NAME, f"{self.kind} training")
            write_json(self.run_dir / SUMMARY_NAME, summary)
        barrier(ctx)
        return summary

    def _replicas_in_sync(self) -> bool:
        """Under torchrun: do all ranks hold bitwise the same weights (after syncing buffers)?"""
        if not self.ctx.distributed:
            return True
        for buf in self.model.buffers():
            dist.broadcast(buf.data, src=0)
        digests: list[str | None] = [None] * self.ctx.world_size
        dist.all_gather_object(digests, state_digest(self.model))
        if len(set(digests)) != 1:
            log.error("model replicas differ across ranks: %s", digests)
        return len(set(digests)) == 1
