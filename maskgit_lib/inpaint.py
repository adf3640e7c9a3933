"""Inpainting, outpainting and unconditional generation with a trained MaskGIT.

One sampler serves all three tasks (DESIGN.md sections 2-3)::

    tokens    = VQGAN.encode(prefill(images, pixel_missing))   # (B, L); holes: gray (lab) or harmonic
    is_masked = pixel_to_token_mask(pixel_missing, f, dilate)  # hidden tokens become [MASK]
    trace     = iterative_decode(transformer, tokens, is_masked, T, schedule)
    raw       = VQGAN.decode(trace.tokens_at(s))               # sweet spot s <= T, one decode
    images    = blend(raw, input, pixel_missing)               # paste (lab) or poisson, in uint8 space

Generation hides every token; outpainting hides everything outside a centred box
(:func:`maskgit_lib.data_prep.border_mask`). Compositing (:mod:`maskgit_lib.blend`)
is done on 8-bit values, so every known pixel of a composited output is
byte-identical to the input after ``to_uint8``. Images with no missing pixel
are copied through, never decoded.

Determinism: :meth:`Inpainter.inpaint` with the same models, device, inputs
(same order and batch size), settings and seed returns bitwise identical
outputs on a CPU (GPU kernels may add tiny nondeterminism). Outputs do depend on
the batch composition: the images of one call share one random stream. The
folder commands seed batch k with :func:`batch_seed` ``(seed, k)`` (batch 0
uses ``seed`` itself, like a single call), so an image's output depends only on
the seed, the batch size, the device and the files of its batch.

CLI: ``maskgit inpaint`` / ``generate`` / ``outpaint`` (``add_*_arguments`` and
``run_*`` below; folder I/O in :meth:`Inpainter.inpaint_folder`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import paths
from .argtypes import int_at_least, seed_int
from .blend import composite, get_blend  # noqa: F401  (composite: re-exported, its old home)
from .data import from_uint8, to_uint8
from .decoding import DecodeTrace, check_steps_fit, iterative_decode
from .errors import CheckpointError, ConfigError, DataError
from .masking import get_schedule, pixel_to_token_mask
from .outputs import claim_output_dir, exclusive_lock, prepare_output_dir, save_png
from .prefill import get_prefill
from .training import derive_seed
from .transformer import MaskGITTransformer, load_transformer
from .vqgan import VQGAN, load_vqgan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InpaintSettings:
    """How to sample; validated on construction (:class:`ConfigError` if unusable).

    Attributes:
        steps: T, total decoding steps (>= 1).
        schedule: mask schedule name (see :func:`maskgit_lib.masking.get_schedule`).
        sweet_spot: stop after step s (1 <= s <= T) and use that step's prediction;
            None means s = T.
        choice_temperature: Gumbel noise scale on the confidence (annealed).
        sampling_temperature: logits are divided by it (0 = argmax).
        confidence: "official" (log p of a sampled token) or "lab" (argmax probability).
        dilate: grow the hidden token region by this many tokens (official editing: 1).
        composite: put the known input pixels back over the decoded image (else: raw decode).
        blend: how the decoded holes meet the known pixels when compositing: "poisson"
            (seamless: a smooth correction matches the hole borders, default; see
            :mod:`maskgit_lib.blend`) or "paste" (the lab: plain paste).
        prefill: what the encoder sees in the holes: "harmonic" (a smooth fill from
            the hole borders, default; see :mod:`maskgit_lib.prefill`) or "gray" (the lab: 128).
        seed: seed of the random stream when no generator is given.
    """

    steps: int = 8
    schedule: str = "cosine"
    sweet_spot: int | None = None
    choice_temperature: float = 4.5
    sampling_temperature: float = 1.0
    confidence: str = "official"
    dilate: int = 0
    composite: bool = True
    prefill: str = "harmonic"
    blend: str = "poisson"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.sweet_spot is not None and (not isinstance(self.sweet_spot, int)
                                            or not 1 <= self.sweet_spot <= self.steps):
            raise ConfigError(f"sweet spot must be an integer in 1..steps (1..{self.steps}), got {self.sweet_spot!r}")
        get_schedule(self.schedule)  # ConfigError naming the valid schedules
        if self.confidence not in ("official", "lab"):
            raise ConfigError(f"confidence must be 'official' or 'lab', got {self.confidence!r}")
        get_prefill(self.prefill)  # ConfigError naming the choices
        get_blend(self.blend)
        if not isinstance(self.dilate, int) or self.dilate < 0:
            raise ConfigError(f"dilate must be an integer >= 0, got {self.dilate!r}")
        if self.choice_temperature < 0 or self.sampling_temperature < 0:
            raise ConfigError("choice_temperature and sampling_temperature must be >= 0")

    @property
    def stop_step(self) -> int:
        """The step whose prediction is returned: ``sweet_spot`` or ``steps``."""
        return self.sweet_spot if self.sweet_spot is not None else self.steps


@dataclass(frozen=True)
class InpaintResult:
    """What :meth:`Inpainter.inpaint` returns.

    Attributes:
        images: float32 (B, 3, S, S) in [-1, 1], on the 8-bit grid; composited
            (known pixels equal the input after ``to_uint8``) unless
            ``settings.composite`` is False, then equal to ``raw`` (quantized).
        raw: float32 (B, 3, S, S), the VQGAN decoding of the sweet-spot tokens
            (the input itself for images with nothing to inpaint).
        is_masked0: bool (B, L), the initial token mask (True = hidden).
        pixel_missing: bool (B, S, S), the pixel mask used (True = missing).
        decoded: bool (B,), False for images copied through (no missing pixel).
        trace: the full :class:`DecodeTrace` over all B rows when ``keep_trace``
            (copied-through rows stay known at every step), else None.
    """

    images: torch.Tensor
    raw: torch.Tensor
    is_masked0: torch.Tensor
    pixel_missing: torch.Tensor
    decoded: torch.Tensor
    trace: DecodeTrace | None = None


def batch_seed(seed: int, batch_index: int) -> int:
    """Seed of batch ``batch_index`` in the folder commands (batch 0 uses ``seed`` itself)."""
    return seed if batch_index == 0 else derive_seed(seed, "inpaint-batch", batch_index)


def missing_checkpoint_hint(kind: str, path: Path) -> str:
    """One sentence: which checkpoint is missing and the command that trains it (``kind``: VQGAN/Transformer)."""
    command, default = (("train-vqgan", paths.default_vqgan_checkpoint()) if kind == "VQGAN"
                        else ("train-transformer", paths.default_transformer_checkpoint()))
    flag = "--vqgan-checkpoint" if kind == "VQGAN" else "--transformer-checkpoint"
    order = "" if kind == "VQGAN" else " after the VQGAN"
    return (f"{kind} checkpoint {path} does not exist; train it{order} with "
            f"`maskgit {command} --preset cpu --export {default}` (see `maskgit {command} --help`), "
            f"or pass {flag} PATH.")


class Inpainter:
    """A VQGAN + transformer pair that inpaints, outpaints and generates.

    Args:
        vqgan: stage-1 tokenizer (put in eval mode).
        transformer: stage-2 model with the same K and L = grid_size**2 (eval mode).
        device: where to run; None = the VQGAN's device (the transformer is moved there).
        bf16: bfloat16 autocast for the transformer and the VQGAN decoder.

    Raises:
        CheckpointError: the two models do not fit together (codebook size or token count).
    """

    def __init__(self, vqgan: VQGAN, transformer: MaskGITTransformer, device: str | torch.device | None = None,
                 bf16: bool = False) -> None:
        vq, tf = vqgan.cfg, transformer.cfg
        if tf.codebook_size != vq.codebook_size or tf.num_tokens != vq.grid_size ** 2:
            raise CheckpointError(
                f"the transformer (codebook_size={tf.codebook_size}, num_tokens={tf.num_tokens}) does not fit "
                f"the VQGAN (codebook_size={vq.codebook_size}, {vq.grid_size}x{vq.grid_size} = "
                f"{vq.grid_size ** 2} tokens); train the transformer on this VQGAN's tokens")
        self.device = torch.device(device) if device is not None else next(vqgan.parameters()).device
        self.vqgan = vqgan.to(self.device).eval()
        self.transformer = transformer.to(self.device).eval()
        self.bf16 = bf16
        self.mask_token_id = tf.codebook_size  # K
        self.image_size, self.factor = vq.image_size, vq.downsample_factor
        self.decode_batch_size = 256

    @classmethod
    def from_checkpoints(cls, vqgan_path: str | os.PathLike | None = None,
                         transformer_path: str | os.PathLike | None = None,
                         device: str | torch.device | None = None, bf16: bool = False) -> "Inpainter":
        """Load both models (default: the shipped checkpoints in ``paths.checkpoints_dir()``).

        Args:
            vqgan_path: VQGAN ``*.safetensors``; None = ``paths.default_vqgan_checkpoint()``.
            transformer_path: transformer ``*.safetensors``; None = the default one.
            device: None or "auto" = CUDA if available else CPU.
            bf16: see :class:`Inpainter`.

        Raises:
            CheckpointError: a missing file (saying how to train it), a corrupt file,
                or models that do not fit together.
        """
        from .training import resolve_device

        dev = resolve_device("auto" if device is None else str(device))
        found = []
        for kind, path, default in (("VQGAN", vqgan_path, paths.default_vqgan_checkpoint()),
                                    ("Transformer", transformer_path, paths.default_transformer_checkpoint())):
            path = Path(path) if path is not None else default
            if not path.exists():
                raise CheckpointError(missing_checkpoint_hint(kind, path))
            found.append(path)
        return cls(load_vqgan(found[0], dev), load_transformer(found[1], dev), device=dev, bf16=bf16)

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.no_grad()
    def tokens_to_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Transformer logits without the mask class.

        Args:
            tokens: int64 (B, L), hidden positions = ``mask_token_id``.

        Returns:
            float32 (B, L, K).
        """
        with self._autocast():
            logits = self.transformer(tokens.to(self.device))  # (B, L, K)
        return logits.float()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, S, S) in [-1, 1] -> int64 (B, L) token ids (always fp32)."""
        return self.vqgan.encode_to_tokens(images.to(self.device).float()).flatten(1)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """int64 (N, L) ids -> float32 (N, 3, S, S) in [-1, 1], in chunks of ``decode_batch_size``."""
        out = []
        for chunk in tokens.to(self.device).split(self.decode_batch_size):
            with self._autocast():
                out.append(self.vqgan.decode_tokens(chunk).float())
        return torch.cat(out) if out else torch.empty(0, 3, self.image_size, self.image_size, device=self.device)

    def _check(self, images: torch.Tensor, pixel_missing: torch.Tensor) -> None:
        s = self.image_size
        if images.dim() != 4 or images.shape[1:] != (3, s, s) or not images.is_floating_point():
            raise DataError(f"images must be float (B, 3, {s}, {s}) in [-1, 1], got {images.dtype} "
                            f"{tuple(images.shape)}")
        if pixel_missing.dtype != torch.bool or pixel_missing.shape != (images.shape[0], s, s):
            raise DataError(f"pixel_missing must be bool ({images.shape[0]}, {s}, {s}) (True = missing), "
                            f"got {pixel_missing.dtype} {tuple(pixel_missing.shape)}")

    def _generator(self, settings: InpaintSettings, generator: torch.Generator | None) -> torch.Generator:
        return generator if generator is not None else torch.Generator(self.device).manual_seed(settings.seed)

    def _decode_trace(self, tokens: torch.Tensor, is_masked: torch.Tensor, settings: InpaintSettings,
                      generator: torch.Generator) -> DecodeTrace:
        check_steps_fit(settings.steps, tokens.shape[1])  # ConfigError: more steps than tokens
        return iterative_decode(
            self.tokens_to_logits, tokens, is_masked, steps=settings.steps, schedule=settings.schedule,
            choice_temperature=settings.choice_temperature, sampling_temperature=settings.sampling_temperature,
            generator=generator, confidence=settings.confidence, mask_token_id=self.mask_token_id)

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, pixel_missing: torch.Tensor, settings: InpaintSettings | None = None,
                generator: torch.Generator | None = None, keep_trace: bool = False) -> InpaintResult:
        """Fill the missing pixels of each image.

        Args:
            images: float (B, 3, S, S) in [-1, 1]; pixels in the holes are ignored.
            pixel_missing: bool (B, S, S), True = missing pixel. An all-True mask is
                generation; an all-False one copies the image through (logged).
            settings: sampler settings (default :class:`InpaintSettings`).
            generator: random stream; None = ``torch.Generator(device)`` seeded with
                ``settings.seed``.
            keep_trace: return the per-step :class:`DecodeTrace` (B rows).

        Returns:
            An :class:`InpaintResult` on ``self.device``.
        """
        settings = settings or InpaintSettings()
        self._check(images, pixel_missing)
        images, pixel_missing = images.to(self.device).float(), pixel_missing.to(self.device)
        is_masked0 = pixel_to_token_mask(pixel_missing, factor=self.factor, dilate=settings.dilate)  # (B, L)
        decoded = pixel_missing.flatten(1).any(1)  # (B,)
        rows = decoded.nonzero().flatten()  # (B',)
        if len(rows) < len(decoded):
            logger.info("%d of %d image(s) have no missing pixel: copied through unchanged",
                        len(decoded) - len(rows), len(decoded))
        tokens = self.encode(get_prefill(settings.prefill)(images, pixel_missing))  # (B, L)
        raw = images.clone()  # (B, 3, S, S)
        trace = None
        if len(rows):
            trace = self._decode_trace(tokens[rows], is_masked0[rows], settings, self._generator(settings, generator))
            raw[rows] = self.decode(trace.tokens_at(settings.stop_step))  # one VQGAN decode
        if settings.composite:
            out = get_blend(settings.blend)(raw, images, pixel_missing)  # (B, 3, S, S) on the 8-bit grid
        else:
            out = from_uint8(to_uint8(raw))
        out[~decoded] = from_uint8(to_uint8(images[~decoded]))  # copied through
        if keep_trace:
            trace = _full_trace(trace, rows, tokens, is_masked0, settings, self.mask_token_id)
        return InpaintResult(out, raw, is_masked0, pixel_missing, decoded, trace if keep_trace else None)

    def outpaint(self, images: torch.Tensor, settings: InpaintSettings | None = None, keep: float = 0.5,
                 generator: torch.Generator | None = None, keep_trace: bool = False) -> InpaintResult:
        """Keep a centred square of side ``round(S * keep)`` and generate the rest (see :meth:`inpaint`)."""
        from .data_prep import border_mask

        if not 0.0 < keep < 1.0:
            raise ConfigError(f"keep must be a fraction in (0, 1), got {keep!r}")
        pixel_missing = border_mask(self.image_size, keep).expand(images.shape[0], -1, -1)  # (B, S, S)
        return self.inpaint(images, pixel_missing, settings, generator, keep_trace)

    @torch.no_grad()
    def generate(self, n: int, settings: InpaintSettings | None = None, generator: torch.Generator | None = None,
                 keep_trace: bool = False) -> InpaintResult:
        """Unconditional samples: every token hidden.

        Args:
            n: number of images (one batch).
            settings: sampler settings (``composite`` and ``dilate`` have no effect).
            generator: random stream; None = seeded with ``settings.seed``.
            keep_trace: keep the per-step trace.

        Returns:
            An :class:`InpaintResult` whose ``images`` (n, 3, S, S) are the samples.
        """
        settings = settings or InpaintSettings()
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        length, s = (self.image_size // self.factor) ** 2, self.image_size
        is_masked0 = torch.ones(n, length, dtype=torch.bool, device=self.device)  # (n, L)
        tokens = torch.full((n, length), self.mask_token_id, dtype=torch.long, device=self.device)  # (n, L)
        trace = self._decode_trace(tokens, is_masked0, settings, self._generator(settings, generator))
        raw = self.decode(trace.tokens_at(settings.stop_step))  # (n, 3, S, S)
        pixel_missing = torch.ones(n, s, s, dtype=torch.bool, device=self.device)
        decoded = torch.ones(n, dtype=torch.bool, device=self.device)
        return InpaintResult(from_uint8(to_uint8(raw)), raw, is_masked0, pixel_missing, decoded,
                             trace if keep_trace else None)

    def decode_trace_images(self, trace: DecodeTrace, steps: list[int] | None = None,
                            images: torch.Tensor | None = None,
                            pixel_missing: torch.Tensor | None = None, blend: str = "poisson") -> torch.Tensor:
        """Decode the prediction after chosen steps, for figures (one batched VQGAN pass).

        Args:
            trace: a trace with B rows (e.g. ``InpaintResult.trace``).
            steps: steps to show (each in start_step+1..T); None = all.
            images: optional inputs float (B, 3, S, S); with ``pixel_missing``
                the frames are composited like the final output.
            pixel_missing: optional bool (B, S, S).
            blend: compositing of the frames (:data:`maskgit_lib.blend.BLENDS`).

        Returns:
            float32 (len(steps), B, 3, S, S) in [-1, 1]. The frame of the sweet-spot
            step can differ from ``InpaintResult.images`` by one 8-bit level in a
            few pixels: float rounding in the VQGAN decoder depends on the batch size.
        """
        steps = list(steps) if steps is not None else list(range(trace.start_step + 1, trace.steps + 1))
        tokens = torch.stack([trace.tokens_at(s) for s in steps])  # (N, B, L)
        n, b, length = tokens.shape
        frames = self.decode(tokens.reshape(n * b, length))  # (N*B, 3, S, S)
        if images is not None and pixel_missing is not None:
            frames = get_blend(blend)(frames, images.repeat(n, 1, 1, 1),
                                      pixel_missing.to(self.device).repeat(n, 1, 1))
        return frames.reshape(n, b, *frames.shape[1:])

    def inpaint_folder(self, images_dir: str | os.PathLike, masks_dir: str | os.PathLike,
                       out_dir: str | os.PathLike, settings: InpaintSettings | None = None, batch_size: int = 64,
                       save_trace: bool = False, threshold: bool = False, limit: int | None = None,
                       progress: bool = True, overwrite: bool = False) -> dict:
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

        Returns:
            Summary dict: images, inpainted, copied (names with an empty mask),
            out_dir, trace_dir, seconds, images_per_second, missing_pixel_fraction,
            masked_token_fraction, batch_size, device, settings.
        """
        settings = settings or InpaintSettings()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        check_steps_fit(settings.steps, self.transformer.cfg.num_tokens)  # before any folder is made
        out = prepare_output_dir(out_dir, images_dir, masks_dir, command="inpaint", overwrite=overwrite)
        names, images_u8, pixel_missing = load_pairs(images_dir, masks_dir, threshold, limit, self.image_size)
        with exclusive_lock(claim_output_dir(out, "inpaint"), "inpaint"):
            return self._inpaint_pairs(names, images_u8, pixel_missing, out, settings, batch_size, save_trace,
                                       progress)

    def _inpaint_pairs(self, names: list[str], images_u8: torch.Tensor, pixel_missing: torch.Tensor, out: Path,
                       settings: InpaintSettings, batch_size: int, save_trace: bool, progress: bool) -> dict:
        """The batch loop of :meth:`inpaint_folder` (``out`` is locked)."""
        copied = [n for n, m in zip(names, pixel_missing) if not bool(m.any())]
        if copied:
            logger.warning("%d image(s) have an empty mask (nothing to inpaint) and are copied through: %s",
                           len(copied), ", ".join(copied[:5]) + (", ..." if len(copied) > 5 else ""))
        trace_dir = out / "trace" if save_trace else None
        token_frac = []
        start = time.perf_counter()
        with _progress(len(names), "inpaint", progress) as bar:
            for k, lo in enumerate(range(0, len(names), batch_size)):
                batch = slice(lo, lo + batch_size)
                images = from_uint8(images_u8[batch])  # (b, 3, S, S)
                gen = torch.Generator(self.device).manual_seed(batch_seed(settings.seed, k))
                result = self.inpaint(images, pixel_missing[batch], settings, gen, keep_trace=save_trace)
                token_frac.append(result.is_masked0.float().mean(1).cpu())
                _save_images(result.images, names[batch], out)
                if trace_dir is not None:
                    self._save_trace(trace_dir, names[batch], result, images, settings)
                bar.update(len(result.images))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        return {
            "images": len(names), "inpainted": len(names) - len(copied), "copied": copied,
            "out_dir": str(out), "trace_dir": str(trace_dir) if trace_dir else None,
            "seconds": seconds, "images_per_second": len(names) / max(seconds, 1e-9),
            "missing_pixel_fraction": float(pixel_missing.float().mean()),
            "masked_token_fraction": float(torch.cat(token_frac).mean()),
            "batch_size": batch_size, "device": str(self.device), "settings": dataclasses.asdict(settings),
        }

    def _save_trace(self, trace_dir: Path, names: list[str], result: InpaintResult, images: torch.Tensor,
                    settings: InpaintSettings) -> None:
        """Write ``<stem>_stepTT.png`` and ``<stem>_latentTT.png`` for every step of ``result.trace``."""
        from .masking import token_to_pixel_mask

        trace = result.trace
        frames = self.decode_trace_images(trace, images=images if settings.composite else None,
                                          pixel_missing=result.pixel_missing, blend=settings.blend)  # (T, b, 3, S, S)
        frames[settings.stop_step - 1] = result.images  # exactly the saved output (batching can move a value by 1)
        grid = self.image_size // self.factor
        hidden = torch.cat([trace.initial_is_masked[None], trace.is_masked])  # (T+1, b, L)
        latents = token_to_pixel_mask(hidden.flatten(0, 1), grid, self.factor).reshape(
            len(hidden), len(names), self.image_size, self.image_size)  # (T+1, b, S, S)
        latents_u8 = ((~latents).to(torch.uint8) * 255).cpu().numpy()
        for t, step_frames in enumerate(frames, start=1):
            _save_images(step_frames, [f"{n}_step{t:02d}" for n in names], trace_dir)
        for t in range(len(hidden)):
            for i, name in enumerate(names):
                save_png(latents_u8[t, i], trace_dir / f"{name}_latent{t:02d}.png")


