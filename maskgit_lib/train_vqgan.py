"""``maskgit train-vqgan`` and ``maskgit eval-vqgan``: the stage-1 tokenizer.

Training loss (per batch of images ``x`` in [-1, 1], reconstruction ``x^``)::

    L = L1(x^, x) + MSE(x^, x) + beta * ||z - sg(e)||^2   (+ gan_weight * lambda * hinge_G, optional)

(``--recon-loss l1|mse|l1+mse``; the default ``l1+mse`` pairs L1's sharp flat
colours with the MSE that PSNR measures). The codebook itself follows EMA
updates with dead-code restarts (:mod:`maskgit_lib.quantizer`). The whole
dataset is decoded once into a uint8 tensor on the device; batches get random
horizontal flips.

Validation (every ``--val-every`` steps and at the end, in fp32): PSNR of the
uint8 reconstructions on [0, 1] images, the fraction of the K codes used over
the validation set and the perplexity of that code histogram.

``eval-vqgan`` reports the same on the test ground truth (``DIR/test/gt``)
plus rFID (FID of reconstructions vs originals, :mod:`maskgit_lib.fid`,
imported only then).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from . import paths
from .config import VQGANConfig, config_to_dict
from .argtypes import positive_int
from .errors import ConfigError, DataError, MaskgitError
from .training import (
    FINAL_NAME, WEIGHT_DTYPES, Trainer, add_train_arguments, cleanup_distributed, derive_seed, export_weights, images_to_float,
    load_images_uint8, process_start_time, random_hflip, resolve_splits, setup_distributed,
    train_config_from_args, write_json,
)

log = logging.getLogger(__name__)

#: TrainConfig values per preset (flags override them).
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
    from .data import to_uint8
    from .quantizer import codebook_usage

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    psnrs, tokens, recons = [], [], []
    for chunk in images_u8.split(batch_size):
        chunk = chunk.to(device)
        recon, _, info = model(images_to_float(chunk))  # (B, 3, S, S)
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
    """The VQGAN training step (and optional PatchGAN update) for :class:`~maskgit_lib.training.Trainer`.

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

    def __init__(self, cfg, model: torch.nn.Module, images_u8: torch.Tensor, ctx) -> None:
        if cfg.recon_loss not in ("l1", "mse", "l1+mse"):
            raise ConfigError(f"--recon-loss {cfg.recon_loss!r} is not one of l1, mse, l1+mse")
        self.cfg, self.model, self.images_u8, self.ctx = cfg, model, images_u8, ctx
        self.extras: dict[str, Any] = {}
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.gan_weight > 0:
            if cfg.grad_accum != 1:
                raise ConfigError("--gan-weight > 0 supports --grad-accum 1 only")
            from .discriminator import PatchDiscriminator

            torch.manual_seed(derive_seed(cfg.seed, "discriminator-init"))
            self.disc = PatchDiscriminator().to(ctx.device)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9), weight_decay=0.0)
            self.disc_fwd = self.disc
            if ctx.distributed:
                from torch.nn.parallel import DistributedDataParallel

                ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
                self.disc_fwd = DistributedDataParallel(self.disc, device_ids=ids)
            self.extras = {"discriminator": self.disc, "disc_optimizer": self.disc_opt}

    @property
    def loss_names(self) -> tuple[str, ...]:
        return LOSS_NAMES + (("g_loss", "gan_lambda", "d_loss") if self.cfg.gan_weight > 0 else ())

    def _gan_on(self, step: int) -> bool:
        return self.cfg.gan_weight > 0 and step >= self.cfg.gan_start

    def __call__(self, model, indices: torch.Tensor, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        images = images_to_float(self.images_u8[indices])  # (B, 3, S, S) in [-1, 1]
        if cfg.hflip:
            images = random_hflip(images, generator)
        recon, vq_loss, info = model(images, generator=generator)  # (B, 3, S, S), scalar, dict
        diff = recon.float() - images
        l1, mse = diff.abs().mean(), diff.pow(2).mean()
        recon_loss = {"l1": l1, "mse": mse, "l1+mse": l1 + mse}[cfg.recon_loss]
        out = {"loss": recon_loss + vq_loss, "l1": l1.detach(), "mse": mse.detach(), "vq": vq_loss.detach(),
               "usage": info["usage"], "perplexity": info["perplexity"]}
        if self._gan_on(step):
            from .discriminator import adaptive_gan_weight, g_hinge_loss

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
        from .discriminator import d_hinge_loss
        from .training import autocast

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


def add_train_vqgan_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``maskgit train-vqgan``."""
    add_train_arguments(parser, paths.project_root() / "runs" / "vqgan")
    parser.add_argument("--recon-loss", choices=["l1", "mse", "l1+mse"], default=None,
                        help="pixel reconstruction loss (default: l1+mse)")
    parser.add_argument("--gan-weight", type=float, default=None, help="PatchGAN hinge loss weight (default 0: off)")
    parser.add_argument("--gan-start", type=int, default=None, help="step at which the GAN loss starts")
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                        help="random horizontal flips (default: on)")


def run_train_vqgan(args: argparse.Namespace) -> int:
    """Train a VQGAN; write OUT/final.safetensors (and --export); print a summary."""
    start = process_start_time()
    ctx = setup_distributed(args.device)
    try:
        cfg = train_config_from_args(args, VQGAN_TRAIN_PRESETS[args.preset], ctx.device)
        model_cfg = VQGANConfig.preset(args.preset)
        data_dir = args.data if args.data is not None else paths.default_dataset_dir()
        train_files, val_files = resolve_splits(data_dir)
        t_load = time.monotonic()
        train_u8 = load_images_uint8(train_files, model_cfg.image_size).to(ctx.device)  # (N, 3, S, S)
        val_u8 = load_images_uint8(val_files, model_cfg.image_size).to(ctx.device)
        log.info("loaded %d train + %d val images from %s in %.1f s", len(train_files), len(val_files),
                 data_dir, time.monotonic() - t_load)
        from .vqgan import VQGAN, save_vqgan

        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = VQGAN(model_cfg).to(ctx.device)
        objective = VQGANObjective(cfg, model, train_u8, ctx)
        trainer = Trainer(
            kind="vqgan", run_dir=args.out, cfg=cfg, ctx=ctx, model=model, model_config=config_to_dict(model_cfg),
            train_step=objective, extras=objective.extras, after_step=objective.after_step,
            validate=lambda: reconstruction_metrics(model, val_u8, max(64, cfg.batch_size))[0],
            save_final=lambda path, metrics: save_vqgan(model, path, metrics),
            num_train=len(train_files), loss_names=objective.loss_names, val_names=(*VAL_NAMES, "num_images"),
            stop_at_step=args.stop_at_step, resume=args.resume, start_time=start, show_progress=args.progress,
            weights_dtype=WEIGHT_DTYPES[args.weights_dtype],
        )
        summary = trainer.run()
        if ctx.is_main:
            if args.export is not None:
                export_weights(args.out / FINAL_NAME, args.export, WEIGHT_DTYPES[args.weights_dtype])
            m = summary["metrics"]
            print(f"train-vqgan: {summary['steps']} steps ({summary['stop_reason']}) in "
                  f"{summary['wall_time_s']:.0f} s on {summary['device']}; val PSNR {m['psnr']:.2f} dB, "
                  f"codebook usage {m['usage']:.1%}, perplexity {m['perplexity']:.1f}")
            print(f"weights: {args.out / FINAL_NAME}" + (f" (exported to {args.export})" if args.export else ""))
        return 0
    finally:
        cleanup_distributed()


def _test_gt_dir(data_dir: Path) -> Path:
    for candidate in (data_dir / "test" / "gt", data_dir / "gt"):
        if candidate.is_dir():
            return candidate
    if data_dir.is_dir() and not (data_dir / "train").is_dir():
        return data_dir  # any folder of images
    raise DataError(f"{data_dir} has no test ground truth; expected {data_dir / 'test' / 'gt'} "
                    "(built by `maskgit prepare-data`) or a plain folder of images")


def reconstruction_fid(recon_u8: torch.Tensor, gt_dir: Path, device: torch.device) -> float:
    """rFID: FID (pytorch-fid protocol, :mod:`maskgit_lib.fid`) of uint8 (N, 3, S, S) reconstructions vs ``gt_dir``."""
    from . import fid

    return float(fid.fid_from_images(recon_u8, gt_dir, device=device))


def add_eval_vqgan_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``maskgit eval-vqgan``."""
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"VQGAN weights (default: {paths.default_vqgan_checkpoint()})")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"dataset folder; uses DIR/test/gt (default: {paths.default_dataset_dir()})")
    parser.add_argument("--no-fid", action="store_true", help="skip rFID (needs pytorch-fid and its weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")


