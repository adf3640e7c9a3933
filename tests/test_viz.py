"""Tests for maskgit_lib.viz: shapes, value mapping, and that every figure renders."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from maskgit_lib import viz
from maskgit_lib.masking import SCHEDULES

PNG_MAGIC = b"\x89PNG"


def _images(b: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _renders(fig: Figure) -> bytes:
    assert isinstance(fig, Figure)
    png = viz.figure_to_png(fig, dpi=30)
    assert png.startswith(PNG_MAGIC)
    return png


def test_to_pixels_maps_range_and_layout():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = viz.to_pixels(x)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 4, 3)
    assert out[0, 0, :, 0].tolist() == [0, 128, 255, 255]
    assert viz.to_pixels(x[0]).shape == (1, 4, 3)
    with pytest.raises(ValueError):
        viz.to_pixels(torch.zeros(2, 4, 8, 8))


def test_image_grid_layout():
    images = _images(5)
    grid = viz.image_grid(images, ncols=3, pad=2)
    assert grid.shape == (2 * 66 - 2, 3 * 66 - 2, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[66:130, 0:64], viz.to_pixels(images[3]))
    assert (grid[64:66] == 255).all()


def test_token_mask_image_and_masked_token_image():
    is_masked = torch.zeros(256, dtype=torch.bool)
    is_masked[17] = True  # row 1, column 1
    m = viz.token_mask_image(is_masked)
    assert m.shape == (16, 16) and m[1, 1] == 1 and m.sum() == 1
    pix = viz.masked_token_image(torch.ones(3, 64, 64), is_masked)
    assert (pix[4:8, 4:8] == 128).all() and (pix[:4] == 255).all()
    with pytest.raises(ValueError):
        viz.token_mask_image(torch.zeros(10, dtype=torch.bool))


def test_show_images_and_schedules_render():
    _renders(viz.show_images(_images(3), titles=["a", "b", "c"], ncols=2))
    fig = viz.plot_schedules(steps=8)
    assert len(fig.axes[0].get_legend().get_texts()) == len(SCHEDULES)
    _renders(fig)
    _renders(viz.bar_counts_figure({"cosine": [10, 20, 30], "linear": [20, 20]}))
    fig = viz.histogram_figure({"a": torch.rand(100), "b": [0.1, 0.2]}, bins=5, xlabel="x")
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert len(heights) == 10 and abs(sum(heights[5:]) - 1.0) < 1e-9  # normalised per sample
    _renders(fig)


def test_decoding_and_comparison_figures():
    s = 3
    masks = torch.rand(s, 256, generator=torch.Generator().manual_seed(1)) < 0.5
    conf = torch.randn(s, 256)
    conf[~masks] = float("inf")
    fig = viz.decoding_figure(_images(s), masks, conf)
    assert len(fig.axes) == 3 * s
    _renders(fig)
    assert len(viz.decoding_figure(_images(s), masks).axes) == 2 * s
    fig = viz.schedule_comparison_figure({"cosine": (_images(s), masks), "linear": (_images(s, 1), masks)})
    assert len(fig.axes) == 2 * 2 * s
    _renders(fig)
    with pytest.raises(ValueError):
        viz.schedule_comparison_figure({"a": (_images(s), masks), "b": (_images(s - 1), masks[:-1])})


def test_attention_maps_figure():
    attn = torch.softmax(torch.randn(4, 256, 256), -1)
    fig = viz.attention_maps_figure(attn, query_index=100, image=_images(1)[0],
                                    is_masked=torch.zeros(256, dtype=torch.bool))
    assert len(fig.axes) == 1 + 4 + 1
    _renders(fig)
    _renders(viz.attention_maps_figure(attn[0], 0))
    with pytest.raises(ValueError):
        viz.attention_maps_figure(attn, 256)


def test_loss_curves_from_csv_and_dict(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss,val_loss,lr,elapsed_s\n1,5.0,,0.1,0.5\n2,4.0,4.5,0.1,1.0\n3,3.0,,0.05,1.5\n")
    fig = viz.loss_curves_figure(log)
    titles = sorted(ax.get_title() for ax in fig.axes)
    assert titles == ["loss", "lr"]
    loss_ax = next(ax for ax in fig.axes if ax.get_title() == "loss")
    assert len(loss_ax.get_lines()) == 2  # train and val on one panel
    _renders(fig)
    fig = viz.loss_curves_figure({"step": [0, 10, 20], "loss": [3, 2, 1], "acc": ([0, 20], [0.1, 0.5])},
                                 xlabel="ratio")
    assert sorted(ax.get_title() for ax in fig.axes) == ["acc", "loss"]
    assert fig.axes[0].get_xlabel() == "ratio"
    with pytest.raises(ValueError):
        viz.loss_curves_figure(log, keys=["missing"])