def _full_trace(trace: DecodeTrace | None, rows: torch.Tensor, tokens: torch.Tensor, is_masked0: torch.Tensor,
                settings: InpaintSettings, mask_token_id: int) -> DecodeTrace:
    """Widen a trace of the decoded ``rows`` to all B rows; other rows stay known at every step."""
    b = tokens.shape[0]
    if trace is not None and len(rows) == b:
        return trace
    steps = settings.steps
    full_tokens = tokens[None].repeat(steps, 1, 1)  # (T, B, L)
    is_masked = torch.zeros_like(full_tokens, dtype=torch.bool)  # (T, B, L)
    predicted = full_tokens.clone()  # (T, B, L)
    confidence = torch.full(full_tokens.shape, float("inf"), device=tokens.device)  # (T, B, L)
    initial_tokens = torch.where(is_masked0, mask_token_id, tokens)  # (B, L)
    if trace is not None:
        full_tokens[:, rows], is_masked[:, rows] = trace.tokens, trace.is_masked
        predicted[:, rows], confidence[:, rows] = trace.predicted, trace.confidence
    return DecodeTrace(tokens=full_tokens, is_masked=is_masked, predicted=predicted, confidence=confidence,
                       initial_tokens=initial_tokens, initial_is_masked=is_masked0.clone(), steps=steps,
                       start_step=0, schedule=settings.schedule, mask_token_id=mask_token_id,
                       confidence_kind=settings.confidence)


