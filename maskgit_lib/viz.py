"""Figures for the notebooks: image grids, schedules, decoding steps, attention, curves.

Every function returns a :class:`matplotlib.figure.Figure` (or a NumPy array)
built with the object-oriented API; nothing here calls ``plt.show`` or touches
pyplot's global state, so a notebook decides what to display (``display(fig)``
or leaving the figure as a cell's last expression). :func:`figure_to_png`
renders a figure to PNG bytes for widgets.

Conventions: ``images`` float (B, 3, H, W) in [-1, 1] (a torch tensor or a NumPy
array); ``is_masked`` bool (L,) or (S, L), True = hidden token; token grids are
row-major ``grid x grid`` (16 x 16 for 64x64 images).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .masking import SCHEDULES, get_schedule

MASK_CMAP = "gray_r"  # hidden token = black, known = white
CONF_CMAP = "viridis"  # low confidence = dark
ATTN_CMAP = "magma"
SKIPPED_COLUMNS = ("step", "epoch", "elapsed_s")


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def to_pixels(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Channels-last uint8 pixels of images in [-1, 1], for display (NumPy, (..., H, W, 3)).

    The tensor-side converter, channels first, is :func:`maskgit_lib.data.to_uint8`.

    Args:
        images: float (B, 3, H, W) or (3, H, W) in [-1, 1] (clamped).

    Returns:
        uint8 (B, H, W, 3) or (H, W, 3).
    """
    x = _numpy(images).astype(np.float32)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"images must be (B, 3, H, W) or (3, H, W), got shape {x.shape}")
    x = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.moveaxis(x, -3, -1)


