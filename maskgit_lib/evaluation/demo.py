"""The demo behind ``maskgit demo`` / ``make demo``: inpaint the test set with the shipped models, score it.

:func:`run_demo` takes a :class:`DemoConfig` and, with the shipped checkpoints,
inpaints the default test set (``<data>/twemoji64/test/masked_image`` + ``mask64``)
into ``results/demo/``, computes the FID of the outputs against ``test/gt`` (cached
ground-truth statistics), writes a small gallery ``results/demo_gallery.png``
(masked / inpainted / ground truth for 8 images) and returns a summary dict.
Without the checkpoints it returns what is missing and how to train it (the data
and FID weights are ready by then); the CLI prints that and exits 0.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import paths
from ..data import load_image, test_set
from ..errors import MaskgitError
from ..folders import inpaint_folder
from ..inpaint import Inpainter, InpaintSettings, missing_checkpoint_hint
from ..outputs import atomic_write, prepare_output_dir
from ..viz import figure_to_png, show_images
from .fid import fid_folders
from .inception import inception_weights_path

logger = logging.getLogger(__name__)

GALLERY_IMAGES = 8


@dataclass(frozen=True)
class DemoConfig:
    """What ``maskgit demo`` runs; every field has the CLI flag's default.

    Attributes:
        data: dataset folder (None: ``data/twemoji64``). out: output folder (None: ``results/demo``).
        settings: the sampler (:class:`InpaintSettings`; its defaults are the CLI's: cosine T=8, seed 0,
            the lab's confidence rule, harmonic prefill, Poisson blend). limit: only the first N test images.
        batch_size: images per batch. device: ``auto``/``cpu``/``cuda[:N]``. bf16: bfloat16 autocast.
        fid: compute the FID. overwrite: write into a non-empty folder another program filled.
    """

    data: Path | None = None
    out: Path | None = None
    settings: InpaintSettings = field(default_factory=InpaintSettings)
    limit: int | None = None
    batch_size: int = 64
    device: str = "auto"
    bf16: bool = False
    fid: bool = True
    overwrite: bool = False


def _readiness(data_dir: Path) -> list[str]:
    """Lines saying whether the dataset and the FID weights are in place."""
    test = data_dir / "test"
    data = f"data: {data_dir} ready" if test.is_dir() else (
        f"data: {data_dir} has no test/ folder; run `maskgit prepare-data` (or `make data`)")
    weights = inception_weights_path()
    fid = f"FID weights: {weights} ready" if weights.is_file() else (
        f"FID weights: {weights} missing; run `maskgit prepare-fid` (or `make fid-weights`)")
    return [data, fid]


def _missing_checkpoints() -> list[str]:
    hints = []
    for kind, path in (("VQGAN", paths.default_vqgan_checkpoint()),
                       ("Transformer", paths.default_transformer_checkpoint())):
        if not path.is_file():
            hints.append(missing_checkpoint_hint(kind, path))
    return hints


def _fid(pred_dir: Path, gt_dir: Path, names: list[str], full: bool, device: str) -> float:
    """FID of ``pred_dir`` against the ground truths of ``names`` (all of ``gt_dir`` when ``full``).

    Ground-truth features are cached by content (:mod:`maskgit_lib.evaluation.fid`), so a
    subset copied to a temporary folder hits the cache on the next run too.
    """
    if full:
        return float(fid_folders(pred_dir, gt_dir, device=device))
    with tempfile.TemporaryDirectory(prefix="maskgit-demo-gt-") as tmp:
        for name in names:
            shutil.copy2(gt_dir / f"{name}.png", Path(tmp) / f"{name}.png")
        return float(fid_folders(pred_dir, tmp, device=device))


def save_gallery(masked: torch.Tensor, inpainted: torch.Tensor, truth: torch.Tensor | None,
                 path: str | Path) -> Path:
    """Save a 3-row figure: masked inputs, inpainted outputs, ground truth (if given).

    Args:
        masked, inpainted, truth: float (n, 3, S, S) in [-1, 1].
        path: PNG file to write.
    """
    rows = [("masked", masked), ("inpainted", inpainted)] + ([("ground truth", truth)] if truth is not None else [])
    n = len(masked)
    titles = [label if i == 0 else "" for label, _ in rows for i in range(n)]
    fig = show_images(torch.cat([images for _, images in rows]), titles=titles, ncols=n)
    png = figure_to_png(fig, dpi=100)
    return atomic_write(path, lambda tmp: tmp.write_bytes(png))


def run_demo(cfg: DemoConfig = DemoConfig()) -> dict:
    """Inpaint the test set with the shipped models, score it with FID, save a gallery.

    Returns:
        ``{"ready": [...], "missing": [hints]}`` when a checkpoint is missing (nothing
        else done); otherwise also ``summary`` (from :func:`~maskgit_lib.folders.inpaint_folder`),
        ``settings``, ``fid`` (float or None), ``fid_text``, ``out`` and ``gallery`` paths.
    """
    data_dir = cfg.data if cfg.data is not None else paths.default_dataset_dir()
    ready = _readiness(data_dir)
    missing = _missing_checkpoints()
    if missing:
        return {"ready": ready, "missing": missing}

    test = test_set(data_dir)
    out = Path(cfg.out) if cfg.out is not None else paths.results_dir() / "demo"
    out = prepare_output_dir(out, test.images_dir, test.masks_dir, command="inpaint", overwrite=cfg.overwrite)
    all_names = [image.stem for image, _ in test.pairs]
    names = all_names[:cfg.limit] if cfg.limit else all_names
    for stale in set(all_names) - set(names):  # outputs of an earlier, larger run would skew the FID
        (out / f"{stale}.png").unlink(missing_ok=True)

    settings = cfg.settings
    inpainter = Inpainter.from_checkpoints(device=cfg.device, bf16=cfg.bf16)
    summary = inpaint_folder(inpainter, test.images_dir, test.masks_dir, out, settings, cfg.batch_size,
                             limit=cfg.limit, overwrite=cfg.overwrite)
    out = Path(summary["out_dir"])

    fid, fid_text = None, "skipped (--no-fid)"
    if test.gt_dir is None:
        fid_text = f"skipped (no ground-truth folder next to {test.images_dir})"
    elif len(names) < 2:
        fid_text = "skipped (needs at least 2 images)"
    elif cfg.fid:
        try:
            fid = _fid(out, test.gt_dir, names, len(names) == len(all_names), summary["device"])
            fid_text = f"{fid:.2f} ({len(names)} vs {len(names)} images; compare only FIDs on the same count)"
        except (ImportError, MaskgitError) as exc:  # the outputs are still worth showing
            logger.error("FID failed: %s", exc)
            fid_text = f"unavailable ({exc}); see `maskgit prepare-fid` and `maskgit fid --help`"

    k = min(GALLERY_IMAGES, len(names))
    gallery = save_gallery(
        torch.stack([load_image(test.pairs[i][0]) for i in range(k)]),
        torch.stack([load_image(out / f"{names[i]}.png") for i in range(k)]),
        torch.stack([test.ground_truth(i) for i in range(k)]) if test.gt_dir is not None else None,
        out.with_name(out.name + "_gallery.png"))
    return {"ready": ready, "missing": [], "summary": summary, "settings": settings, "fid": fid,
            "fid_text": fid_text, "out": out, "gallery": gallery}
