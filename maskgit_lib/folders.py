"""Folders in, folders out: inpaint a lab-layout folder, write samples and outpaintings as PNGs.

The tensor API is :class:`maskgit_lib.inpaint.Inpainter`; this module adds the file
side around it, the way the ``maskgit inpaint`` / ``generate`` / ``outpaint`` commands
(and notebook 06) use it:

- :func:`inpaint_folder`: ``image_NNN.png`` + ``mask_NNN.png`` (0 = missing,
  255 = known) -> ``out_dir/image_NNN.png``, optionally every decoding step.
- :func:`generate_folder`, :func:`outpaint_folder`: samples and outpaintings.

Every pair is loaded and checked before any sampling. Output folders follow
:mod:`maskgit_lib.outputs` (never an input or a dataset, never someone else's
files without ``overwrite``, locked while writing, every PNG written atomically).
Batch k of a folder is seeded with :func:`maskgit_lib.inpaint.batch_seed` ``(seed, k)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import InpaintFolder, from_uint8, list_images, load_image, save_image, to_uint8
from .decoding import check_steps_fit
from .errors import ConfigError, DataError
from .inpaint import Inpainter, InpaintResult, InpaintSettings, batch_seed
from .masking import token_to_pixel_mask
from .outputs import claim_output_dir, exclusive_lock, prepare_output_dir, save_png
from .pil_io import View, check_mask_convention, load_pair_view, view_batch
from .runtime import progress_bar
from .viz import image_grid

logger = logging.getLogger(__name__)


def inpaint_folder(inpainter: Inpainter, images_dir: str | os.PathLike, masks_dir: str | os.PathLike,
                   out_dir: str | os.PathLike, settings: InpaintSettings | None = None, batch_size: int = 64,
                   save_trace: bool = False, threshold: bool = False, limit: int | None = None,
                   progress: bool = True, overwrite: bool = False, mask_convention: str = "lab",
                   size: int | str | None = None) -> dict:
    """Inpaint a lab-layout folder (``image_NNN.png`` + ``mask_NNN.png``) into ``out_dir``.

    Every pair is loaded and checked before any sampling (a missing mask, a
    size mismatch or a non-binary mask stops the run early with a
    :class:`DataError` naming the file). Outputs are ``out_dir/<image stem>.png``;
    images whose mask is empty are copied through. With ``save_trace``,
    ``out_dir/trace/<stem>_stepTT.png`` holds the (composited) prediction after
    step TT = 01..T and ``<stem>_latentTT.png`` the 16x16 token mask after it
    (TT = 00: the initial one), upscaled to S x S, 0 = hidden, 255 = known.

    Args:
        images_dir: masked images. masks_dir: masks (0 = missing, 255 = known).
        out_dir: created if needed; must not be, or contain, an input folder, lie in
            a dataset, or hold files not written by an earlier ``inpaint`` (see
            :func:`maskgit_lib.outputs.prepare_output_dir`); locked while writing.
        settings: sampler settings. batch_size: images per batch (seeded by
            :func:`batch_seed`). save_trace: write the per-step files.
        threshold: accept non-binary masks (values < 128 = missing).
        limit: only the first ``limit`` pairs. progress: show a tqdm bar.
        overwrite: write into a non-empty folder that another program filled.
        mask_convention: "lab" (0 = missing, 255 = known) or "white_is_hole" (255 = hole).
        size: output size. None or the model's S: S x S, as the model saw the inputs (the
            benchmark's and demo's outputs); "input": each output at its input's own size, only
            the missing pixels changed (:mod:`maskgit_lib.pil_io`; byte-identical to S for S x S
            inputs); an integer N: the S x S output resized to N x N. Trace files stay S x S.

    Returns:
        Summary dict: images, inpainted, copied (names with an empty mask),
        out_dir, trace_dir, seconds, images_per_second, missing_pixel_fraction,
        masked_token_fraction, batch_size, device, settings.
    """
    settings = settings or InpaintSettings()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    check_steps_fit(settings.steps, inpainter.transformer.cfg.num_tokens)  # before any folder is made
    check_mask_convention(mask_convention)
    size = output_size(size, inpainter.image_size)
    out = prepare_output_dir(out_dir, images_dir, masks_dir, command="inpaint", overwrite=overwrite)
    views = None
    if size == "input":
        names, views = load_pair_views(images_dir, masks_dir, threshold, limit, inpainter.image_size,
                                       mask_convention)
        images, pixel_missing = view_batch(views)
        images_u8 = to_uint8(images)
    else:
        names, images_u8, pixel_missing = load_pairs(images_dir, masks_dir, threshold, limit, inpainter.image_size,
                                                     mask_convention)
    with exclusive_lock(claim_output_dir(out, "inpaint"), "inpaint"):
        summary = _inpaint_pairs(inpainter, names, images_u8, pixel_missing, out, settings, batch_size, save_trace,
                                 progress, views, size)
    return {**summary, "size": size or inpainter.image_size, "mask_convention": mask_convention}


def output_size(size: int | str | None, model_size: int) -> int | str | None:
    """Normalize ``inpaint_folder``'s ``size``: None (the model's S x S), "input" or an integer side N != S."""
    if size is None or size == model_size or size == str(model_size):
        return None
    if size == "input":
        return size
    if isinstance(size, str) and size.isdecimal():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"size must be 'input' (each output at its input's size) or a side in pixels >= 1, "
                          f"got {size!r}")
    return size

def _inpaint_pairs(inpainter: Inpainter, names: list[str], images_u8: torch.Tensor, pixel_missing: torch.Tensor, out: Path,
                   settings: InpaintSettings, batch_size: int, save_trace: bool, progress: bool,
                   views: list[View] | None = None, size: int | str | None = None) -> dict:
    """The batch loop of :meth:`inpaint_folder` (``out`` is locked)."""
    copied = [n for n, m in zip(names, pixel_missing) if not bool(m.any())]
    if copied:
        logger.warning("%d image(s) have an empty mask (nothing to inpaint) and are copied through: %s",
                       len(copied), ", ".join(copied[:5]) + (", ..." if len(copied) > 5 else ""))
    trace_dir = out / "trace" if save_trace else None
    token_frac = []
    start = time.perf_counter()
    with progress_bar(len(names), "inpaint", progress, unit="img", leave=False) as bar:
        for k, lo in enumerate(range(0, len(names), batch_size)):
            batch = slice(lo, lo + batch_size)
            images = from_uint8(images_u8[batch])  # (b, 3, S, S)
            gen = torch.Generator(inpainter.device).manual_seed(batch_seed(settings.seed, k))
            result = inpainter.inpaint(images, pixel_missing[batch], settings, gen, keep_trace=save_trace)
            token_frac.append(result.is_masked0.float().mean(1).cpu())
            _write_outputs(result.images, names[batch], out, views[batch] if views else None, size, settings)
            if trace_dir is not None:
                _save_trace(inpainter, trace_dir, names[batch], result, images, settings)
            bar.update(len(result.images))
    if inpainter.device.type == "cuda":
        torch.cuda.synchronize(inpainter.device)
    seconds = time.perf_counter() - start
    return {
        "images": len(names), "inpainted": len(names) - len(copied), "copied": copied,
        "out_dir": str(out), "trace_dir": str(trace_dir) if trace_dir else None,
        "seconds": seconds, "images_per_second": len(names) / max(seconds, 1e-9),
        "missing_pixel_fraction": float(pixel_missing.float().mean()),
        "masked_token_fraction": float(torch.cat(token_frac).mean()),
        "batch_size": batch_size, "device": str(inpainter.device), "settings": dataclasses.asdict(settings),
    }

def _save_trace(inpainter: Inpainter, trace_dir: Path, names: list[str], result: InpaintResult, images: torch.Tensor,
                settings: InpaintSettings) -> None:
    """Write ``<stem>_stepTT.png`` and ``<stem>_latentTT.png`` for every step of ``result.trace``."""
    trace = result.trace
    frames = inpainter.decode_trace_images(trace, images=images if settings.composite else None,
                                      pixel_missing=result.pixel_missing, blend=settings.blend)  # (T, b, 3, S, S)
    frames[settings.stop_step - 1] = result.images  # exactly the saved output (batching can move a value by 1)
    grid = inpainter.image_size // inpainter.factor
    hidden = torch.cat([trace.initial_is_masked[None], trace.is_masked])  # (T+1, b, L)
    latents = token_to_pixel_mask(hidden.flatten(0, 1), grid, inpainter.factor).reshape(
        len(hidden), len(names), inpainter.image_size, inpainter.image_size)  # (T+1, b, S, S)
    latents_u8 = ((~latents).to(torch.uint8) * 255).cpu().numpy()
    for t, step_frames in enumerate(frames, start=1):
        _save_images(step_frames, [f"{n}_step{t:02d}" for n in names], trace_dir)
    for t in range(len(hidden)):
        for i, name in enumerate(names):
            save_png(latents_u8[t, i], trace_dir / f"{name}_latent{t:02d}.png")




def _write_outputs(images: torch.Tensor, names: list[str], folder: Path, views: list[View] | None,
                   size: int | str | None, settings: InpaintSettings) -> None:
    """Write float (b, 3, S, S) outputs as ``folder/<name>.png``: S x S, at the inputs' sizes, or N x N."""
    if views is None and size is None:
        return _save_images(images, names, folder)
    for i, (image, name) in enumerate(zip(images.cpu(), names)):
        if views is not None:
            pil = views[i].paste(image, settings.composite)  # the input's size, known pixels unchanged
        else:
            pil = Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy(), "RGB").resize(
                (size, size), Image.Resampling.LANCZOS)
        save_png(np.asarray(pil), folder / f"{name}.png")


