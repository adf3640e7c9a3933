"""What every training run is given, whichever stage it trains: folders, device, settings, export.

:class:`RunConfig` holds the fields both :class:`~maskgit_lib.training.vqgan.VQGANRun`
and :class:`~maskgit_lib.training.transformer.TransformerRun` share (the options
``maskgit train-vqgan`` and ``maskgit train-transformer`` have in common);
:func:`preset_train_config` builds a :class:`~maskgit_lib.config.TrainConfig` from
a stage's preset table; :func:`export_weights` copies the final weights out of
the run folder (``--export``), optionally at half precision.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import read_weights, save_weights
from ..config import TrainConfig
from ..errors import ConfigError
from ..outputs import atomic_write
from ..runtime import resolve_device
from .loop import FINAL_NAME, Trainer, TrainSession

WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def preset_train_config(presets: dict[str, dict[str, Any]], preset: str, device: str = "auto") -> TrainConfig:
    """TrainConfig defaults <- the preset's values; bf16 on for CUDA, off for a CPU.

    Args:
        presets: a stage's table, e.g. :data:`maskgit_lib.training.vqgan.VQGAN_TRAIN_PRESETS`.
        preset: ``"tiny"``, ``"cpu"`` or ``"lab"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``... (decides the bf16 default).

    Raises:
        ConfigError: an unknown preset, or CUDA asked for but absent.
    """
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    bf16 = resolve_device(device).type == "cuda"
    return dataclasses.replace(TrainConfig(), **{"bf16": bf16, **presets[preset]})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The settings of a training run that both stages share.

    Attributes:
        data_dir: dataset folder with ``train/`` and ``val/``, or any folder of
            images (None: :func:`maskgit_lib.paths.default_dataset_dir`).
        out_dir: run folder: ``state.pt``, ``final.safetensors``, ``log.csv``,
            ``curves.png``, ``summary.json``.
        train: optimisation settings (:class:`~maskgit_lib.config.TrainConfig`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (under torchrun: ``cuda:LOCAL_RANK``).
        export: also copy the final weights here (None: don't).
        weights_dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``: round the
            final weights to it (validated after rounding); the export stores them at that size.
        stop_at_step: stop after this step although the LR schedule follows
            ``train.max_steps`` (train in several sessions; a resume continues).
        resume: continue from ``out_dir/state.pt`` if it exists.
        progress: show a progress bar.
    """

    data_dir: Path | None = None
    out_dir: Path = Path("runs")
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    device: str = "auto"
    export: Path | None = None
    weights_dtype: str = "float32"
    stop_at_step: int | None = None
    resume: bool = True
    progress: bool = True

    def session(self, start_time: float | None = None) -> TrainSession:
        """The :class:`~maskgit_lib.training.loop.TrainSession` of this run."""
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ConfigError(f"weights_dtype {self.weights_dtype!r} is not one of {sorted(WEIGHT_DTYPES)}")
        return TrainSession(run_dir=Path(self.out_dir), resume=self.resume, stop_at_step=self.stop_at_step,
                            weights_dtype=WEIGHT_DTYPES[self.weights_dtype], show_progress=self.progress,
                            start_time=start_time)


def export_weights(src: Path, dst: Path, dtype: torch.dtype | None = None) -> Path:
    """Atomically copy a weights file to ``dst`` (``--export``), storing floats as ``dtype``.

    With ``dtype`` float16/bfloat16 the copy is half the size; it holds the same
    values as ``src`` when the trainer rounded them (``weights_dtype``).
    """
    if dtype in (None, torch.float32):
        return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
    tensors, meta = read_weights(src)
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return save_weights(dst, cast, model_type=meta["model_type"], config=meta["config"], metrics=meta["metrics"])


def run_and_export(run: RunConfig, trainer: Trainer) -> dict[str, Any]:
    """Run ``trainer``; rank 0 then copies the final weights to ``run.export`` (if set). Returns the summary."""
    summary = trainer.run()
    if trainer.ctx.is_main and run.export is not None:
        export_weights(Path(run.out_dir) / FINAL_NAME, run.export, WEIGHT_DTYPES[run.weights_dtype])
    return summary
