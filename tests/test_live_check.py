"""tools/live_check.py without a browser or a server: the notebook copy, the server command, the
stroke and canvas comparisons, and the kernel probes run against a real painter.

The browser part (``make browser-check``) needs JupyterLab, Chromium and playwright.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import ipywidgets
import numpy as np
import pytest
import torch
from PIL import Image

from maskgit_lib import paths, widgets
from maskgit_lib.inpaint import Inpainter, InpaintSettings
from maskgit_lib.paint import HOLE_RGBA, SCALE, hole_painter
from maskgit_lib.viz import to_pixels

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))  # live_check imports its sibling browser_check
spec = importlib.util.spec_from_file_location("live_check", TOOLS / "live_check.py")
lc = importlib.util.module_from_spec(spec)
sys.modules["live_check"] = lc
spec.loader.exec_module(lc)

pytestmark = pytest.mark.usefixtures("one_thread")
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "04_iterative_decoding.ipynb"


@pytest.fixture
def painter(ckpts):
    inpainter = Inpainter.from_checkpoints(ckpts / paths.VQGAN_CHECKPOINT_NAME,
                                           ckpts / paths.TRANSFORMER_CHECKPOINT_NAME, device="cpu")
    g = torch.Generator().manual_seed(0)
    return hole_painter(torch.rand(3, 64, 64, generator=g) * 2 - 1, inpainter, InpaintSettings(steps=3), brush=4)


def _drag(painter, a, b, events=9):
    """The mouse callbacks as ipycanvas calls them for a drag from image pixel a to b."""
    pts = [(SCALE * (a[0] + t * (b[0] - a[0])), SCALE * (a[1] + t * (b[1] - a[1]))) for t in np.linspace(0, 1, events)]
    painter._down(*pts[0])
    for p in pts[1:]:
        painter._move(*p)
    painter._up(*pts[-1])


def _probe(code: str, painter) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<probe>", "exec"), {"painter": painter})  # the tool's own probe code, as the kernel runs it
    return json.loads(out.getvalue())


def test_the_css_colour_the_painter_fills_with_is_the_one_the_check_expects():
    r, g, b, a = (float(x) for x in HOLE_RGBA[HOLE_RGBA.index("(") + 1:-1].split(","))
    assert (lc.HOLE_RGB, lc.HOLE_ALPHA) == ((r, g, b), a)


def test_notebook_copy_and_painter_cell():
    nb = json.loads(NOTEBOOK.read_text())
    i = lc.painter_cell(nb)
    assert lc.PAINTER_CALL in "".join(nb["cells"][i]["source"])
    nb["cells"][i]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}]
    nb["cells"][i]["execution_count"] = 3
    nb["metadata"]["widgets"] = {"state": {}}
    copy = lc.strip_outputs(nb)
    assert nb["cells"][i]["outputs"] and "widgets" in nb["metadata"]  # the original is untouched
    assert copy["cells"][i]["outputs"] == [] and copy["cells"][i]["execution_count"] is None
    assert "widgets" not in copy["metadata"] and [c["source"] for c in copy["cells"]] == [c["source"] for c in nb["cells"]]
    with pytest.raises(ValueError, match="found 0"):
        lc.painter_cell({"cells": [c for k, c in enumerate(nb["cells"]) if k != i]})
    with pytest.raises(ValueError, match="found 2"):
        lc.painter_cell({"cells": nb["cells"] + [nb["cells"][i]]})


def test_server_command_is_local_and_quiet(tmp_path):
    cmd = lc.lab_command(tmp_path, 8123, "abc", tmp_path / "s", tmp_path / "w")
    assert "--ServerApp.ip=127.0.0.1" in cmd and "--ServerApp.port=8123" in cmd and "--IdentityProvider.token=abc" in cmd
    assert "--LabApp.news_url=" in cmd and "--LabApp.extension_manager=readonly" in cmd and "--no-browser" in cmd
    assert "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate" in cmd
    assert not any("0.0.0.0" in c for c in cmd)
    env = lc.lab_env(tmp_path)
    assert env["SMOKE"] == "1" and "JUPYTER_TOKEN" not in env
    for key in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        assert Path(env[key]).is_relative_to(tmp_path)
    news = lc.LAB_SETTINGS["@jupyterlab/apputils-extension/notification.jupyterlab-settings"]
    assert news == {"fetchNews": "false", "checkForUpdates": False}


def test_stroke_check_accepts_the_painters_drag_and_rejects_wrong_masks(painter):
    a, b = lc.drag_points(64)
    assert a == (14.08, 17.92) and b == (49.92, 42.24)
    _drag(painter, a, b)
    mask = painter.missing.copy()
    assert lc.stroke_problems(mask, a, b, painter.brush.value) == []
    assert lc.hole_count(painter.status.value) == int(mask.sum())
    shifted = np.roll(mask, 4, axis=1)  # the mouse mapped 4 px off
    assert any("not in the mask" in p for p in lc.stroke_problems(shifted, a, b, 4))
    stray = mask.copy()
    stray[60, 2] = True
    assert lc.stroke_problems(stray, a, b, 4) == ["1 mask pixel(s) lie farther than 5 px from the drag"]
    assert "not in the mask" in lc.stroke_problems(np.zeros_like(mask), a, b, 4)[0]
    short = np.zeros_like(mask)  # only the first half of the drag arrived
    half = painter.missing.copy()
    painter.clear()
    _drag(painter, a, ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2))
    short |= painter.missing
    assert lc.stroke_problems(short, a, b, 4) and not lc.stroke_problems(half, a, b, 4)


def test_canvas_comparison_is_exact_for_png_and_catches_jpeg_and_wrong_masks():
    g = np.random.default_rng(0)
    pixels = g.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    missing = np.zeros((64, 64), bool)
    missing[10:20, 5:40] = True
    want = lc.expected_canvas(pixels, missing)
    assert want.shape == (64 * SCALE, 64 * SCALE, 3)

    def encode(array, fmt):
        buf = io.BytesIO()
        Image.fromarray(np.round(array).astype(np.uint8)).save(buf, fmt, quality=75)
        return buf.getvalue()

    shot = lc.canvas_pixels(encode(want, "PNG"), 64)
    assert lc.canvas_mismatch(shot, want, missing) == (0.0, 0.5)  # the blend is fractional, the PNG rounds it
    known, _ = lc.canvas_mismatch(lc.canvas_pixels(encode(want, "JPEG"), 64), want, missing)  # ipycanvas's RGB path
    assert known > lc.KNOWN_TOLERANCE
    other = np.zeros_like(missing)
    other[40:50, 5:40] = True
    known, hole = lc.canvas_mismatch(shot, lc.expected_canvas(pixels, other), other)
    assert known > 20 and hole > 20  # red where the kernel has none, and the other way round
    with pytest.raises(ValueError, match="not the canvas's 256x256"):
        lc.canvas_pixels(encode(want[:-1], "PNG"), 64)


def test_probes_read_the_painter(painter):
    _drag(painter, (10.0, 10.0), (30.0, 12.0))
    out = _probe(lc._PROBE_MASK, painter)
    missing, pixels = lc.decode_mask_probe(out)
    assert np.array_equal(missing, painter.missing) and out["brush"] == 4
    assert np.array_equal(pixels, to_pixels(painter.image[None])[0]) and out["status"] == painter.status.value
    painter.fill(torch.Generator().manual_seed(0))
    live = _probe(lc._PROBE_STATE, painter)
    assert live["player"] and live["root"] == painter.widget.model_id
    state = live["state"]  # the painter's models only, picked in the kernel
    assert painter.player.stack.model_id in state and painter.canvas.model_id in state
    here = lc.reachable_state(ipywidgets.Widget.get_manager_state(drop_defaults=False)["state"], live["root"])
    assert state == json.loads(json.dumps(here))
    unrelated = widgets.decoding_player([widgets.compose_frame([np.zeros((8, 8, 3), np.uint8)], ["x"], "f")] * 2)
    assert unrelated.stack.model_id not in lc.reachable_state(ipywidgets.Widget.get_manager_state()["state"],
                                                              live["root"])
    viewers = [v for v in lc.bc.find_viewers(state, [(0, live["root"])]) if v.view_id == live["root"]]
    assert len(viewers) == 1 and viewers[0].frames == len(painter.player.frames) == 3 and viewers[0].play_id
    assert viewers[0].saved_index == painter.player.stack.selected_index  # the finished fill