def load_pair_views(images_dir: str | os.PathLike, masks_dir: str | os.PathLike, threshold: bool = False,
                    limit: int | None = None, size: int = 64,
                    mask_convention: str = "lab") -> tuple[list[str], list[View]]:
    """Like :func:`load_pairs`, but keeps each pair at its own size (:class:`maskgit_lib.pil_io.View`)."""
    folder = InpaintFolder(images_dir, masks_dir, size=size, threshold=threshold, mask_convention=mask_convention)
    pairs = folder.pairs if limit is None else folder.pairs[:max(int(limit), 0)]
    if not pairs:
        raise DataError(f"no image to inpaint in {images_dir} (limit={limit}).")
    return ([image.stem for image, _ in pairs],
            [load_pair_view(image, mask, threshold, mask_convention, size) for image, mask in pairs])


def load_pairs(images_dir: str | os.PathLike, masks_dir: str | os.PathLike, threshold: bool = False,
               limit: int | None = None, size: int = 64,
               mask_convention: str = "lab") -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Load and check every (image, mask) pair of a lab-layout folder up front.

    Returns:
        ``(names, images_u8, pixel_missing)``: image stems, uint8 (N, 3, size, size)
        and bool (N, size, size) (True = missing).

    Raises:
        DataError: from :class:`maskgit_lib.data.InpaintFolder`, naming the file.
    """
    folder = InpaintFolder(images_dir, masks_dir, size=size, threshold=threshold, mask_convention=mask_convention)
    if limit is not None:
        folder.pairs = folder.pairs[:max(int(limit), 0)]
    names, images, masks = [], [], []
    for name, image, missing in folder:
        names.append(name)
        images.append(to_uint8(image))
        masks.append(missing)
    if not names:
        raise DataError(f"no image to inpaint in {images_dir} (limit={limit}).")
    return names, torch.stack(images), torch.stack(masks)


def _save_images(images: torch.Tensor, names: list[str], folder: Path) -> None:
    """Write float (b, 3, S, S) images as ``folder/<name>.png``."""
    for image, name in zip(images.cpu(), names):
        save_image(image, folder / f"{name}.png")


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> Path:
    """Save float (N, 3, S, S) images in [-1, 1] as one grid PNG (2-pixel white gaps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, ncols=nrow)).save(path)
    return path