def image_grid(images: torch.Tensor | np.ndarray, ncols: int = 8, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile images into one picture, row by row.

    Args:
        images: float (B, 3, H, W) in [-1, 1].
        ncols: images per row (fewer if B is smaller).
        pad: pixels between images.
        pad_value: gray level of the padding.

    Returns:
        uint8 (rows*(H+pad)-pad, cols*(W+pad)-pad, 3).
    """
    pix = to_pixels(images)
    if pix.ndim == 3:
        pix = pix[None]
    b, h, w, _ = pix.shape
    cols = max(1, min(ncols, b))
    rows = math.ceil(b / cols)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), pad_value, np.uint8)
    for i in range(b):
        r, c = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = pix[i]
    return out


def token_mask_image(is_masked: torch.Tensor | np.ndarray, grid: int = 16) -> np.ndarray:
    """Reshape a token mask to its grid: bool (L,) -> float32 (grid, grid), 1 = hidden."""
    m = _numpy(is_masked).reshape(-1)
    if m.size != grid * grid:
        raise ValueError(f"is_masked has {m.size} entries, expected grid*grid = {grid * grid}")
    return m.reshape(grid, grid).astype(np.float32)


def masked_token_image(image: torch.Tensor | np.ndarray, is_masked: torch.Tensor | np.ndarray, grid: int = 16,
                       fill: Sequence[int] = (128, 128, 128)) -> np.ndarray:
    """An image with the pixel block of every hidden token painted ``fill`` (the lab's gray).

    Args:
        image: float (3, H, W) in [-1, 1], H and W divisible by ``grid``.
        is_masked: bool (L,) with L = grid*grid.

    Returns:
        uint8 (H, W, 3).
    """
    pix = to_pixels(image).copy()
    h, w, _ = pix.shape
    blocks = token_mask_image(is_masked, grid).astype(bool)  # (grid, grid)
    hidden = blocks.repeat(h // grid, 0).repeat(w // grid, 1)  # (H, W)
    pix[hidden] = np.asarray(fill, np.uint8)
    return pix


def figure_to_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a figure to PNG bytes (Agg canvas; no pyplot)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _axes_grid(fig: Figure, rows: int, cols: int) -> np.ndarray:
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def show_images(images: torch.Tensor | np.ndarray, titles: Sequence[str] | None = None, ncols: int = 8,
                scale: float = 1.3) -> Figure:
    """A grid of images with optional titles.

    Args:
        images: float (B, 3, H, W) in [-1, 1].
        titles: optional B strings.
        ncols: images per row.
        scale: inches per image.
    """
    pix = to_pixels(images)
    if pix.ndim == 3:
        pix = pix[None]
    b = pix.shape[0]
    cols = max(1, min(ncols, b))
    rows = math.ceil(b / cols)
    fig = _new_figure(scale * cols, scale * rows + (0.2 * rows if titles else 0))
    axes = _axes_grid(fig, rows, cols)
    for i, ax in enumerate(axes.flat):
        if i >= b:
            ax.set_axis_off()
            continue
        ax.imshow(pix[i])
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    return fig


def plot_schedules(names: Sequence[str] | None = None, num_points: int = 201,
                   steps: int | None = None) -> Figure:
    """Mask schedules gamma(r) on [0, 1].

    Args:
        names: schedule names (default: every key of :data:`maskgit_lib.masking.SCHEDULES`).
        num_points: points per curve.
        steps: if given, mark gamma((t+1)/T) for t = 0..T-1 on each curve.
    """
    names = list(SCHEDULES) if names is None else list(names)
    r = torch.linspace(0.0, 1.0, num_points, dtype=torch.float64)
    fig = _new_figure(5.5, 3.8)
    ax = fig.add_subplot()
    for name in names:
        gamma = get_schedule(name)
        line, = ax.plot(r.numpy(), gamma(r).numpy(), label=name)
        if steps:
            rs = torch.arange(1, steps + 1, dtype=torch.float64) / steps  # r = (t+1)/T
            ax.plot(rs.numpy(), gamma(rs).numpy(), "o", ms=3, color=line.get_color())
    ax.set_xlabel("r  (training: r ~ U(0,1);  decoding: r = t/T)")
    ax.set_ylabel(r"$\gamma(r)$ = fraction of tokens hidden")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def bar_counts_figure(counts: Mapping[str, Sequence[int]], ylabel: str = "tokens revealed",
                      xlabel: str = "step t") -> Figure:
    """Grouped bars, one group per step and one bar per series (e.g. tokens revealed per step)."""
    names = list(counts)
    steps = max(len(v) for v in counts.values())
    width = 0.8 / max(1, len(names))
    fig = _new_figure(max(5.0, 0.6 * steps + 2), 3.4)
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        values = list(counts[name])
        xs = np.arange(1, len(values) + 1) + (i - (len(names) - 1) / 2) * width
        ax.bar(xs, values, width=width, label=name)
    ax.set_xticks(np.arange(1, steps + 1))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def histogram_figure(samples: Mapping[str, Sequence[float] | np.ndarray | torch.Tensor], bins: int = 20,
                     value_range: tuple[float, float] = (0.0, 1.0), xlabel: str = "",
                     ylabel: str = "fraction of samples") -> Figure:
    """Overlaid, normalised histograms of several samples (e.g. masked fractions of two MVTM samplers).

    Args:
        samples: ``{name: values}``, each 1-D.
        bins: number of equal bins over ``value_range``.
        value_range: (low, high) of the bins.
        xlabel: x-axis label.
        ylabel: y-axis label.
    """
    fig = _new_figure(5.5, 3.4)
    ax = fig.add_subplot()
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    for name, values in samples.items():
        v = _numpy(values).astype(np.float64).reshape(-1)
        weights = np.full(v.shape, 1.0 / max(1, v.size))
        ax.hist(v, bins=edges, weights=weights, alpha=0.55, label=f"{name} (mean {v.mean():.3f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _confidence_grid(confidence: torch.Tensor | np.ndarray, grid: int) -> np.ndarray:
    c = _numpy(confidence).astype(np.float64).reshape(grid, grid)
    return np.where(np.isfinite(c), c, np.nan)  # known tokens (+inf) are left blank


def decoding_figure(step_images: torch.Tensor | np.ndarray, is_masked: torch.Tensor | np.ndarray,
                    confidences: torch.Tensor | np.ndarray | None = None,
                    step_labels: Sequence[str] | None = None, grid: int = 16, scale: float = 1.4) -> Figure:
    """The course's per-step decoding figure.

    Columns are steps; row 1 the decoded image, row 2 the latent mask (black =
    still hidden after the step), row 3 (optional) the confidence map of the
    step (blank = known before the step).

    Args:
        step_images: float (S, 3, H, W) in [-1, 1], the image after each shown step.
        is_masked: bool (S, L), hidden after each step.
        confidences: optional float (S, L), the step's ranking score (+inf = known).
        step_labels: optional S column titles (default "step 1".."step S").
        grid: tokens per side.
        scale: inches per panel.
    """
    pix = to_pixels(step_images)
    s = pix.shape[0]
    masks = _numpy(is_masked).reshape(s, -1)
    rows = 2 if confidences is None else 3
    fig = _new_figure(scale * s + 0.6, scale * rows + 0.3)
    axes = _axes_grid(fig, rows, s)
    labels = step_labels or [f"step {i + 1}" for i in range(s)]
    conf = None if confidences is None else _numpy(confidences).reshape(s, -1)
    for i in range(s):
        axes[0, i].imshow(pix[i])
        axes[0, i].set_title(labels[i], fontsize=8)
        axes[1, i].imshow(token_mask_image(masks[i], grid), cmap=MASK_CMAP, vmin=0, vmax=1)
        axes[1, i].set_xlabel(f"{int(masks[i].sum())} hidden", fontsize=7)
        if conf is not None:
            axes[2, i].imshow(_confidence_grid(conf[i], grid), cmap=CONF_CMAP)
    axes[0, 0].set_ylabel("image", fontsize=8)
    axes[1, 0].set_ylabel("latent mask", fontsize=8)
    if conf is not None:
        axes[2, 0].set_ylabel("confidence", fontsize=8)
    return fig


def schedule_comparison_figure(results: Mapping[str, tuple], step_labels: Sequence[str] | None = None,
                               grid: int = 16, show_masks: bool = True, scale: float = 1.2) -> Figure:
    """Schedules side by side: one row (plus a latent-mask row) per schedule, columns = steps.

    Args:
        results: ``{name: (step_images (S, 3, H, W), is_masked (S, L))}``, the
            same S for every schedule.
        step_labels: optional S column titles.
        grid: tokens per side.
        show_masks: add each schedule's latent masks under its images.
        scale: inches per panel.
    """
    names = list(results)
    s = to_pixels(results[names[0]][0]).shape[0]
    per = 2 if show_masks else 1
    fig = _new_figure(scale * s + 0.8, scale * per * len(names) + 0.3)
    axes = _axes_grid(fig, per * len(names), s)
    labels = step_labels or [f"step {i + 1}" for i in range(s)]
    for j, name in enumerate(names):
        images, masks = results[name]
        pix = to_pixels(images)
        masks = _numpy(masks).reshape(pix.shape[0], -1)
        if pix.shape[0] != s:
            raise ValueError(f"schedule {name!r} has {pix.shape[0]} steps, expected {s}")
        for i in range(s):
            axes[per * j, i].imshow(pix[i])
            if show_masks:
                axes[per * j + 1, i].imshow(token_mask_image(masks[i], grid), cmap=MASK_CMAP, vmin=0, vmax=1)
            if j == 0:
                axes[0, i].set_title(labels[i], fontsize=8)
        axes[per * j, 0].set_ylabel(name, fontsize=9)
    return fig


def attention_maps_figure(attn: torch.Tensor | np.ndarray, query_index: int, grid: int = 16,
                          image: torch.Tensor | np.ndarray | None = None,
                          is_masked: torch.Tensor | np.ndarray | None = None,
                          max_heads: int = 8, scale: float = 1.5) -> Figure:
    """Where one query token looks: its attention row over the token grid, per head.

    Args:
        attn: float (H, L, L) or (L, L), attention probabilities (rows sum to 1).
        query_index: the query position q in 0..L-1 (row-major on the grid).
        grid: tokens per side.
        image: optional float (3, H, W) image shown first (hidden tokens grayed
            out when ``is_masked`` is given), with the query marked.
        is_masked: optional bool (L,), True = hidden token.
        max_heads: show at most this many heads (the head mean is always shown).
        scale: inches per panel.
    """
    a = _numpy(attn).astype(np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] != grid * grid:
        raise ValueError(f"attn must be (H, L, L) or (L, L) with L = {grid * grid}, got {a.shape}")
    if not 0 <= query_index < a.shape[1]:
        raise ValueError(f"query_index {query_index} outside 0..{a.shape[1] - 1}")
    rows = a[:, query_index]  # (H, L)
    panels = [(f"head {h}", rows[h]) for h in range(min(max_heads, rows.shape[0]))]
    panels.append(("mean of heads", rows.mean(0)))
    n = len(panels) + (image is not None)
    fig = _new_figure(scale * n + 0.3, scale + 0.4)
    axes = _axes_grid(fig, 1, n)[0]
    qy, qx = divmod(query_index, grid)
    i = 0
    if image is not None:
        pix = masked_token_image(image, is_masked, grid) if is_masked is not None else to_pixels(image)
        f = pix.shape[0] / grid
        axes[0].imshow(pix)
        axes[0].plot((qx + 0.5) * f - 0.5, (qy + 0.5) * f - 0.5, "r+", ms=10, mew=2)
        axes[0].set_title("query (+)", fontsize=8)
        i = 1
    for ax, (title, row) in zip(axes[i:], panels):
        ax.imshow(row.reshape(grid, grid), cmap=ATTN_CMAP)
        ax.plot(qx, qy, "c+", ms=8, mew=1.5)
        ax.set_title(title, fontsize=8)
    return fig


def _read_curves(source: str | os.PathLike | Mapping) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{column: (steps, values)}`` from a training CSV log or a dict."""
    if isinstance(source, Mapping):
        out = {}
        steps_all = source.get("step")
        for key, value in source.items():
            if key in SKIPPED_COLUMNS:
                continue
            if isinstance(value, tuple) and len(value) == 2:
                xs, ys = value
            else:
                ys = value
                xs = steps_all if steps_all is not None else np.arange(len(ys))
            out[key] = (np.asarray(xs, np.float64), np.asarray(ys, np.float64))
        return out
    with open(Path(source), newline="") as fh:
        rows = list(csv.DictReader(fh))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        try:
            step = float(row["step"])
        except (KeyError, TypeError, ValueError):
            continue
        for key, value in row.items():
            if key is None or key in SKIPPED_COLUMNS or value in (None, ""):
                continue
            try:
                series.setdefault(key, []).append((step, float(value)))
            except ValueError:
                continue
    return {k: (np.array([p[0] for p in v]), np.array([p[1] for p in v])) for k, v in series.items() if v}


def loss_curves_figure(source: str | os.PathLike | Mapping, keys: Sequence[str] | None = None,
                       title: str = "", xlabel: str = "step") -> Figure:
    """Training curves: one panel per metric, ``val_<m>`` drawn on ``<m>``'s panel.

    Args:
        source: a trainer's CSV log (a ``step`` column plus numeric columns), or a
            dict ``{name: values}`` (x = its ``"step"`` entry or 0..n-1) or
            ``{name: (steps, values)}``.
        keys: columns to plot (default: all numeric ones except step/epoch/elapsed_s).
        title: figure title.
        xlabel: x-axis label.
    """
    curves = _read_curves(source)
    if keys is not None:
        missing = [k for k in keys if k not in curves]
        if missing:
            raise ValueError(f"no curve(s) {missing} in the log; available: {sorted(curves)}")
        curves = {k: curves[k] for k in keys}
    if not curves:
        raise ValueError("the log holds no numeric columns to plot")
    groups: dict[str, list[str]] = {}
    for key in curves:
        base = key[4:] if key.startswith("val_") and key[4:] in curves else key
        groups.setdefault(base, []).append(key)
    cols = min(3, len(groups))
    nrows = math.ceil(len(groups) / cols)
    fig = _new_figure(4.0 * cols, 2.9 * nrows)
    for i, (base, members) in enumerate(groups.items()):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for key in members:
            xs, ys = curves[key]
            ax.plot(xs, ys, marker="o" if key.startswith("val_") and len(xs) < 40 else None, ms=3, label=key)
        ax.set_title(base, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if len(members) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
