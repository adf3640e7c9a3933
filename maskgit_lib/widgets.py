"""ipywidgets for the notebooks: mask-ratio explorer, decoding player, schedule explorer.

House rules (docs/architecture.md, "Widgets"): frames are rendered once, up front, to PNG
bytes, each in its own :class:`ipywidgets.Image` inside an :class:`ipywidgets.Stack`; the
slider (and Play button) is ``jslink``-ed to the stack, so moving it swaps frames in the
browser with no kernel: executed notebooks, HTML exports and nbviewer animate from the
saved widget state (``make browser-check`` checks this in headless Chromium). A control
that must recompute (the schedule explorer) needs a kernel: it uses
``continuous_update=False`` (it fires on release) and a cache keyed by plain values, so
revisiting a setting costs nothing.

Every builder returns a small dataclass holding the container to display
(``.widget``; the dataclass itself also displays as that widget) and handles
to its controls, so tests and notebooks can drive it without a browser::

    viewer = decoding_player(frames)
    viewer.slider.value = 3
    assert viewer.image.value == viewer.frames[2]  # the stack shows frame 2 (slider counts from 1)

Frames are drawn with PIL (milliseconds each), not matplotlib.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import viz
from .masking import Schedule, get_schedule, mvtm_num_masked, random_mask_with_counts, schedule_name

PANEL = 192  # pixels per side of one panel in a frame
KNOWN_GRAY = (215, 215, 215)  # confidence map: tokens known before the step


class _Displayable:
    """Display the dataclass as its ``widget`` (``display(handle)`` or a cell's last line)."""

    widget: widgets.Widget

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


@dataclass(repr=False)
class FrameViewer(_Displayable):
    """A slider (and optionally a Play button) over pre-rendered PNG frames that works without a kernel.

    Every frame is its own :class:`ipywidgets.Image` (with its caption above it) inside a
    :class:`ipywidgets.Stack`; the slider's index is ``jslink``-ed to the stack's
    ``selected_index`` (and the Play button to the slider), so the browser swaps frames by
    itself: an executed notebook's saved widget state animates in an HTML export or nbviewer.
    In a kernel a Python-side observer does the same, so code can drive the viewer too.

    Attributes:
        widget: the container to display.
        stack: the :class:`ipywidgets.Stack` of frames (child ``offset + i`` shows frame i).
        slider: the slider; its value (``index_trait``) selects the frame.
        frames: the PNG bytes of every frame.
        values: the slider value of every frame.
        play: an :class:`ipywidgets.Play` jslinked to the slider, or None.
        captions: one caption per frame.
        offset: stack index of frame 0 (1 when the slider counts from 1: child 0 is a placeholder).
        index_trait: the slider trait linked to the stack: ``value`` (an IntSlider) or ``index`` (a SelectionSlider).
    """

    widget: widgets.Widget
    stack: widgets.Stack
    slider: widgets.Widget
    frames: list[bytes]
    values: list[Any]
    play: widgets.Play | None = None
    captions: list[str] = field(default_factory=list)
    offset: int = 0
    index_trait: str = "value"

    @property
    def current(self) -> int:
        """Index of the frame the stack shows."""
        return int(self.stack.selected_index) - self.offset

    @property
    def image(self) -> widgets.Image:
        """The :class:`ipywidgets.Image` of the frame shown now."""
        return self.stack.children[self.stack.selected_index].children[1]

    @property
    def label(self) -> widgets.HTML:
        """The caption (HTML) of the frame shown now."""
        return self.stack.children[self.stack.selected_index].children[0]

    def show(self, index: int) -> None:
        """Show frame ``index`` by moving the slider (so slider, Play and stack agree)."""
        if self.index_trait == "index":
            self.slider.index = index
        else:
            self.slider.value = self.values[index]


@dataclass(repr=False)
class ScheduleExplorer(_Displayable):
    """Dropdown (schedule) + sliders (T, sweet spot) that recompute on release, memoised.

    Attributes:
        widget: the container to display.
        image: the :class:`ipywidgets.Image` showing the current result.
        schedule: Dropdown of schedule names.
        steps: IntSlider for T (``continuous_update=False``).
        sweet_spot: IntSlider for the stop step s <= T (``continuous_update=False``;
            its max follows T, and it stays at T when it was at T).
        status: HTML line saying what is shown and whether it came from the cache.
        cache: ``{(schedule, steps, sweet_spot): png_bytes}``.
        run_fn: ``run_fn(schedule, steps, sweet_spot)`` -> PNG bytes, a Figure
            or a uint8 (H, W, 3) array.
        calls: how many times ``run_fn`` ran.
    """

    widget: widgets.Widget
    image: widgets.Image
    schedule: widgets.Dropdown
    steps: widgets.IntSlider
    sweet_spot: widgets.IntSlider
    status: widgets.HTML
    run_fn: Callable[[str, int, int], Any]
    cache: dict[tuple[str, int, int], bytes] = field(default_factory=dict)
    calls: int = 0
    _hold: bool = False

    @property
    def key(self) -> tuple[str, int, int]:
        """The plain-value cache key of the current control values."""
        return (str(self.schedule.value), int(self.steps.value), int(self.sweet_spot.value))

    def update(self) -> bytes:
        """Show the result for the current controls, computing it only for a new key."""
        key = self.key
        cached = key in self.cache
        if not cached:
            self.status.value = f"computing {key[0]}, T={key[1]}, s={key[2]} ..."
            self.cache[key] = to_png(self.run_fn(*key))
            self.calls += 1
        self.image.value = self.cache[key]
        self.status.value = f"{key[0]}, T={key[1]}, sweet spot s={key[2]} ({'cached' if cached else 'computed'})"
        return self.cache[key]

    def _on_change(self, _change: dict) -> None:
        if not self._hold:
            self.update()

    def _on_steps(self, change: dict) -> None:
        old, new = int(change["old"]), int(change["new"])
        self._hold = True
        try:
            was_at_end = int(self.sweet_spot.value) >= old
            self.sweet_spot.max = new  # clamps the value when it exceeds the new T
            if was_at_end:
                self.sweet_spot.value = new
        finally:
            self._hold = False
        self.update()


def to_png(obj: Any, dpi: int = 80) -> bytes:
    """PNG bytes from PNG bytes (unchanged), a matplotlib Figure, or a uint8 (H, W, 3) array."""
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if hasattr(obj, "savefig"):
        return viz.figure_to_png(obj, dpi=dpi)
    arr = np.asarray(obj)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise TypeError(f"expected PNG bytes, a Figure or a uint8 (H, W, 3) array; got {type(obj).__name__}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def compose_frame(panels: Sequence[np.ndarray], captions: Sequence[str], title: str = "",
                  panel: int = PANEL, pad: int = 8) -> bytes:
    """Put panels side by side with a caption above each and a title line; return PNG bytes.

    Each panel gets a 1-pixel light-gray frame (drawn in the gap, the panel itself untouched).

    Args:
        panels: uint8 (h, w, 3) or (h, w) arrays, each scaled (nearest) to ``panel`` pixels.
        captions: one caption per panel.
        title: optional line above everything.
        panel: side of each panel in pixels.
        pad: gap in pixels.
    """
    font = _font()
    head = 20
    top = head if title else 0
    width = len(panels) * (panel + pad) + pad
    canvas = Image.new("RGB", (width, top + head + panel + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 3), title, fill=(0, 0, 0), font=font)
    for i, (arr, caption) in enumerate(zip(panels, captions)):
        im = Image.fromarray(np.asarray(arr, np.uint8)).convert("RGB").resize((panel, panel), Image.Resampling.NEAREST)
        x = pad + i * (panel + pad)
        canvas.paste(im, (x, top + head))
        # a thin frame in the gap around the panel, so an all-white panel (no token hidden) is still seen
        draw.rectangle((x - 1, top + head - 1, x + panel, top + head + panel), outline=(190, 190, 190))
        draw.text((x, top + 3), caption, fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def mask_panel(is_masked: torch.Tensor | np.ndarray, grid: int = 16) -> np.ndarray:
    """uint8 (grid, grid, 3) picture of a token mask: black = hidden, white = known."""
    m = viz.token_mask_image(is_masked, grid)
    return np.repeat(((1.0 - m) * 255).astype(np.uint8)[..., None], 3, axis=-1)


def confidence_panel(confidence: torch.Tensor | np.ndarray, grid: int = 16, cmap: str = viz.CONF_CMAP) -> np.ndarray:
    """uint8 (grid, grid, 3) colour map of one step's confidence (min-max over the finite
    entries); entries that are +inf (known before the step) are light gray."""
    from matplotlib import colormaps

    c = viz._numpy(confidence).astype(np.float64).reshape(grid, grid)
    finite = np.isfinite(c)
    out = np.empty((grid, grid, 3), np.uint8)
    out[:] = KNOWN_GRAY
    if finite.any():
        lo, hi = c[finite].min(), c[finite].max()
        norm = (c - lo) / (hi - lo) if hi > lo else np.full_like(c, 0.5)
        rgb = (colormaps[cmap](np.where(finite, norm, 0.0))[..., :3] * 255).round().astype(np.uint8)
        out[finite] = rgb[finite]
    return out


def token_panel(tokens: torch.Tensor | np.ndarray, grid: int = 16) -> np.ndarray:
    """uint8 (grid, grid, 3): each codebook id drawn in its own fixed random colour."""
    ids = viz._numpy(tokens).astype(np.int64).reshape(grid, grid)
    palette = np.random.default_rng(0).integers(30, 240, (int(ids.max()) + 1, 3)).astype(np.uint8)
    return palette[ids]


def _viewer(frames: list[bytes], values: list[Any], captions: list[str], slider: widgets.Widget,
            play: widgets.Play | None, index_trait: str = "value", offset: int = 0) -> FrameViewer:
    """Stack the frames and link ``slider.<index_trait>`` (= stack index) to the stack, in JS and in Python."""
    captions = list(captions) or [""] * len(frames)
    pages = [widgets.VBox([widgets.HTML(value=c), widgets.Image(value=f, format="png")])
             for f, c in zip(frames, captions)]
    stack = widgets.Stack([widgets.HTML()] * offset + pages, selected_index=getattr(slider, index_trait))
    widgets.jslink((slider, index_trait), (stack, "selected_index"))  # the browser swaps frames, kernel or not
    slider.observe(lambda change: setattr(stack, "selected_index", change["new"]), names=index_trait)
    if play is not None:  # on load the browser's jslink sets the slider from Play: keep Play where the slider is
        slider.observe(lambda change: setattr(play, "value", change["new"]), names="value")
    controls = widgets.HBox([play, slider] if play is not None else [slider])
    return FrameViewer(widgets.VBox([controls, stack]), stack, slider, frames, values, play, captions, offset,
                       index_trait)


def frame_slider(frames: Sequence[bytes], labels: Sequence[str] | None = None, description: str = "frame",
                 play: bool = False, interval_ms: int = 700, first: int = 0, value: int | None = None) -> FrameViewer:
    """A slider (values first..first+N-1) over any list of pre-rendered PNG frames (e.g. one per layer).

    Args:
        frames: PNG bytes (see :func:`to_png` for Figures and arrays).
        labels: optional caption per frame.
        description: slider label.
        play: add a Play button jslinked to the slider.
        interval_ms: time per frame while playing.
        first: the slider value of frame 0 (0 or 1: count layers or steps from 1).
        value: the slider value shown first (default ``first``).
    """
    frames = [to_png(f) for f in frames]
    if not frames:
        raise ValueError("frame_slider needs at least one frame")
    if first not in (0, 1):
        raise ValueError(f"first must be 0 or 1, got {first!r}")
    n, value = len(frames), first if value is None else value
    if not first <= value < first + n:
        raise ValueError(f"value must be in {first}..{first + n - 1}, got {value!r}")
    slider = widgets.IntSlider(value=value, min=first, max=first + n - 1, step=1, description=description)
    player = None
    if play:
        player = widgets.Play(value=value, min=first, max=first + n - 1, step=1, interval=interval_ms,
                              description="play")
        widgets.jslink((player, "value"), (slider, "value"))
    return _viewer(frames, list(range(first, first + n)), list(labels or []), slider, player,
                   offset=first)  # value v shows frame v - first


def decoding_frames(step_images: torch.Tensor | np.ndarray, is_masked: torch.Tensor | np.ndarray,
                    confidence: torch.Tensor | np.ndarray | None = None, grid: int = 16,
                    titles: Sequence[str] | None = None) -> list[bytes]:
    """Render one PNG per decoding step: image, latent mask, confidence map.

    Args:
        step_images: float (S, 3, H, W) in [-1, 1], the image after each step.
        is_masked: bool (S, L), hidden after each step (one image of a
            :class:`~maskgit_lib.decoding.DecodeTrace`: ``trace.is_masked[:, b]``).
        confidence: optional float (S, L), ``trace.confidence[:, b]`` (+inf = known).
        grid: tokens per side.
        titles: optional S title lines (default "step i / S").

    Returns:
        S PNG byte strings.
    """
    pix = viz.to_pixels(step_images)
    s = pix.shape[0]
    masks = viz._numpy(is_masked).reshape(s, -1)
    conf = None if confidence is None else viz._numpy(confidence).reshape(s, -1)
    frames = []
    for i in range(s):
        panels = [pix[i], mask_panel(masks[i], grid)]
        captions = ["image", f"latent mask: {int(masks[i].sum())} hidden"]
        if conf is not None:
            panels.append(confidence_panel(conf[i], grid))
            captions.append("confidence (dark = low)")
        title = titles[i] if titles is not None else f"step {i + 1} / {s}"
        frames.append(compose_frame(panels, captions, title))
    return frames


def decoding_player(frames: Sequence[bytes], labels: Sequence[str] | None = None, interval_ms: int = 700,
                    description: str = "step") -> FrameViewer:
    """Play button + step slider (jslinked) over pre-rendered decoding frames.

    Args:
        frames: PNG bytes, one per step (see :func:`decoding_frames`).
        labels: optional caption per frame.
        interval_ms: time per frame while playing.
        description: slider label.

    Returns:
        A :class:`FrameViewer`; slider values are 1..S (frame = value - 1).
    """
    frames = list(frames)
    if not frames:
        raise ValueError("decoding_player needs at least one frame")
    return frame_slider(frames, labels, description, play=True, interval_ms=interval_ms, first=1)


def mask_ratio_explorer(image_or_tokens: torch.Tensor | np.ndarray, schedule: str | Schedule = "cosine",
                        num_values: int = 21, over: str = "r", seed: int = 0, grid: int = 16,
                        tokens: torch.Tensor | np.ndarray | None = None) -> FrameViewer:
    """Slider over the MVTM mask ratio showing which tokens are hidden.

    For each slider position the number hidden is MVTM's n = ceil(gamma(r) L)
    (:func:`~maskgit_lib.masking.mvtm_num_masked`; with ``over="gamma"`` the
    slider sets gamma directly), and the hidden positions are the first n of
    one fixed random order (:func:`~maskgit_lib.masking.random_mask_with_counts`
    with the same seed), so masks grow as more tokens are hidden.

    Args:
        image_or_tokens: an image float (3, H, W) in [-1, 1] (hidden tokens'
            pixel blocks shown gray), or tokens int (L,) / (grid, grid) (each id in
            its own colour).
        schedule: gamma name or function (used with ``over="r"``).
        num_values: slider positions from 0 to 1.
        over: ``"r"`` (slider = r, hidden fraction gamma(r)) or ``"gamma"``.
        seed: seed of the random order of positions.
        grid: tokens per side.
        tokens: optional token ids (L,) of the image, shown as an extra panel
            (hidden tokens gray) when the first argument is an image.

    Returns:
        A :class:`FrameViewer` with a SelectionSlider (its index is the frame; ``slider.value`` is r or gamma) and
        ``values`` the slider value of each frame.
    """
    if over not in ("r", "gamma"):
        raise ValueError(f"over must be 'r' or 'gamma', got {over!r}")
    if num_values < 2:
        raise ValueError(f"num_values must be >= 2, got {num_values}")
    x = image_or_tokens if isinstance(image_or_tokens, torch.Tensor) else torch.as_tensor(np.asarray(image_or_tokens))
    length = grid * grid

    def hide_tokens(ids: torch.Tensor | np.ndarray, m: torch.Tensor) -> np.ndarray:
        return np.where(viz.token_mask_image(m, grid)[..., None] > 0, 128, token_panel(ids, grid)).astype(np.uint8)

    def panels_of(m: torch.Tensor) -> tuple[list[np.ndarray], list[str]]:
        if x.is_floating_point():
            panels, names = [viz.masked_token_image(x, m, grid)], ["image, hidden tokens gray"]
            if tokens is not None:
                panels.append(hide_tokens(tokens, m))
                names.append("token ids (colours)")
        else:
            panels, names = [hide_tokens(x, m)], ["token ids, hidden gray"]
        return panels + [mask_panel(m, grid)], names + ["latent mask (black = hidden)"]
    gamma = get_schedule(schedule)
    values = [i / (num_values - 1) for i in range(num_values)]
    frames, captions = [], []
    for v in values:
        if over == "r":
            g = float(gamma(v))
            n = int(mvtm_num_masked(torch.tensor([v]), length, schedule)[0])  # n = ceil(gamma(r) L), in [1, L]
        else:
            g = v
            n = int(np.clip(np.ceil(round(v * length, 9)), 1, length))  # n = ceil(gamma L), in [1, L]
        is_masked = random_mask_with_counts(torch.tensor([n]), length, torch.Generator().manual_seed(seed))[0]
        caption = (f"r = {v:.2f}, gamma(r) = {g:.2f} ({schedule_name(schedule)}): {n}/{length} tokens hidden"
                   if over == "r" else f"gamma = {v:.2f}: {n}/{length} tokens hidden")
        panels, names = panels_of(is_masked)
        frames.append(compose_frame(panels, names, caption))
        captions.append(caption)
    slider = widgets.SelectionSlider(options=[(f"{v:.2f}", v) for v in values], description=over,
                                     index=int(np.argmin([abs(v - 0.5) for v in values])))
    return _viewer(frames, values, captions, slider, None, index_trait="index")  # stack index = slider index


def schedule_explorer(run_fn: Callable[[str, int, int], Any], schedules: Sequence[str], max_steps: int = 16,
                      initial: tuple[str, int, int] | None = None) -> ScheduleExplorer:
    """Pick a schedule, T and the sweet spot s; recompute on release, memoised.

    Args:
        run_fn: ``run_fn(schedule, steps, sweet_spot)`` -> PNG bytes, a Figure or
            a uint8 (H, W, 3) array; called once per new key.
        schedules: schedule names for the dropdown.
        max_steps: largest T on the slider.
        initial: starting ``(schedule, T, s)``; default ``(schedules[0], min(8, max_steps), T)``.

    Returns:
        A :class:`ScheduleExplorer`, already showing the initial setting.
    """
    schedules = [str(s) for s in schedules]
    if not schedules:
        raise ValueError("schedule_explorer needs at least one schedule")
    name, steps, sweet = initial or (schedules[0], min(8, max_steps), min(8, max_steps))
    if name not in schedules or not 1 <= sweet <= steps <= max_steps:
        raise ValueError(f"initial {initial} must have a listed schedule and 1 <= s <= T <= {max_steps}")
    dropdown = widgets.Dropdown(options=schedules, value=name, description="schedule")
    t_slider = widgets.IntSlider(value=steps, min=1, max=max_steps, description="T", continuous_update=False)
    s_slider = widgets.IntSlider(value=sweet, min=1, max=steps, description="sweet spot s", continuous_update=False,
                                 style={"description_width": "initial"})
    image = widgets.Image(format="png")
    status = widgets.HTML()
    box = widgets.VBox([widgets.HBox([dropdown, t_slider, s_slider]), status, image])
    explorer = ScheduleExplorer(box, image, dropdown, t_slider, s_slider, status, run_fn)
    dropdown.observe(explorer._on_change, names="value")
    s_slider.observe(explorer._on_change, names="value")
    t_slider.observe(explorer._on_steps, names="value")
    explorer.update()
    return explorer