def grid_path_for(out_dir: str | os.PathLike) -> Path:
    """The grid PNG written beside ``out_dir``: ``<out_dir>_grid.png`` (keeps ``out_dir`` FID-clean)."""
    out = Path(out_dir).expanduser().resolve()
    return out.with_name(out.name + "_grid.png")


def generate_folder(inpainter: Inpainter, out_dir: str | os.PathLike, n: int = 16,
                    settings: InpaintSettings | None = None, batch_size: int = 64, progress: bool = True,
                    overwrite: bool = False) -> dict:
    """Write ``n`` unconditional samples ``sample_NNN.png`` and a grid ``<out_dir>_grid.png``.

    ``out_dir`` follows :func:`maskgit_lib.outputs.prepare_output_dir` (``overwrite``
    accepts a folder another program filled) and is locked while writing.
    Batch k is seeded with :func:`batch_seed`. Returns a summary dict (images, out_dir, grid, seconds).
    """
    settings = settings or InpaintSettings()
    check_steps_fit(settings.steps, inpainter.transformer.cfg.num_tokens)
    out = prepare_output_dir(out_dir, command="generate", overwrite=overwrite)
    with exclusive_lock(claim_output_dir(out, "generate"), "generate"):
        return _generate_into(inpainter, out, n, settings, batch_size, progress)


