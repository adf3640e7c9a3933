"""Tests for maskgit_lib.paint: the "draw your own hole" painter, driven through its mouse callbacks."""

import ipycanvas
import numpy as np
import pytest
import torch

from maskgit_lib import paths
from maskgit_lib.data import to_uint8
from maskgit_lib.inpaint import Inpainter, InpaintSettings
from maskgit_lib.paint import SCALE, hole_painter
from maskgit_lib.viz import to_pixels

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def painter(ckpts):
    inpainter = Inpainter.from_checkpoints(ckpts / paths.VQGAN_CHECKPOINT_NAME,
                                           ckpts / paths.TRANSFORMER_CHECKPOINT_NAME, device="cpu")
    image = torch.linspace(-1, 1, 64)[None, None].expand(3, 64, 64).clone()
    return hole_painter(image, inpainter, InpaintSettings(steps=4), brush=3)


def test_mouse_drag_paints_a_round_brush_stroke(painter):
    assert isinstance(painter.canvas, ipycanvas.Canvas) and painter.canvas.width == 64 * SCALE
    assert not painter.missing.any() and "0 pixels" in painter.status.value
    painter._down(20 * SCALE, 30 * SCALE)  # one dab of radius 3 centred on pixel corner (20, 30)
    dab = painter.missing.copy()
    yy, xx = np.mgrid[0:64, 0:64]
    assert np.array_equal(dab, (xx + 0.5 - 20) ** 2 + (yy + 0.5 - 30) ** 2 <= 9)
    painter._move(40 * SCALE, 30 * SCALE)  # drag right: a horizontal band from x=20 to x=40
    painter._up(40 * SCALE, 30 * SCALE)
    painter._move(60 * SCALE, 60 * SCALE)  # mouse up: moving no longer paints
    band = painter.missing
    assert band[30, 18:43].all() and not band[30, 44:].any() and not band[40:].any() and band.sum() > dab.sum()
    assert f"{int(band.sum())} pixels" in painter.status.value


def test_fill_keeps_known_pixels_and_shows_every_step(painter):
    with pytest.raises(ValueError, match="no hole painted"):
        painter.fill()
    painter._fill_clicked(None)  # the button: no exception, a hint in the status line
    assert "paint a hole first" in painter.status.value
    painter.stroke([(40, 40), (200, 120)])
    result = painter.fill(torch.Generator().manual_seed(0))
    known = ~torch.from_numpy(painter.missing)
    out, inp = to_uint8(result.images[0]), to_uint8(painter.image)
    assert torch.equal(out[:, known], inp[:, known])  # known pixels untouched
    assert not torch.equal(out[:, ~known], inp[:, ~known])  # the hole was filled
    assert len(painter.player.frames) == 4 and painter.player.current == 3  # the finished fill is shown
    assert painter.output.children == (painter.player.widget,) and "4 steps" in painter.status.value
    painter.clear()
    assert not painter.missing.any() and painter.player is None and painter.output.children == ()


def test_bad_image_is_refused(painter):
    with pytest.raises(ValueError, match=r"\(3, S, S\)"):
        hole_painter(torch.zeros(64, 64), painter.inpainter)


def test_the_canvas_gets_the_image_losslessly(painter, monkeypatch):
    sent = []
    monkeypatch.setattr(painter.canvas, "put_image_data", lambda data, x=0, y=0: sent.append((data, x, y)))
    painter.redraw()
    (data, x, y), = sent
    # 4 channels: ipycanvas sends an RGBA array as PNG (an RGB one as JPEG at quality 75, which smears the edges)
    assert data.shape == (64 * SCALE, 64 * SCALE, 4) and (x, y) == (0, 0) and (data[..., 3] == 255).all()
    want = np.repeat(np.repeat(to_pixels(painter.image[None])[0], SCALE, 0), SCALE, 1)
    assert np.array_equal(data[..., :3], want)
