"""Inpainting-shaped training examples for the transformer ("hole training").

Plain MVTM hides random, scattered tokens of a *clean* token grid. At
inpainting time the model sees something else: one or a few contiguous holes
(brush strokes), and context tokens encoded from an image whose holes were
filled (see :mod:`maskgit_lib.prefill`, shown in notebooks/04_iterative_decoding.ipynb,
section 4), which differ from the clean image's tokens near and even far from
the holes (the encoder has global attention).

A hole example reproduces the inference input exactly::

    pixel_missing = brush_stroke_mask()                        # (S, S), a random stroke mask
    context       = VQGAN.encode(prefill(image, pixel_missing))  # (L,) what inference encodes
    is_masked     = pixel_to_token_mask(pixel_missing)         # (L,) the lab's rule
    input         = where(is_masked, [MASK], context)
    loss          = CE(model(input), clean tokens) on is_masked

``make_hole_examples`` builds ``variants`` such examples per image once
(frozen VQGAN, deterministic from ``seed``); the trainer mixes them with plain
MVTM examples (``TrainConfig.hole_fraction``). Masks come from a bank of
brush strokes drawn on the CPU, each used in one of its 8 flips/rotations, so
the bank is small and fast to draw while the holes stay varied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..data import from_uint8
from ..masking import pixel_to_token_mask
from ..masks import brush_stroke_mask
from ..prefill import get_prefill
from ..runtime import exact_fp32
from ..views import hflip

HOLE_FORMAT = 1
MASK_BANK_SIZE = 512
HOLE_PREFILL = "harmonic"  # hole examples encode what Inpainter encodes with its default prefill


@dataclass
class HoleExamples:
    """``variants`` hole examples per image.

    Attributes:
        context: int64 (N, V, L) token ids encoded from the prefilled image.
        is_masked: bool (N, V, L) hidden positions (True = predict the clean token).
    """

    context: torch.Tensor
    is_masked: torch.Tensor

    def to(self, device: torch.device | str) -> "HoleExamples":
        return HoleExamples(self.context.to(device), self.is_masked.to(device))

    def __len__(self) -> int:
        return self.context.shape[0]


def mask_bank(count: int, size: int, seed: int) -> torch.Tensor:
    """``count`` brush-stroke hole masks: bool (count, size, size), True = missing (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([brush_stroke_mask(size, gen) for _ in range(count)])


def _dihedral(masks: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Apply one of the 8 flips/rotations ``which`` (B,) in 0..7 to each mask of (B, S, S).

    ``which = 4f + r``: mirror if ``f`` (:func:`maskgit_lib.views.hflip`) and turn by
    ``r`` quarter turns; a mirror is followed by one more quarter turn, so that bit 4
    transposes the mask (mirror + quarter turn = transpose).
    """
    out = masks.clone()
    for k in range(8):
        sel = which == k
        if sel.any():
            m = masks[sel]
            if k & 4:
                m = hflip(m)
            out[sel] = torch.rot90(m, (k & 3) + (1 if k & 4 else 0), dims=(-2, -1))
    return out


@torch.no_grad()
def make_hole_examples(vqgan: torch.nn.Module, images_u8: torch.Tensor, variants: int, seed: int,
                       prefill: str = HOLE_PREFILL, batch_size: int = 256) -> HoleExamples:
    """Build ``variants`` hole examples for each image.

    Args:
        vqgan: frozen tokenizer (its device is used).
        images_u8: uint8 (N, 3, S, S) training images (already mirrored if wanted).
        variants: examples per image (>= 1).
        seed: masks and their orientations are drawn from this seed only.
        prefill: what the encoder sees in the holes (:data:`maskgit_lib.prefill.PREFILLS`).
        batch_size: images per VQGAN encode.

    Returns:
        :class:`HoleExamples` on the CPU: context int64 (N, V, L), is_masked bool (N, V, L).
    """
    n, size = images_u8.shape[0], images_u8.shape[-1]
    fill = get_prefill(prefill)
    gen = torch.Generator().manual_seed(seed)
    bank = mask_bank(MASK_BANK_SIZE, size, seed)  # (M, S, S)
    pick = torch.randint(len(bank), (n, variants), generator=gen)  # (N, V)
    turn = torch.randint(8, (n, variants), generator=gen)  # (N, V)
    device = next(vqgan.parameters()).device
    factor = vqgan.cfg.downsample_factor
    context, hidden = [], []
    flat = torch.arange(n).repeat_interleave(variants)  # (N*V,) image of each example
    with exact_fp32():
        for lo in range(0, n * variants, batch_size):
            rows = flat[lo:lo + batch_size]
            missing = _dihedral(bank[pick.flatten()[lo:lo + batch_size]], turn.flatten()[lo:lo + batch_size])
            images = from_uint8(images_u8[rows].to(device))  # (b, 3, S, S) in [-1, 1]
            missing = missing.to(device)
            context.append(vqgan.encode_to_tokens(fill(images, missing)).flatten(1).cpu())  # (b, L)
            hidden.append(pixel_to_token_mask(missing, factor=factor).cpu())  # (b, L)
    length = context[0].shape[1]
    return HoleExamples(torch.cat(context).view(n, variants, length), torch.cat(hidden).view(n, variants, length))


def hole_examples_key(token_key: str, variants: int, seed: int, prefill: str) -> str:
    """Cache key: the clean tokens' key (tokenizer + files + mirroring) + the hole settings."""
    text = f"maskgit-holes:{HOLE_FORMAT}:{token_key}:{variants}:{seed}:{prefill}:{MASK_BANK_SIZE}"
    return hashlib.sha256(text.encode()).hexdigest()


def mix_hole_examples(target: torch.Tensor, is_masked: torch.Tensor, examples: HoleExamples,
                      indices: torch.Tensor, fraction: float, mask_token_id: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a ``fraction`` of a batch's MVTM examples by hole examples.

    Args:
        target: int64 (B, L) clean tokens of the batch.
        is_masked: bool (B, L) the MVTM masks drawn for the batch.
        examples: hole examples of the whole training set (on the batch's device).
        indices: int64 (B,) rows of the batch in the training set.
        fraction: probability that an example is a hole example.
        mask_token_id: K.
        generator: random stream (on the batch's device).

    Returns:
        ``(inputs, is_masked)``: int64 (B, L) model inputs and bool (B, L) loss positions.
    """
    batch = target.shape[0]
    use = torch.rand(batch, generator=generator, device=target.device) < fraction  # (B,)
    variant = torch.randint(examples.context.shape[1], (batch,), generator=generator, device=target.device)
    context = examples.context[indices, variant]  # (B, L)
    holes = examples.is_masked[indices, variant]  # (B, L)
    is_masked = torch.where(use[:, None], holes, is_masked)
    inputs = torch.where(use[:, None], context, target).masked_fill(is_masked, mask_token_id)
    return inputs, is_masked