def settings_from_args(args: argparse.Namespace) -> InpaintSettings:
    """Build :class:`InpaintSettings` from parsed CLI arguments (fields absent from ``args`` keep defaults)."""
    fields = {f.name for f in dataclasses.fields(InpaintSettings)}
    return InpaintSettings(**{k: v for k, v in vars(args).items() if k in fields})


def load_pairs(images_dir: str | os.PathLike, masks_dir: str | os.PathLike, threshold: bool = False,
               limit: int | None = None, size: int = 64) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Load and check every (image, mask) pair of a lab-layout folder up front.

    Returns:
        ``(names, images_u8, pixel_missing)``: image stems, uint8 (N, 3, size, size)
        and bool (N, size, size) (True = missing).

    Raises:
        DataError: from :class:`maskgit_lib.data.InpaintFolder`, naming the file.
    """
    from .data import InpaintFolder

    folder = InpaintFolder(images_dir, masks_dir, size=size, threshold=threshold)
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
    from .data import save_image

    for image, name in zip(images.cpu(), names):
        save_image(image, folder / f"{name}.png")


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> Path:
    """Save float (N, 3, S, S) images in [-1, 1] as one grid PNG (2-pixel white gaps)."""
    from PIL import Image

    from .viz import image_grid

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
    with _progress(n, "generate", progress) as bar:
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
    from .data import list_images, load_image

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
    with _progress(len(files), "outpaint", progress) as bar:
        for k, lo in enumerate(range(0, len(files), batch_size)):
            gen = torch.Generator(inpainter.device).manual_seed(batch_seed(settings.seed, k))
            result = inpainter.outpaint(images[lo:lo + batch_size], settings, keep, gen)
            _save_images(result.images, [f.stem for f in files[lo:lo + batch_size]], out)
            bar.update(len(result.images))
    seconds = time.perf_counter() - start
    return {"images": len(files), "out_dir": str(out), "seconds": seconds, "keep": keep,
            "images_per_second": len(files) / max(seconds, 1e-9), "settings": dataclasses.asdict(settings)}


# ---------------------------------------------------------------- command line


def _float_at_least_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text}")
    return value


def schedule_arg(text: str) -> str:
    """An argparse type: a schedule name that :func:`~maskgit_lib.masking.get_schedule` knows."""
    try:
        get_schedule(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_sampler_arguments(parser: argparse.ArgumentParser, batch_size: int = 64) -> None:
    """Sampler and model flags shared by ``inpaint``, ``generate``, ``outpaint`` and ``demo``."""
    g = parser.add_argument_group("sampler")
    g.add_argument("--steps", type=int_at_least(1), default=8, metavar="T", help="T, decoding steps (default 8)")
    g.add_argument("--schedule", type=schedule_arg, default="cosine", metavar="NAME",
                   help="mask schedule: linear, cosine, square, cubic, sqrt, log, exp, arccos, pow<p> (default cosine)")
    g.add_argument("--sweet-spot", type=int_at_least(1), default=None, metavar="S",
                   help="stop after step S <= T and keep that image (default: T)")
    g.add_argument("--seed", type=seed_int, default=0, metavar="N", help="random seed (default 0)")
    g.add_argument("--confidence", choices=("official", "lab"), default="official",
                   help="official: log p of a sampled token; lab: argmax probability (the lab's defect)")
    g.add_argument("--choice-temperature", type=_float_at_least_zero, default=4.5, metavar="C",
                   help="Gumbel noise on the confidence, annealed (default 4.5)")
    g.add_argument("--temperature", dest="sampling_temperature", type=_float_at_least_zero, default=1.0,
                   metavar="TAU",
                   help="sampling temperature, 0 = argmax (default 1.0)")
    g.add_argument("--prefill", choices=("harmonic", "gray"), default="harmonic",
                   help="what the tokenizer sees in the holes: a smooth fill from the hole borders (default) "
                        "or the lab's gray 128")
    g.add_argument("--blend", choices=("poisson", "paste"), default="poisson",
                   help="how the decoded holes meet the known pixels: seamless Poisson blending (default) "
                        "or the lab's plain paste")
    g.add_argument("--batch-size", type=int_at_least(1), default=batch_size, metavar="N", help=f"default {batch_size}")
    m = parser.add_argument_group("models")
    m.add_argument("--device", default="auto", metavar="DEV", help="auto (CUDA if available), cpu, cuda, cuda:N")
    m.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or CUDA)")
    m.add_argument("--vqgan-checkpoint", type=Path, default=None, metavar="PATH",
                   help=f"default: {paths.default_vqgan_checkpoint()}")
    m.add_argument("--transformer-checkpoint", type=Path, default=None, metavar="PATH",
                   help=f"default: {paths.default_transformer_checkpoint()}")


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: write into a non-empty --out folder that this command did not fill."""
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out folder even if it holds files this command did not "
                             "write (never into an input or a dataset folder)")


