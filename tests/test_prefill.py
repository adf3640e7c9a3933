"""Hole prefill (what the encoder sees in the holes) and hole training examples.

Covers: both prefills keep known pixels bitwise and ignore what the holes held;
the harmonic fill obeys the maximum principle, reproduces constant images and
fills an all-missing image with gray; hole examples are exactly what the
inpainter encodes; mixing hole examples into a batch.
"""

from __future__ import annotations

import pytest
import torch

from maskgit_lib.config import VQGANConfig
from maskgit_lib.errors import ConfigError, DataError
from maskgit_lib.training.hole_examples import (MASK_BANK_SIZE, HoleExamples, _dihedral, make_hole_examples,
                                                mask_bank, mix_hole_examples)
from maskgit_lib.masking import pixel_to_token_mask
from maskgit_lib.prefill import GRAY_VALUE, get_prefill, gray_prefill, harmonic_fill
from maskgit_lib.vqgan import VQGAN


def _batch(seed: int = 0, b: int = 3, s: int = 16):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, s, s, generator=gen) * 2 - 1
    missing = torch.rand(b, s, s, generator=gen) < 0.4
    return images, missing


@pytest.mark.parametrize("name", ["gray", "harmonic"])
def test_prefill_keeps_known_pixels_and_ignores_hole_content(name):
    images, missing = _batch()
    fill = get_prefill(name)
    out = fill(images, missing)
    known = ~missing[:, None].expand_as(images)
    assert out.shape == images.shape and torch.equal(out[known], images[known])
    other = torch.where(missing[:, None], torch.rand_like(images), images)  # different hole content
    assert torch.equal(fill(other, missing), out)


def test_harmonic_fill_is_smooth_and_bounded():
    images, missing = _batch(1, s=32)
    out = harmonic_fill(images, missing, sweeps=200)
    known = ~missing[:, None].expand_as(images)
    for c in range(3):  # maximum principle: the fill stays within the known values' range
        vals = images[:, c][~missing]
        assert out[:, c][missing].min() >= vals.min() - 1e-6 and out[:, c][missing].max() <= vals.max() + 1e-6
    const = torch.full((1, 3, 16, 16), 0.3)
    hole = torch.zeros(1, 16, 16, dtype=torch.bool)
    hole[0, 4:12, 2:14] = True
    assert torch.allclose(harmonic_fill(const, hole), const)
    # a linear ramp is harmonic: the fill of a hole in it converges to the ramp
    ramp = torch.linspace(-1, 1, 16).expand(1, 3, 16, 16).contiguous()
    assert (harmonic_fill(ramp, hole, sweeps=400) - ramp).abs().max() < 0.02
    assert torch.equal(out[known], images[known])


def test_all_missing_image_is_gray_and_bad_inputs_are_refused():
    images = torch.rand(2, 3, 8, 8)
    missing = torch.ones(2, 8, 8, dtype=torch.bool)
    assert torch.allclose(harmonic_fill(images, missing), torch.full_like(images, GRAY_VALUE))
    assert torch.allclose(gray_prefill(images, missing), torch.full_like(images, GRAY_VALUE))
    with pytest.raises(ConfigError, match=r"unknown prefill 'blur'; choose from \['gray', 'harmonic'\]"):
        get_prefill("blur")
    with pytest.raises(DataError, match="pixel_missing must be bool"):
        harmonic_fill(images, missing.float())
    with pytest.raises(DataError, match="images must be float"):
        harmonic_fill(images.to(torch.uint8), missing)


def test_hole_examples_are_what_the_inpainter_encodes():
    torch.manual_seed(0)
    vqgan = VQGAN(VQGANConfig.preset("tiny")).eval()
    images_u8 = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    ex = make_hole_examples(vqgan, images_u8, variants=2, seed=5, batch_size=4)
    assert ex.context.shape == (3, 2, 256) and ex.is_masked.shape == (3, 2, 256) and ex.is_masked.dtype == torch.bool
    assert ex.is_masked.any(-1).all() and not ex.is_masked.all(-1).any()
    again = make_hole_examples(vqgan, images_u8, variants=2, seed=5, batch_size=2)  # batching does not matter
    assert torch.equal(again.context, ex.context) and torch.equal(again.is_masked, ex.is_masked)
    assert not torch.equal(make_hole_examples(vqgan, images_u8, 2, seed=6).is_masked, ex.is_masked)
    # rebuild example (image 1, variant 0) by hand: the same bank, pick and orientation, then
    # exactly what Inpainter.inpaint does with prefill="harmonic"
    gen = torch.Generator().manual_seed(5)
    bank = mask_bank(MASK_BANK_SIZE, 64, 5)
    pick, turn = torch.randint(len(bank), (3, 2), generator=gen), torch.randint(8, (3, 2), generator=gen)
    missing = _dihedral(bank[pick[1, 0]][None], turn[1, 0][None])  # (1, 64, 64)
    assert 0.15 <= missing.float().mean() <= 0.45  # a brush-stroke hole
    image = images_u8[1:2].float() / 127.5 - 1
    expected = vqgan.encode_to_tokens(harmonic_fill(image, missing)).flatten(1)[0]
    assert torch.equal(ex.context[1, 0], expected)
    assert torch.equal(ex.is_masked[1, 0], pixel_to_token_mask(missing)[0])


def test_mix_hole_examples_switches_whole_examples():
    k, b, length = 8, 6, 256
    target = torch.randint(0, k, (b, length))
    mvtm = torch.rand(b, length) < 0.5
    ex = HoleExamples(torch.randint(0, k, (10, 2, length)), torch.rand(10, 2, length) < 0.3)
    idx = torch.arange(b) + 2
    gen = torch.Generator().manual_seed(0)
    inputs, masked = mix_hole_examples(target, mvtm, ex, idx, 0.0, k, gen)
    assert torch.equal(masked, mvtm) and torch.equal(inputs, target.masked_fill(mvtm, k))
    inputs, masked = mix_hole_examples(target, mvtm, ex, idx, 1.0, k, gen)
    for i in range(b):
        v = [j for j in range(2) if torch.equal(masked[i], ex.is_masked[idx[i], j])]
        assert v, "row must take one of its image's hole examples"
        assert torch.equal(inputs[i], ex.context[idx[i], v[0]].masked_fill(masked[i], k))


@pytest.mark.parametrize("name", ["gray", "harmonic"])
def test_inpainter_ignores_what_the_holes_held(name):
    from maskgit_lib.config import TransformerConfig
    from maskgit_lib.inpaint import Inpainter, InpaintSettings
    from maskgit_lib.transformer import MaskGITTransformer

    torch.manual_seed(0)
    inpainter = Inpainter(VQGAN(VQGANConfig.preset("tiny")), MaskGITTransformer(TransformerConfig.preset("tiny")))
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    missing = torch.zeros(2, 64, 64, dtype=torch.bool)
    missing[:, 20:40, 10:50] = True
    settings = InpaintSettings(steps=2, prefill=name)
    a = inpainter.inpaint(images, missing, settings).images
    b = inpainter.inpaint(torch.where(missing[:, None], -images, images), missing, settings).images
    assert torch.equal(a, b)  # e.g. ground truth left in the holes does not leak into the result
