"""Stage 1: training the VQGAN tokenizer (``train_vqgan``, behind ``maskgit train-vqgan``).

Training loss (per batch of images ``x`` in [-1, 1], reconstruction ``x^``)::

    L = L1(x^, x) + MSE(x^, x) + beta * ||z - sg(e)||^2   (+ gan_weight * lambda * hinge_G, optional)

(``TrainConfig.recon_loss`` = ``l1|mse|l1+mse``; the default ``l1+mse`` pairs
L1's sharp flat colours with the MSE that PSNR measures). The codebook itself
follows EMA updates with dead-code restarts (:mod:`maskgit_lib.quantizer`). The
whole dataset is decoded once into a uint8 tensor on the device; batches get
random horizontal flips.

Validation (every ``val_every`` steps and at the end, in fp32): PSNR of the
uint8 reconstructions on [0, 1] images, the fraction of the K codes used over
the validation set and the perplexity of that code histogram
(:func:`reconstruction_metrics`, derived in notebooks/02_vqgan_tokenizer.ipynb,
sections 4 and 5).

From Python::

    run = dataclasses.replace(VQGANRun.default(preset="tiny"), data_dir=Path("data/twemoji64"))
    summary = train_vqgan(run)   # writes run.out_dir/final.safetensors
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .. import paths
from ..config import VQGANConfig, config_to_dict
from ..data import from_uint8, to_uint8
from ..discriminator import PatchDiscriminator, adaptive_gan_weight, d_hinge_loss, g_hinge_loss
from ..errors import ConfigError
from ..quantizer import codebook_usage
from ..runtime import (DistContext, autocast, cleanup_distributed, derive_seed, process_start_time,
                       setup_distributed)
from ..vqgan import VQGAN, save_vqgan
from .data import load_images_uint8, random_hflip, resolve_splits
from .loop import Trainer, TrainTask
from .optim import check_train_config
from .run import RunConfig, preset_train_config, run_and_export

log = logging.getLogger(__name__)

#: TrainConfig values per preset (the fields of a VQGANRun override them).
VQGAN_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(batch_size=8, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0, warmup_steps=5, max_steps=30,
                 val_every=10, ckpt_every=10, log_every=5),
    "cpu": dict(batch_size=32, lr=4e-4, betas=(0.9, 0.99), weight_decay=0.0, warmup_steps=200, max_steps=4000,
                val_every=250, ckpt_every=250, log_every=10),
    "lab": dict(batch_size=64, lr=2e-4, betas=(0.9, 0.99), weight_decay=0.0, warmup_steps=500,
                max_steps=20000, val_every=1000, ckpt_every=1000, log_every=20),
}
LOSS_NAMES = ("loss", "l1", "mse", "vq", "usage", "perplexity")
VAL_NAMES = ("psnr", "usage", "perplexity")


@torch.no_grad()
def reconstruction_metrics(
    model: torch.nn.Module, images_u8: torch.Tensor, batch_size: int = 128, keep_recon: bool = False
) -> tuple[dict[str, float], torch.Tensor | None]:
    """PSNR and codebook statistics of a VQGAN over a set of images (eval mode, no updates).

    Derived in notebooks/02_vqgan_tokenizer.ipynb, sections 4 (PSNR) and 5 (codebook usage).

    Args:
        model: a :class:`~maskgit_lib.vqgan.VQGAN` (plain module).
        images_u8: uint8 (N, 3, S, S) originals, on any device.
        batch_size: images per forward pass.
        keep_recon: also return the uint8 reconstructions (on the CPU).

    Returns:
        ``(metrics, recon)``: ``psnr`` (dB, mean over images of
        ``10 log10(1 / MSE)`` between uint8 reconstruction and original on
        [0, 1]), ``usage`` (fraction of the K codes used over all images),
        ``perplexity`` (exp entropy of that histogram), ``num_images``; and
        uint8 (N, 3, S, S) reconstructions or None.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    psnrs, tokens, recons = [], [], []
    for chunk in images_u8.split(batch_size):
        chunk = chunk.to(device)
        recon, _, info = model(from_uint8(chunk))  # (B, 3, S, S)
        recon_u8 = to_uint8(recon.float().clamp(-1, 1))  # (B, 3, S, S) uint8
        mse = ((recon_u8.float() - chunk.float()) / 255.0).pow(2).flatten(1).mean(1)  # (B,)
        psnrs.append(10.0 * torch.log10(1.0 / mse.clamp_min(1e-10)))  # PSNR = 10 log10(MAX^2 / MSE)
        tokens.append(info["tokens"].cpu())
        if keep_recon:
            recons.append(recon_u8.cpu())
    model.train(was_training)
    usage, perplexity = codebook_usage(torch.cat(tokens), model.cfg.codebook_size)
    metrics = {"psnr": float(torch.cat(psnrs).mean()), "usage": usage, "perplexity": perplexity,
               "num_images": int(images_u8.shape[0])}
    return metrics, (torch.cat(recons) if keep_recon else None)


