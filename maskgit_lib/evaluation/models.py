"""Scoring a trained model on its own terms: a VQGAN's reconstructions, a transformer's masked tokens.

- :func:`evaluate_vqgan` (``maskgit eval-vqgan``): PSNR, codebook usage and
  perplexity (:func:`maskgit_lib.training.vqgan.reconstruction_metrics`) on the
  test ground truth (``DIR/test/gt``), plus rFID, the FID of the reconstructions
  against the originals (:mod:`maskgit_lib.evaluation.fid`).
- :func:`evaluate_transformer` (``maskgit eval-transformer``): recomputes the
  validation masked-token CE and accuracy the trainer recorded in a checkpoint,
  on the same fixed masks (:func:`maskgit_lib.training.transformer.fixed_val_masks`)
  and hole examples, so a shipped file can be checked against its metadata.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .. import paths
from ..checkpoint import read_weights
from ..data import list_images
from ..errors import CheckpointError, DataError, MaskgitError
from ..runtime import exact_fp32, resolve_device
from ..training.data import load_images_uint8, resolve_splits
from ..training.tokens import cached_hole_examples, cached_tokens, load_tokenizer
from ..training.transformer import VAL_HOLE_SEED, VAL_MASK_SEED, VAL_NAMES, fixed_val_masks, validation_metrics
from ..training.vqgan import reconstruction_metrics
from ..transformer import load_transformer
from ..vqgan import load_vqgan
from .fid import fid_from_images

log = logging.getLogger(__name__)


def ground_truth_dir(data_dir: Path) -> Path:
    """The test ground-truth folder of a dataset: ``DIR/test/gt``, ``DIR/gt``, or a plain folder of images.

    Raises:
        DataError: a dataset folder (with ``train/``) without test ground truth.
    """
    for candidate in (data_dir / "test" / "gt", data_dir / "gt"):
        if candidate.is_dir():
            return candidate
    if data_dir.is_dir() and not (data_dir / "train").is_dir():
        return data_dir  # any folder of images
    raise DataError(f"{data_dir} has no test ground truth; expected {data_dir / 'test' / 'gt'} "
                    "(built by `maskgit prepare-data`) or a plain folder of images")


def reconstruction_fid(recon_u8: torch.Tensor, gt_dir: Path, device: torch.device) -> float:
    """rFID: FID (pytorch-fid protocol) of uint8 (N, 3, S, S) reconstructions vs the images of ``gt_dir``."""
    return float(fid_from_images(recon_u8, gt_dir, device=device))


def evaluate_vqgan(checkpoint: Path | None = None, data_dir: Path | None = None, fid: bool = True,
                   device: str = "auto", batch_size: int = 128) -> dict[str, Any]:
    """PSNR, codebook usage/perplexity and rFID of a VQGAN checkpoint on the test ground truth.

    Args:
        checkpoint: VQGAN weights (None: :func:`maskgit_lib.paths.default_vqgan_checkpoint`).
        data_dir: dataset folder; its ``test/gt`` is used (None: the default dataset).
        fid: also compute rFID (needs pytorch-fid's offline weights); a failure is
            reported in ``rfid_error``, not raised.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size: images per forward pass.

    Returns:
        ``checkpoint``, ``gt_dir``, ``psnr`` (dB), ``usage``, ``perplexity``, ``num_images``,
        ``codebook_size``, ``rfid`` (None when skipped or failed) and maybe ``rfid_error``.
    """
    dev = resolve_device(device)
    checkpoint = checkpoint or paths.default_vqgan_checkpoint()
    gt_dir = ground_truth_dir(Path(data_dir if data_dir is not None else paths.default_dataset_dir()))
    model = load_vqgan(checkpoint, dev)
    images = load_images_uint8(list_images(gt_dir), model.cfg.image_size)  # (N, 3, S, S) uint8
    metrics, recon = reconstruction_metrics(model, images, batch_size, keep_recon=fid)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "gt_dir": str(gt_dir), **metrics,
                              "codebook_size": model.cfg.codebook_size, "rfid": None}
    if fid:
        try:
            result["rfid"] = reconstruction_fid(recon, gt_dir, dev)
        except (ImportError, OSError, RuntimeError, MaskgitError) as exc:
            result["rfid_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("rFID skipped: %s", result["rfid_error"])
    return result


def evaluate_transformer(checkpoint: Path | None = None, vqgan_checkpoint: Path | None = None,
                         data_dir: Path | None = None, seed: int | None = None, device: str = "auto",
                         batch_size: int = 128) -> dict[str, Any]:
    """Recompute a transformer checkpoint's validation masked-token CE and accuracy; compare with its metadata.

    Args:
        checkpoint: transformer weights (None: the shipped one).
        vqgan_checkpoint: the tokenizer it was trained with (None: the shipped one).
        data_dir: dataset folder; its ``val/`` split is used (None: the default dataset).
        seed: seed of the fixed validation masks (None: the one recorded, else 0).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size: images per forward pass.

    Returns:
        ``checkpoint``, ``vqgan_checkpoint``, ``val_images``, ``mask_seed``, ``mask_schedule``,
        ``val_ce``, ``val_masked_acc``, ``val_num_masked``, ``val_hole_ce``, ``val_hole_acc``,
        ``recorded`` (the same five as stored in the checkpoint, or None) and ``steps``.

    Raises:
        CheckpointError: a tokenizer whose codebook size differs from the transformer's.
    """
    dev = resolve_device(device)
    checkpoint = Path(checkpoint or paths.default_transformer_checkpoint())
    vqgan_path = Path(vqgan_checkpoint or paths.default_vqgan_checkpoint())
    _, meta = read_weights(checkpoint, expected_type="transformer")
    recorded = meta.get("metrics", {})
    model = load_transformer(checkpoint, dev)
    vqgan, vqgan_sha = load_tokenizer(vqgan_path, dev)
    if recorded.get("vqgan_sha256") not in (None, vqgan_sha):
        log.warning("%s was trained on tokens of another VQGAN file than %s; the numbers will differ",
                    checkpoint, vqgan_path)
    if vqgan.cfg.codebook_size != model.cfg.codebook_size:
        raise CheckpointError(f"{vqgan_path} has {vqgan.cfg.codebook_size} codes but {checkpoint} expects "
                              f"{model.cfg.codebook_size}; pass the VQGAN it was trained with")
    _, val_files = resolve_splits(data_dir if data_dir is not None else paths.default_dataset_dir())
    val, val_key = cached_tokens(vqgan_path, vqgan, vqgan_sha, val_files, "id")  # (N, L)
    holes = cached_hole_examples(vqgan, val_files, val_key, "id", 1, VAL_HOLE_SEED)
    seed = seed if seed is not None else int(recorded.get("val_mask_seed", VAL_MASK_SEED))
    schedule = recorded.get("val_mask_schedule", "cosine")
    masks = fixed_val_masks(val.shape[0], val.shape[1], schedule, seed, float(recorded.get("val_min_mask_ratio", 0)))
    with exact_fp32():
        metrics = validation_metrics(model, val, masks, holes, batch_size)
    return {"checkpoint": str(checkpoint), "vqgan_checkpoint": str(vqgan_path), "val_images": len(val_files),
            "mask_seed": seed, "mask_schedule": schedule, **{f"val_{k}": v for k, v in metrics.items()},
            "recorded": {k: recorded.get(f"val_{k}") for k in VAL_NAMES},
            "steps": recorded.get("steps")}