def _inpainter(args: argparse.Namespace) -> Inpainter:
    return Inpainter.from_checkpoints(args.vqgan_checkpoint, args.transformer_checkpoint, args.device, args.bf16)


def _report(verb: str, summary: dict, settings: InpaintSettings) -> None:
    print(f"{verb} {summary['images']} image(s) into {summary['out_dir']} in {summary['seconds']:.1f} s "
          f"({summary['images_per_second']:.1f} images/s; T={settings.steps} {settings.schedule}, "
          f"stop after step {settings.stop_step}, seed {settings.seed})")


def add_inpaint_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``maskgit inpaint``."""
    parser.add_argument("--images", type=Path, required=True, metavar="DIR", help="masked images (image_NNN.png)")
    parser.add_argument("--masks", type=Path, required=True, metavar="DIR",
                        help="masks (mask_NNN.png), 0 = missing, 255 = known")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created; never an input or dataset folder)")
    add_overwrite_argument(parser)
    parser.add_argument("--save-trace", action="store_true",
                        help="also write OUT/trace/<name>_stepTT.png and <name>_latentTT.png for every step")
    parser.add_argument("--dilate", type=int_at_least(0), default=0, metavar="N",
                        help="grow the token hole by N tokens")
    parser.add_argument("--no-composite", dest="composite", action="store_false",
                        help="keep the decoded image everywhere (known pixels are not pasted back)")
    parser.add_argument("--threshold", action="store_true", help="accept non-binary masks: values < 128 = missing")
    parser.add_argument("--limit", type=int_at_least(1), default=None, metavar="N", help="only the first N pairs")
    add_sampler_arguments(parser)


def run_inpaint(args: argparse.Namespace) -> int:
    """Run ``maskgit inpaint``; prints a one-line summary."""
    settings = settings_from_args(args)
    prepare_output_dir(args.out, args.images, args.masks, command="inpaint", overwrite=args.overwrite)
    summary = _inpainter(args).inpaint_folder(args.images, args.masks, args.out, settings, args.batch_size,
                                              args.save_trace, args.threshold, args.limit,
                                              overwrite=args.overwrite)
    _report("Inpainted", summary, settings)
    if summary["copied"]:
        print(f"{len(summary['copied'])} image(s) had an empty mask and were copied through unchanged")
    return 0


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``maskgit generate``."""
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder; the grid goes to <DIR>_grid.png")
    add_overwrite_argument(parser)
    parser.add_argument("--n", type=int_at_least(1), default=16, metavar="N", help="number of samples (default 16)")
    add_sampler_arguments(parser)


