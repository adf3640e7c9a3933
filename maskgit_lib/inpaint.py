"""Inpainting, outpainting and unconditional generation with a trained MaskGIT.

Used from ``notebooks/04_iterative_decoding.ipynb`` on (section 2 onwards) and in ``notebooks/06_fid.ipynb``.

One sampler serves all three tasks (``docs/maskgit_algorithm.md``, ``docs/course_lab.md``)::

    tokens    = VQGAN.encode(prefill(images, pixel_missing))   # (B, L); holes: gray (lab) or harmonic
    is_masked = pixel_to_token_mask(pixel_missing, f, dilate)  # hidden tokens become [MASK]
    trace     = iterative_decode(transformer, tokens, is_masked, T, schedule)
    raw       = VQGAN.decode(trace.tokens_at(s))               # sweet spot s <= T, one decode
    images    = blend(raw, input, pixel_missing)               # paste (lab) or poisson, in uint8 space

Generation hides every token; outpainting hides everything outside a centred box
(:func:`maskgit_lib.masks.border_mask`). Compositing (:mod:`maskgit_lib.blend`)
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
``run_*`` in :mod:`maskgit_lib.cli.sample`; folder I/O in :mod:`maskgit_lib.folders`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import paths
from .blend import composite, get_blend  # noqa: F401  (composite: re-exported, its old home)
from .data import from_uint8, to_uint8
from .decoding import CONFIDENCE_KINDS, DecodeTrace, check_steps_fit, iterative_decode
from .errors import CheckpointError, ConfigError, DataError
from .masking import get_schedule, pixel_to_token_mask
from .masks import border_mask
from .pil_io import check_image_range, prepare_view, view_batch
from .prefill import get_prefill
from .runtime import derive_seed, resolve_device
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
        confidence: "lab" (default: the argmax token, ranked by its probability plus the
            annealed noise, the course lab's rule and the best the sampler study measured,
            ``results/sampler_study/README.md``), "official" (the paper's: log p of a
            sampled token) or "p" (a sampled token ranked by p); see :mod:`maskgit_lib.decoding`.
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
    confidence: str = "lab"
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
        if self.confidence not in CONFIDENCE_KINDS:
            raise ConfigError(f"confidence must be one of {', '.join(CONFIDENCE_KINDS)}, got {self.confidence!r}")
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
        check_image_range(images, pixel_missing)  # DataError for [0, 1] or [0, 255] floats
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

    def __call__(self, image, mask_image, *, mask_convention: str = "lab", generator: torch.Generator | None = None,
                 **settings):
        """Inpaint images as users hold them, diffusers-style: ``inpainter(image, mask)``.

        Decodes at the model's S x S and returns each image at its own size: only
        its missing pixels change, every known pixel is byte-identical to the input
        (RGBA inputs are composited onto white first; outputs are always RGB). The
        geometry (centre crop, or the whole image stretched when holes lie outside
        it) is described in :mod:`maskgit_lib.pil_io`.

        Args:
            image: PIL image, file path, uint8 numpy array (H, W), (H, W, 3), (H, W, 4),
                or tensor (uint8, or float (3, H, W) in [-1, 1]); or a list of them.
            mask_image: the mask(s), same size as the image(s): "lab" = 0 missing, 255 known;
                "white_is_hole" = white (>= 128) is the hole; bool = True missing.
            mask_convention: "lab" (the course's PNGs) or "white_is_hole" (diffusers/OpenCV).
            generator: random stream (None: seeded with ``settings.seed``).
            **settings: :class:`InpaintSettings` fields, e.g. ``steps=16``.

        Returns:
            An RGB PIL image of the input's size, or a list of them for a list input.
        """
        fields = {f.name for f in dataclasses.fields(InpaintSettings)}
        if set(settings) - fields:
            raise ConfigError(f"unknown inpainting setting(s) {sorted(set(settings) - fields)}; expected "
                              f"InpaintSettings fields: {', '.join(sorted(fields))}")
        single = not isinstance(image, (list, tuple))
        lists = (single, isinstance(mask_image, (list, tuple)))
        if lists[0] == lists[1] or (not single and len(image) != len(mask_image)):
            got = ("one image and a list of masks" if single else f"{len(image)} images and "
                   + (f"{len(mask_image)} masks" if lists[1] else "one mask"))
            raise DataError(f"got {got}; pass one image with one mask, or a list of images with as many masks")
        images, masks = ([image], [mask_image]) if single else (list(image), list(mask_image))
        views = [prepare_view(i, m, mask_convention, self.image_size) for i, m in zip(images, masks)]
        cfg = InpaintSettings(**settings)
        outputs = self.inpaint(*view_batch(views), cfg, generator).images.cpu() if views else []
        filled = [v.paste(o, cfg.composite) for v, o in zip(views, outputs)]
        return filled[0] if single else filled

    def outpaint(self, images: torch.Tensor, settings: InpaintSettings | None = None, keep: float = 0.5,
                 generator: torch.Generator | None = None, keep_trace: bool = False) -> InpaintResult:
        """Keep a centred square of side ``round(S * keep)`` and generate the rest (see :meth:`inpaint`)."""
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

@functools.lru_cache(maxsize=1)
def _shipped_inpainter(vqgan_path: str, transformer_path: str) -> Inpainter:
    return Inpainter.from_checkpoints(vqgan_path, transformer_path)


def inpaint_image(image, mask_image, **kwargs):
    """One line with the shipped models: ``maskgit_lib.inpaint_image(image, mask)`` (see :meth:`Inpainter.__call__`).

    The models in ``paths.checkpoints_dir()`` are loaded on the first call and cached.
    """
    paths_now = str(paths.default_vqgan_checkpoint()), str(paths.default_transformer_checkpoint())
    return _shipped_inpainter(*paths_now)(image, mask_image, **kwargs)


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


# ---------------------------------------------------------------- command line


