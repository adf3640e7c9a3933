"""``maskgit demo`` (what ``make demo`` runs after preparing the data and FID weights).

With the shipped checkpoints it inpaints the default test set
(``<data>/twemoji64/test/masked_image`` + ``mask64``) into ``results/demo/``
(cosine schedule, T = 8, seed 0, batch 64), computes the FID of the outputs
against ``test/gt`` (cached ground-truth statistics), writes a small gallery
``results/demo_gallery.png`` (masked / inpainted / ground truth for 8 images) and
prints a short summary. Without the checkpoints it says which file is missing
and how to train it, and exits 0: the data and FID weights are ready by then.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from . import paths
from .argtypes import int_at_least, seed_int
from .errors import MaskgitError
from .inpaint import Inpainter, InpaintSettings, add_overwrite_argument, missing_checkpoint_hint, schedule_arg
from .outputs import prepare_output_dir

logger = logging.getLogger(__name__)

INCEPTION_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"  # what pytorch-fid looks for
GALLERY_IMAGES = 8


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``maskgit demo``."""
    parser.add_argument("--steps", type=int_at_least(1), default=8, help="T, decoding steps (default 8)")
    parser.add_argument("--schedule", type=schedule_arg, default="cosine", help="mask schedule (default cosine)")
    parser.add_argument("--limit", type=int_at_least(1), default=None, metavar="N",
                        help="only the first N test images (quick runs; FID then uses the same N ground truths)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/demo; the gallery goes to <out>_gallery.png)")
    add_overwrite_argument(parser)
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: data/twemoji64)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=64, help="default 64")
    parser.add_argument("--seed", type=seed_int, default=0, help="default 0")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--no-fid", action="store_true", help="skip the FID")


def _readiness(data_dir: Path) -> list[str]:
    """Lines saying whether the dataset and the FID weights are in place."""
    test = data_dir / "test"
    data = f"data: {data_dir} ready" if test.is_dir() else (
        f"data: {data_dir} has no test/ folder; run `maskgit prepare-data` (or `make data`)")
    weights = paths.torch_hub_checkpoints_dir() / INCEPTION_WEIGHTS_NAME
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

    Ground-truth features are cached by content (:mod:`maskgit_lib.fid`), so a
    subset copied to a temporary folder hits the cache on the next run too.
    """
    from .fid import fid_folders

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
    from .viz import figure_to_png, show_images

    rows = [("masked", masked), ("inpainted", inpainted)] + ([("ground truth", truth)] if truth is not None else [])
    n = len(masked)
    titles = [label if i == 0 else "" for label, _ in rows for i in range(n)]
    fig = show_images(torch.cat([images for _, images in rows]), titles=titles, ncols=n)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_to_png(fig, dpi=100))
    return path


def run_demo(args: argparse.Namespace) -> int:
    """Run ``maskgit demo``; prints a short summary (or what is missing)."""
    from .data import load_image, test_set

    data_dir = args.data if args.data is not None else paths.default_dataset_dir()
    ready = _readiness(data_dir)
    missing = _missing_checkpoints()
    if missing:
        print("maskgit demo: " + "; ".join(ready) + ".")
        print("maskgit demo: the trained checkpoints are not there yet, so there is nothing to inpaint:")
        for hint in missing:
            print(f"  - {hint}")
        print("Run `maskgit demo` (or `make demo`) again once both checkpoints exist.")
        return 0

    test = test_set(data_dir)
    out = Path(args.out) if args.out is not None else paths.results_dir() / "demo"
    out = prepare_output_dir(out, test.images_dir, test.masks_dir, command="inpaint", overwrite=args.overwrite)
    all_names = [image.stem for image, _ in test.pairs]
    names = all_names[:args.limit] if args.limit else all_names
    for stale in set(all_names) - set(names):  # outputs of an earlier, larger run would skew the FID
        (out / f"{stale}.png").unlink(missing_ok=True)

    settings = InpaintSettings(steps=args.steps, schedule=args.schedule, seed=args.seed)
    inpainter = Inpainter.from_checkpoints(device=args.device, bf16=args.bf16)
    summary = inpainter.inpaint_folder(test.images_dir, test.masks_dir, out, settings, args.batch_size,
                                       limit=args.limit, overwrite=args.overwrite)
    out = Path(summary["out_dir"])

    fid_text = "skipped (--no-fid)"
    if test.gt_dir is None:
        fid_text = f"skipped (no ground-truth folder next to {test.images_dir})"
    elif len(names) < 2:
        fid_text = "skipped (needs at least 2 images)"
    elif not args.no_fid:
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

    print(f"maskgit demo: inpainted {summary['images']} test images (T={settings.steps} {settings.schedule}, "
          f"seed {settings.seed}) on {summary['device']}")
    print(f"  wall time {summary['seconds']:.1f} s, {summary['images_per_second']:.1f} images/s")
    print(f"  FID vs ground truth: {fid_text}")
    print(f"  outputs: {out}/  gallery: {gallery}")
    return 0