class VQGANObjective:
    """The VQGAN training step (and optional PatchGAN update) for :class:`~maskgit_lib.training.loop.Trainer`.

    ``loss = recon_loss + vq_loss`` and, from step ``cfg.gan_start`` on when
    ``cfg.gan_weight > 0``, ``+ gan_weight * lambda * hinge_G`` with taming's
    adaptive ``lambda`` (:func:`maskgit_lib.discriminator.adaptive_gan_weight`);
    :meth:`after_step` then takes one discriminator step on the same batch.

    Args:
        cfg: TrainConfig (``recon_loss``, ``hflip``, ``gan_weight``, ``gan_start``, ``lr``, ``bf16``).
        model: the plain VQGAN (for its last layer).
        images_u8: uint8 (N, 3, S, S) training images on the training device.
        ctx: the trainer's DistContext (the discriminator is DDP-wrapped under torchrun).
    """

    def __init__(self, cfg, model: torch.nn.Module, images_u8: torch.Tensor, ctx: DistContext) -> None:
        if cfg.recon_loss not in ("l1", "mse", "l1+mse"):
            raise ConfigError(f"--recon-loss {cfg.recon_loss!r} is not one of l1, mse, l1+mse")
        self.cfg, self.model, self.images_u8, self.ctx = cfg, model, images_u8, ctx
        self.extras: dict[str, Any] = {}
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.gan_weight > 0:
            if cfg.grad_accum != 1:
                raise ConfigError("--gan-weight > 0 supports --grad-accum 1 only")
            torch.manual_seed(derive_seed(cfg.seed, "discriminator-init"))
            self.disc = PatchDiscriminator().to(ctx.device)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9), weight_decay=0.0)
            self.disc_fwd = self.disc
            if ctx.distributed:
                ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
                self.disc_fwd = torch.nn.parallel.DistributedDataParallel(self.disc, device_ids=ids)
            self.extras = {"discriminator": self.disc, "disc_optimizer": self.disc_opt}

    @property
    def loss_names(self) -> tuple[str, ...]:
        return LOSS_NAMES + (("g_loss", "gan_lambda", "d_loss") if self.cfg.gan_weight > 0 else ())

    def _gan_on(self, step: int) -> bool:
        return self.cfg.gan_weight > 0 and step >= self.cfg.gan_start

    def __call__(self, model, indices: torch.Tensor, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        """One micro-batch: ``indices`` int64 (B,) -> the loss and the scalars to log."""
        cfg = self.cfg
        images = from_uint8(self.images_u8[indices])  # (B, 3, S, S) in [-1, 1]
        if cfg.hflip:
            images = random_hflip(images, generator)
        recon, vq_loss, info = model(images, generator=generator)  # (B, 3, S, S), scalar, dict
        diff = recon.float() - images
        l1, mse = diff.abs().mean(), diff.pow(2).mean()
        recon_loss = {"l1": l1, "mse": mse, "l1+mse": l1 + mse}[cfg.recon_loss]
        out = {"loss": recon_loss + vq_loss, "l1": l1.detach(), "mse": mse.detach(), "vq": vq_loss.detach(),
               "usage": info["usage"], "perplexity": info["perplexity"]}
        if self._gan_on(step):
            self.disc.requires_grad_(False)
            g_loss = g_hinge_loss(self.disc(recon).float())
            lam = adaptive_gan_weight(recon_loss, g_loss, self.model.last_layer)
            out["loss"] = out["loss"] + cfg.gan_weight * lam * g_loss
            out.update(g_loss=g_loss.detach(), gan_lambda=lam)
            self._last = (images.detach(), recon.detach())
        return out

    def after_step(self, step: int) -> dict[str, torch.Tensor]:
        """One discriminator hinge step on the last batch (when the GAN loss is on)."""
        if not self._gan_on(step) or self._last is None:
            return {}
        images, recon = self._last
        self._last = None
        self.disc.requires_grad_(True)
        for group in self.disc_opt.param_groups:
            group["lr"] = self.cfg.lr
        with autocast(self.ctx.device, self.cfg.bf16):
            logits = self.disc_fwd(torch.cat([images, recon.to(images.dtype)])).float()  # (2B, 1, h, w)
        real, fake = logits.chunk(2)
        d_loss = d_hinge_loss(real, fake)
        d_loss.backward()
        self.disc_opt.step()
        self.disc_opt.zero_grad(set_to_none=True)
        return {"d_loss": d_loss.detach()}


@dataclasses.dataclass(frozen=True)
class VQGANRun(RunConfig):
    """Everything one VQGAN training run needs (what ``maskgit train-vqgan`` takes).

    Build one with :meth:`default` and change fields with ``dataclasses.replace``.

    Attributes:
        out_dir: the run folder (default ``runs/vqgan``).
        model: the tokenizer's architecture.
        (the other fields: :class:`~maskgit_lib.training.run.RunConfig`)
    """

    out_dir: Path = dataclasses.field(default_factory=lambda: paths.project_root() / "runs" / "vqgan")
    model: VQGANConfig = dataclasses.field(default_factory=VQGANConfig)

    @classmethod
    def default(cls, preset: str = "cpu", device: str = "auto", **fields: Any) -> "VQGANRun":
        """The ``preset``'s model and training settings (``maskgit train-vqgan --preset``), then ``fields``."""
        return cls(model=VQGANConfig.preset(preset), train=preset_train_config(VQGAN_TRAIN_PRESETS, preset, device),
                   device=device, **fields)


def train_vqgan(run: VQGANRun) -> dict[str, Any]:
    """Train a VQGAN: write ``run.out_dir/final.safetensors`` (and ``run.export``); return the summary.

    Under torchrun every rank calls this; rank 0 writes the files.

    Returns:
        The run's summary (``summary.json``): ``steps``, ``stop_reason``, ``wall_time_s``,
        ``device``, ``metrics`` (val ``psnr``, ``usage``, ``perplexity``, ``num_images``;
        ``{}`` on ranks other than 0), the configs and file paths.

    Raises:
        ConfigError: invalid settings (before any data is loaded), or a resume with other settings.
        DataError: a missing or empty dataset.
    """
    start = process_start_time()
    cfg = run.train
    check_train_config(cfg)  # fail before loading data; Trainer checks again with the world size
    session = run.session(start)
    ctx = setup_distributed(run.device)
    try:
        data_dir = run.data_dir if run.data_dir is not None else paths.default_dataset_dir()
        train_files, val_files = resolve_splits(data_dir)
        t_load = time.monotonic()
        train_u8 = load_images_uint8(train_files, run.model.image_size).to(ctx.device)  # (N, 3, S, S)
        val_u8 = load_images_uint8(val_files, run.model.image_size).to(ctx.device)
        log.info("loaded %d train + %d val images from %s in %.1f s", len(train_files), len(val_files),
                 data_dir, time.monotonic() - t_load)
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = VQGAN(run.model).to(ctx.device)
        objective = VQGANObjective(cfg, model, train_u8, ctx)
        task = TrainTask(
            kind="vqgan", model=model, model_config=config_to_dict(run.model), train_step=objective,
            validate=lambda: reconstruction_metrics(model, val_u8, max(64, cfg.batch_size))[0],
            save_final=lambda path, metrics: save_vqgan(model, path, metrics), num_train=len(train_files),
            loss_names=objective.loss_names, val_names=(*VAL_NAMES, "num_images"),
            extras=objective.extras, after_step=objective.after_step,
        )
        return run_and_export(run, Trainer(task, cfg, ctx, session))
    finally:
        cleanup_distributed()