def _generate_into(inpainter: Inpainter, out: Path, n: int, settings: InpaintSettings, batch_size: int,
                   progress: bool) -> dict:
    samples, start = [], time.perf_counter()
    with progress_bar(n, "generate", progress, unit="img", leave=False) as bar:
        for k, lo in enumerate(range(0, n, batch_size)):
            gen = torch.Generator(inpainter.device).manual_seed(batch_seed(settings.seed, k))
            images = inpainter.generate(min(batch_size, n - lo), settings, gen).images.cpu()
            _save_images(images, [f"sample_{i:03d}" for i in range(lo, lo + len(images))], out)
            samples.append(images[:max(64 - lo, 0)])
            bar.update(len(images))
    grid = save_grid(torch.cat(samples), grid_path_for(out))
    seconds = time.perf_counter() - start
    return {"images": n, "out_dir": str(out), "grid": str(grid), "seconds": seconds,
            "images_per_second": n / max(seconds, 1e-9), "settings": dataclasses.asdict(settings)}


def outpaint_folder(inpainter: Inpainter, images_dir: str | os.PathLike, out_dir: str | os.PathLike,
                    settings: InpaintSettings | None = None, keep: float = 0.5, batch_size: int = 64,
                    limit: int | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Outpaint every image of a folder (any size, see :func:`maskgit_lib.data.load_image`).

    Keeps a centred square of side ``round(S * keep)``; outputs ``out_dir/<stem>.png``
    (checked and locked as in :func:`generate_folder`).
    Batch k is seeded with :func:`batch_seed`. Returns a summary dict.
    """
    settings = settings or InpaintSettings()
    check_steps_fit(settings.steps, inpainter.transformer.cfg.num_tokens)
    out = prepare_output_dir(out_dir, images_dir, command="outpaint", overwrite=overwrite)
    files = list_images(images_dir)[:limit]
    images = torch.stack([load_image(f, inpainter.image_size) for f in files])  # (N, 3, S, S)
    with exclusive_lock(claim_output_dir(out, "outpaint"), "outpaint"):
        return _outpaint_into(inpainter, files, images, out, settings, keep, batch_size, progress)


def _outpaint_into(inpainter: Inpainter, files: list[Path], images: torch.Tensor, out: Path,
                   settings: InpaintSettings, keep: float, batch_size: int, progress: bool) -> dict:
    start = time.perf_counter()
    with progress_bar(len(files), "outpaint", progress, unit="img", leave=False) as bar:
        for k, lo in enumerate(range(0, len(files), batch_size)):
            gen = torch.Generator(inpainter.device).manual_seed(batch_seed(settings.seed, k))
            result = inpainter.outpaint(images[lo:lo + batch_size], settings, keep, gen)
            _save_images(result.images, [f.stem for f in files[lo:lo + batch_size]], out)
            bar.update(len(result.images))
    seconds = time.perf_counter() - start
    return {"images": len(files), "out_dir": str(out), "seconds": seconds, "keep": keep,
            "images_per_second": len(files) / max(seconds, 1e-9), "settings": dataclasses.asdict(settings)}