def run_generate(args: argparse.Namespace) -> int:
    """Run ``maskgit generate``; prints a one-line summary."""
    settings = settings_from_args(args)
    prepare_output_dir(args.out, command="generate", overwrite=args.overwrite)
    summary = generate_folder(_inpainter(args), args.out, args.n, settings, args.batch_size,
                              overwrite=args.overwrite)
    _report("Generated", summary, settings)
    print(f"grid: {summary['grid']}")
    return 0


def add_outpaint_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``maskgit outpaint``."""
    parser.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder of images (any size)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created; never the input folder)")
    add_overwrite_argument(parser)
    parser.add_argument("--keep", type=_fraction, default=0.5, metavar="F",
                        help="side of the kept centred square, as a fraction of the image (default 0.5)")
    parser.add_argument("--limit", type=int_at_least(1), default=None, metavar="N", help="only the first N images")
    add_sampler_arguments(parser)


def run_outpaint(args: argparse.Namespace) -> int:
    """Run ``maskgit outpaint``; prints a one-line summary."""
    settings = settings_from_args(args)
    prepare_output_dir(args.out, args.images, command="outpaint", overwrite=args.overwrite)
    summary = outpaint_folder(_inpainter(args), args.images, args.out, settings, args.keep, args.batch_size,
                              args.limit, overwrite=args.overwrite)
    _report("Outpainted", summary, settings)
    return 0
