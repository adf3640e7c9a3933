"""Tests for maskgit_lib.baselines: known pixels untouched, holes filled sensibly."""

import pytest
import torch

from maskgit_lib.evaluation import baselines
from maskgit_lib.config import VQGANConfig
from maskgit_lib.data import from_uint8, to_uint8
from maskgit_lib.errors import ConfigError, DataError
from maskgit_lib.vqgan import VQGAN

S = 64


def batch(b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (b, 3, S, S) smooth images with gray holes, bool (b, S, S) holes of different shapes."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, S)
    images = (255 * torch.rand(b, 3, 1, 1, generator=g) * ramp[None, None, :, None] * ramp).round().to(torch.uint8)
    pixel_missing = torch.zeros(b, S, S, dtype=torch.bool)
    for i, hole in enumerate([(slice(20, 40), slice(20, 40)), (slice(None), slice(30, 34)),
                              (slice(5, 9), slice(50, 60))][:b]):
        pixel_missing[(i, *hole)] = True
    return torch.where(pixel_missing[:, None], torch.tensor(128, dtype=torch.uint8), images), pixel_missing


@pytest.mark.parametrize("name", sorted(baselines.BASELINES))
@pytest.mark.parametrize("as_float", [False, True])
def test_known_pixels_are_byte_identical(name, as_float):
    images, pixel_missing = batch()
    out = baselines.get_baseline(name)(from_uint8(images) if as_float else images, pixel_missing)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    known = ~pixel_missing[:, None].expand_as(images)
    assert torch.equal(out[known], images[known])


@pytest.mark.parametrize("name,tolerance", [("telea", 5), ("navier_stokes", 1), ("biharmonic", 1)])
def test_flat_colour_hole_is_filled_with_that_colour(name, tolerance):
    """OpenCV's Telea drifts by up to 4 levels inside a 32x32 hole of a flat image (its own rounding)."""
    colour = torch.tensor([200, 40, 10], dtype=torch.uint8)  # not gray: a channel swap would still pass, a
    images = colour[None, :, None, None].expand(2, 3, S, S).clone()  # leak of the gray fill would not
    pixel_missing = torch.zeros(2, S, S, dtype=torch.bool)
    pixel_missing[0, 16:48, 16:48] = True
    pixel_missing[1, 30:34, :40] = True
    images[pixel_missing[:, None].expand_as(images)] = 128
    out = baselines.get_baseline(name)(images, pixel_missing)
    assert (out.int() - colour[None, :, None, None].int()).abs().max() <= tolerance


@pytest.mark.parametrize("name", ["telea", "navier_stokes", "biharmonic"])
def test_hole_content_never_leaks_into_the_fill(name):
    images, pixel_missing = batch()
    hole = pixel_missing[:, None].expand_as(images)
    black, white = images.clone(), images.clone()
    black[hole], white[hole] = 0, 255
    fn = baselines.get_baseline(name)
    assert torch.equal(fn(black, pixel_missing), fn(white, pixel_missing))


def test_opencv_gets_rgb_order_right():
    """Left half red, right half blue, a vertical slit at the boundary: the fill stays red/blue, never green."""
    images = torch.zeros(1, 3, S, S, dtype=torch.uint8)
    images[0, 0, :, :32], images[0, 2, :, 32:] = 255, 255
    pixel_missing = torch.zeros(1, S, S, dtype=torch.bool)
    pixel_missing[0, :, 24:28] = True
    out = baselines.telea(images, pixel_missing)
    assert out[0, 1].max() == 0 and out[0, 0, 10, 25] > out[0, 2, 10, 25]


def test_gray_fill_is_the_masked_input():
    images, pixel_missing = batch()
    out = baselines.gray_fill(images, pixel_missing)
    assert torch.equal(out, images) and (out[0, :, 30, 30] == 128).all()


def test_empty_hole_is_copied_and_bad_inputs_are_refused():
    images, _ = batch(1)
    none = torch.zeros(1, S, S, dtype=torch.bool)
    assert torch.equal(baselines.biharmonic(images, none), images)
    with pytest.raises(DataError, match="pixel_missing"):
        baselines.telea(images, none.float())
    with pytest.raises(DataError, match=r"\(B, 3, S, S\)"):
        baselines.telea(images[:, :1], none)
    with pytest.raises(ConfigError, match="unknown baseline"):
        baselines.get_baseline("photoshop")


def test_vqgan_ceiling_composited_and_raw():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vq = VQGAN(VQGANConfig.preset("tiny")).eval()
    gt, pixel_missing = batch(2)
    raw = baselines.vqgan_ceiling(vq, gt, pixel_missing, composite=False, batch_size=2)
    with torch.no_grad():
        expected = to_uint8(vq.decode_tokens(vq.encode_to_tokens(from_uint8(gt))))
    assert torch.equal(raw, expected)
    one_by_one = baselines.vqgan_ceiling(vq, gt, pixel_missing, composite=False, batch_size=1)
    assert (one_by_one.int() - raw.int()).abs().max() <= 1  # float rounding depends on the batch size
    done = baselines.vqgan_ceiling(vq, gt, pixel_missing)
    hole = pixel_missing[:, None].expand_as(gt)
    assert torch.equal(done[~hole], gt[~hole]) and torch.equal(done[hole], raw[hole])
