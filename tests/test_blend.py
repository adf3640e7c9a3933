"""Compositing (:mod:`maskgit_lib.blend`): paste and Poisson blending."""

from __future__ import annotations

import pytest
import torch

from maskgit_lib.blend import composite, get_blend, poisson_blend
from maskgit_lib.data import from_uint8, to_uint8
from maskgit_lib.errors import ConfigError
from maskgit_lib.inpaint import InpaintSettings

pytestmark = pytest.mark.usefixtures("one_thread")
S = 32


def _batch(b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = from_uint8(torch.randint(0, 256, (b, 3, S, S), generator=gen, dtype=torch.uint8))
    missing = torch.zeros(b, S, S, dtype=torch.bool)
    missing[:, 8:20, 6:26] = True
    missing[1, 2:5, 2:30] = True
    return images, missing


@pytest.mark.parametrize("name", ["paste", "poisson"])
def test_known_pixels_are_the_inputs_bytes(name):
    images, missing = _batch()
    raw = torch.rand(images.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = get_blend(name)(raw, images, missing)
    known = ~missing[:, None].expand_as(images)
    assert torch.equal(to_uint8(out)[known], to_uint8(images)[known])
    assert torch.equal(out, from_uint8(to_uint8(out)))  # on the 8-bit grid


def test_poisson_removes_a_smooth_colour_shift_that_paste_keeps():
    images, missing = _batch()
    shifted = (images + torch.tensor([0.2, -0.1, 0.05])[None, :, None, None]).clamp(-1, 1)  # decoded, off in colour
    inside = missing[:, None].expand_as(images) & (images.abs() < 0.75)  # pixels the clamp did not touch
    pasted = composite(shifted, images, missing)
    blended = poisson_blend(shifted, images, missing, sweeps=400)
    err_paste = (to_uint8(pasted).float() - to_uint8(images).float())[inside].abs().mean()
    err_poisson = (to_uint8(blended).float() - to_uint8(images).float())[inside].abs().mean()
    assert err_paste > 8 and err_poisson < 1.5


def test_a_perfect_decode_is_returned_as_is_and_an_all_missing_image_gets_no_correction():
    images, missing = _batch(2)
    assert torch.equal(poisson_blend(images, images, missing), from_uint8(to_uint8(images)))
    missing[1] = True
    raw = images.flip(-1)
    out = poisson_blend(raw, images, missing)
    assert torch.equal(out[1], from_uint8(to_uint8(raw[1])))


def test_unknown_blend_names_are_refused():
    with pytest.raises(ConfigError, match="unknown blend 'feather'"):
        get_blend("feather")
    with pytest.raises(ConfigError, match="unknown blend"):
        InpaintSettings(blend="feather")
    assert InpaintSettings().blend == "poisson"
