""""Draw your own hole": paint a mask on an image with the mouse and watch MaskGIT fill it step by step.

The canvas is an :class:`ipycanvas.Canvas` showing the 64x64 image scaled up; dragging
the mouse paints round brush strokes into a pixel mask (True = missing), drawn over the
image in red. **Fill** runs :meth:`maskgit_lib.inpaint.Inpainter.inpaint` with the
painter's settings and shows every decoding step in a
:func:`maskgit_lib.widgets.decoding_player`. Painting and filling need a kernel (they
run Python); the player they produce works without one, like every frame viewer.

All logic lives in plain methods (:meth:`HolePainter.stroke`, :meth:`HolePainter.fill`,
:meth:`HolePainter.clear`) that the mouse callbacks call, so tests drive the painter
without a browser::

    painter = hole_painter(image, inpainter)
    painter.stroke([(60, 60), (180, 200)])   # canvas pixels, as the mouse reports them
    result = painter.fill()                 # InpaintResult; painter.player shows the steps
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from ipycanvas import Canvas, hold_canvas

from .inpaint import Inpainter, InpaintResult, InpaintSettings
from .viz import to_pixels
from .widgets import FrameViewer, decoding_frames, decoding_player

SCALE = 4  # canvas pixels per image pixel
HOLE_RGB, HOLE_ALPHA = (230, 40, 40), 0.55  # the painted hole: translucent red over the image
HOLE_RGBA = f"rgba({HOLE_RGB[0]}, {HOLE_RGB[1]}, {HOLE_RGB[2]}, {HOLE_ALPHA})"


@dataclass(repr=False)
class HolePainter:
    """The painter's widgets, its mask and the last fill.

    Attributes:
        widget: the container to display.
        canvas: the :class:`ipycanvas.Canvas` (``S * SCALE`` pixels a side).
        image: float32 (3, S, S) in [-1, 1], the picture painted on.
        missing: bool (S, S), the painted hole (True = missing).
        brush: IntSlider, brush radius in image pixels.
        fill_button, clear_button: the two buttons.
        status: HTML line (hole size, what happened).
        output: box that receives the decoding player after a fill.
        inpainter: the models; settings: how to sample.
        player: the :class:`~maskgit_lib.widgets.FrameViewer` of the last fill, or None.
    """

    widget: widgets.Widget
    canvas: Canvas
    image: torch.Tensor
    missing: np.ndarray
    brush: widgets.IntSlider
    fill_button: widgets.Button
    clear_button: widgets.Button
    status: widgets.HTML
    output: widgets.Box
    inpainter: Inpainter
    settings: InpaintSettings = field(default_factory=InpaintSettings)
    player: FrameViewer | None = None
    _drawing: bool = False
    _last: tuple[float, float] | None = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def size(self) -> int:
        return self.missing.shape[0]

    def redraw(self) -> None:
        """Draw the image, then the hole in translucent red."""
        pixels = np.repeat(np.repeat(to_pixels(self.image[None])[0], SCALE, 0), SCALE, 1)  # (S*SCALE, S*SCALE, 3)
        opaque = np.full(pixels.shape[:2] + (1,), 255, np.uint8)  # RGBA: ipycanvas sends it as PNG (RGB: lossy JPEG)
        pixels = np.concatenate([pixels, opaque], axis=-1)  # (S*SCALE, S*SCALE, 4)
        with hold_canvas():
            self.canvas.clear()
            self.canvas.put_image_data(pixels, 0, 0)
            self.canvas.fill_style = HOLE_RGBA
            ys, xs = np.nonzero(self.missing)
            if len(xs):
                self.canvas.fill_rects(xs * SCALE, ys * SCALE, SCALE, SCALE)
        frac = float(self.missing.mean())
        self.status.value = f"hole: {int(self.missing.sum())} pixels ({100 * frac:.1f}% of the image)"

    def dab(self, x: float, y: float) -> None:
        """Paint one round dab of the brush at canvas point (x, y) into the mask."""
        cx, cy, r = x / SCALE, y / SCALE, self.brush.value
        yy, xx = np.mgrid[0:self.size, 0:self.size]
        self.missing |= (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r

    def stroke(self, points: Sequence[tuple[float, float]]) -> None:
        """Paint a polyline through canvas points (dabs every half brush radius), then redraw."""
        pts = [tuple(map(float, p)) for p in points]
        for (x0, y0), (x1, y1) in zip(pts[:1] + pts[:-1], pts):
            n = max(1, int(np.hypot(x1 - x0, y1 - y0) / max(1.0, SCALE * self.brush.value / 2)))
            for t in np.linspace(0.0, 1.0, n + 1):
                self.dab(x0 + t * (x1 - x0), y0 + t * (y1 - y0))
        self.redraw()

    def clear(self, _button=None) -> None:
        """Forget the hole and the last fill."""
        self.missing[:] = False
        self.output.children = ()
        self.player = None
        self.redraw()

    def fill(self, generator: torch.Generator | None = None) -> InpaintResult:
        """Inpaint the painted hole with :attr:`settings`; show every step in a player.

        Returns:
            The :class:`~maskgit_lib.inpaint.InpaintResult` (one image; ``trace`` kept).
        """
        if not self.missing.any():
            self.status.value = "paint a hole first (drag the mouse over the image)"
            raise ValueError("no hole painted: drag the mouse over the image first")
        missing = torch.from_numpy(self.missing.copy())[None]  # (1, S, S)
        images = self.image[None].to(self.inpainter.device)
        result = self.inpainter.inpaint(images, missing, self.settings, generator, keep_trace=True)
        steps = self.inpainter.decode_trace_images(result.trace, images=images, pixel_missing=missing,
                                                   blend=self.settings.blend)[:, 0]  # (T, 3, S, S)
        frames = decoding_frames(steps.cpu(), result.trace.is_masked[:, 0].cpu(), result.trace.confidence[:, 0].cpu())
        self.player = decoding_player(frames)
        self.player.slider.value = len(frames)  # show the finished fill; play from step 1
        self.output.children = (self.player.widget,)
        self.status.value = (f"filled {int(self.missing.sum())} pixels ({int(result.is_masked0.sum())} tokens) in "
                             f"{len(frames)} steps; press play to watch")
        return result

    # callbacks: the buttons pass themselves, ipycanvas passes canvas coordinates
    def _fill_clicked(self, _button) -> None:
        if not self.missing.any():
            self.status.value = "paint a hole first (drag the mouse over the image)"
            return
        self.fill()

    def _down(self, x: float, y: float) -> None:
        self._drawing, self._last = True, (x, y)
        self.stroke([(x, y)])

    def _move(self, x: float, y: float) -> None:
        if self._drawing and self._last is not None:
            self.stroke([self._last, (x, y)])
            self._last = (x, y)

    def _up(self, x: float, y: float) -> None:
        self._drawing, self._last = False, None


def hole_painter(image: torch.Tensor, inpainter: Inpainter, settings: InpaintSettings | None = None,
                 brush: int = 4) -> HolePainter:
    """Build the painter for one image.

    Args:
        image: float (3, S, S) in [-1, 1] (e.g. :func:`maskgit_lib.data.load_image`).
        inpainter: the models (:meth:`Inpainter.from_checkpoints`).
        settings: sampler settings (default :class:`InpaintSettings`, the library's defaults).
        brush: initial brush radius in image pixels.
    """
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
        raise ValueError(f"image must be float (3, S, S) in [-1, 1], got {tuple(image.shape)}")
    if image.shape[-1] != inpainter.image_size:
        raise ValueError(f"image is {image.shape[-1]}x{image.shape[-1]} but the models work at "
                         f"{inpainter.image_size}x{inpainter.image_size}; resize it first (maskgit_lib.data.load_image)")
    size = image.shape[-1]
    side = f"{size * SCALE}px"  # one canvas pixel per screen pixel (an ipycanvas canvas otherwise fills its row)
    canvas = Canvas(width=size * SCALE, height=size * SCALE, layout=widgets.Layout(width=side, height=side))
    brush_slider = widgets.IntSlider(value=brush, min=1, max=max(2, size // 4), description="brush")
    fill_button, clear_button = widgets.Button(description="Fill", button_style="primary"), widgets.Button(
        description="Clear")
    status, output = widgets.HTML(), widgets.VBox()
    frame = widgets.Box([canvas], layout=widgets.Layout(border="1px solid #999", width="fit-content"))
    box = widgets.VBox([widgets.HBox([brush_slider, fill_button, clear_button]), status, frame, output])
    painter = HolePainter(box, canvas, image.detach().float().cpu(), np.zeros((size, size), bool), brush_slider,
                          fill_button, clear_button, status, output, inpainter, settings or InpaintSettings())
    canvas.on_mouse_down(painter._down)
    canvas.on_mouse_move(painter._move)
    canvas.on_mouse_up(painter._up)
    canvas.on_mouse_out(painter._up)
    fill_button.on_click(painter._fill_clicked)
    clear_button.on_click(painter.clear)
    painter.redraw()
    return painter