def run_eval_vqgan(args: argparse.Namespace) -> int:
    """PSNR, codebook usage/perplexity and rFID of a VQGAN checkpoint on the test ground truth."""
    from .training import resolve_device
    from .vqgan import load_vqgan

    device = resolve_device(args.device)
    checkpoint = args.checkpoint or paths.default_vqgan_checkpoint()
    data_dir = args.data if args.data is not None else paths.default_dataset_dir()
    gt_dir = _test_gt_dir(Path(data_dir))
    from .data import list_images

    model = load_vqgan(checkpoint, device)
    files = list_images(gt_dir)
    images = load_images_uint8(files, model.cfg.image_size)
    metrics, recon = reconstruction_metrics(model, images, args.batch_size, keep_recon=not args.no_fid)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "gt_dir": str(gt_dir), **metrics,
                              "codebook_size": model.cfg.codebook_size, "rfid": None}
    if not args.no_fid:
        try:
            result["rfid"] = reconstruction_fid(recon, gt_dir, device)
        except (ImportError, OSError, RuntimeError, MaskgitError) as exc:
            result["rfid_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("rFID skipped: %s", result["rfid_error"])
    rows = [("images", f"{result['num_images']}"), ("PSNR (dB)", f"{result['psnr']:.2f}"),
            ("codebook usage", f"{result['usage']:.1%} of {result['codebook_size']}"),
            ("perplexity", f"{result['perplexity']:.1f}"),
            ("rFID", f"{result['rfid']:.2f}" if result["rfid"] is not None
             else "unavailable (see rfid_error)" if "rfid_error" in result else "skipped (--no-fid)")]
    print(f"eval-vqgan: {checkpoint} on {gt_dir}")
    for name, value in rows:
        print(f"  {name:<16} {value}")
    if args.json is not None:
        write_json(args.json, result)
    if not all(math.isfinite(v) for v in (result["psnr"], result["perplexity"])):
        raise DataError(f"non-finite metrics: {json.dumps(result)}")
    return 0
