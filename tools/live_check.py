"""Check the "draw your own hole" painter for real: JupyterLab, a live kernel, headless Chromium, a mouse.

The painter of notebook 04 (``maskgit_lib.paint.hole_painter``) is an ipycanvas canvas whose
mouse events run Python, so unlike the frame viewers (``tools/browser_check.py``, no kernel)
it can only be checked with a kernel behind the page. This tool:

1. copies notebook 04 (outputs stripped) into a temporary folder and starts JupyterLab on
   127.0.0.1 there (a random token; settings, workspaces, runtime and IPython folders in the
   temporary folder, news and update checks off), its kernel in smoke mode (``SMOKE=1``);
2. opens the notebook in headless Chromium (playwright driving Debian's ``/usr/bin/chromium``;
   every request and WebSocket to another host blocked, service workers off) and runs all cells;
   no cell may raise;
3. on the painter's canvas (rendered by ipycanvas's JupyterLab extension):
   a) **Clear**: the status reads 0 pixels and the canvas shows the kernel's image, pixel for
      pixel (every screen pixel of the canvas screenshot against the kernel's 8-bit image, scaled up);
   b) **paint**: a real mouse drag along a line. The kernel's mask (read back through the
      kernel) must cover the line and stay within the brush radius of it, the status must
      count its pixels, and the canvas must show exactly that mask in translucent red;
   c) **Fill** (the button): the status reports the fill and a decoding player appears;
      its frames are read from the kernel's widget state and the player is checked like a
      saved-state one (``browser_check``): it shows the finished fill, Play moves the
      visible frame and readout, the arrow keys step it;
4. saves a screenshot of the painter after the fill (default ``docs/img/hole_painter_live.png``)
   and prints one PASS/FAIL line per check; exits 1 on any failure.

Usage::

    python tools/live_check.py                # notebook 04
    python tools/live_check.py --screenshot ''
    make browser-check                        # both checks: saved state, then this one
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import inspect
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser_check as bc  # a sibling tool: setup, Report, the viewer checks

from maskgit_lib.paint import HOLE_ALPHA, HOLE_RGB, SCALE  # how the painter draws (canvas px per image px, hole colour)

ROOT = bc.ROOT
Report = bc.Report
NOTEBOOK = ROOT / "notebooks" / "04_iterative_decoding.ipynb"
DEFAULT_SCREENSHOT = ROOT / "docs" / "img" / "hole_painter_live.png"
PAINTER_CALL = "hole_painter("  # the painter's cell is the code cell that calls this
# the drag, in fractions of the image side: one straight segment, so whichever mouse-move events the kernel
# receives, the painted polyline is this line
DRAG = ((0.22, 0.28), (0.78, 0.66))
KNOWN_TOLERANCE, HOLE_TOLERANCE = 1, 2  # 8-bit levels: the image is sent losslessly (PNG); the blend rounds
LAB_SETTINGS = {  # user settings: no news feed, no update check (both would reach for the network)
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


# ----------------------------------------------------------------------------- pure parts (unit-tested)


def strip_outputs(nb: dict) -> dict:
    """A copy of a notebook with every output, execution count and saved widget state removed."""
    nb = json.loads(json.dumps(nb))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (nb.get("metadata") or {}).pop("widgets", None)
    return nb


def painter_cell(nb: dict) -> int:
    """Index of the one code cell that builds the painter; ValueError when there is none or several."""
    cells = [i for i, c in enumerate(nb.get("cells", []))
             if c.get("cell_type") == "code" and PAINTER_CALL in "".join(c.get("source", ""))]
    if len(cells) != 1:
        raise ValueError(f"expected one code cell calling {PAINTER_CALL!r}, found {len(cells)}: {cells}")
    return cells[0]


def lab_command(root: Path, port: int, token: str, settings: Path, workspaces: Path) -> list[str]:
    """The JupyterLab server command: 127.0.0.1 only, this token, no browser, no news, update or extension checks."""
    return [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", f"--LabServerApp.user_settings_dir={settings}",
            f"--LabServerApp.workspaces_dir={workspaces}", "--ServerApp.open_browser=False",
            "--LabApp.extension_manager=readonly"] + (["--allow-root"] if os.geteuid() == 0 else [])


def lab_env(tmp: Path) -> dict[str, str]:
    """The server's (and so the kernel's) environment: smoke mode, one thread, config in ``tmp``."""
    env = dict(os.environ, **bc.SMOKE_ENV, JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"),
               JUPYTER_DATA_DIR=str(tmp / "data"), JUPYTER_NO_CONFIG="1")
    for key in ("JUPYTER_TOKEN", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH"):  # only this environment's kernel and extensions
        env.pop(key, None)
    return env


def drag_points(size: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """:data:`DRAG` in image pixels of a ``size`` x ``size`` image (x, y)."""
    return tuple((round(fx * size, 2), round(fy * size, 2)) for fx, fy in DRAG)  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def segment_distance(size: int, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """(size, size) distance of every pixel centre to the segment a-b (image pixel coordinates, x then y)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(xx - (ax + t * dx), yy - (ay + t * dy))


def stroke_problems(missing: np.ndarray, a: tuple[float, float], b: tuple[float, float], radius: float) -> list[str]:
    """What is wrong with a mask painted by dragging a round brush of ``radius`` from a to b (image pixels).

    It must hold every pixel within ``radius - 1`` of the segment (a dab lands at least every half
    radius) and nothing farther than ``radius + 1`` (a dab paints the pixels whose centre is within
    ``radius`` of the pointer).
    """
    d = segment_distance(missing.shape[0], a, b)
    problems = []
    uncovered = int((~missing & (d <= max(radius - 1, 0.5))).sum())
    if uncovered:
        problems.append(f"{uncovered} pixel(s) within {radius - 1:g} px of the drag are not in the mask")
    stray = int((missing & (d > radius + 1)).sum())
    if stray:
        problems.append(f"{stray} mask pixel(s) lie farther than {radius + 1:g} px from the drag")
    return problems


def expected_canvas(pixels: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """(S*SCALE, S*SCALE, 3) float: what the painter draws: the image scaled up, the hole blended with red."""
    out = pixels.astype(np.float64)
    out[missing] = (1 - HOLE_ALPHA) * out[missing] + HOLE_ALPHA * np.array(HOLE_RGB, np.float64)
    return np.repeat(np.repeat(out, SCALE, 0), SCALE, 1)


def canvas_pixels(png: bytes, size: int) -> np.ndarray:
    """(size*SCALE, size*SCALE, 3) float: a canvas screenshot, checked to be the canvas's size."""
    from PIL import Image

    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float64)
    if shot.shape[:2] != (size * SCALE, size * SCALE):
        raise ValueError(f"canvas screenshot is {shot.shape[1]}x{shot.shape[0]}, not the canvas's "
                         f"{size * SCALE}x{size * SCALE}")
    return shot


def canvas_mismatch(shot: np.ndarray, want: np.ndarray, missing: np.ndarray) -> tuple[float, float]:
    """Largest |shot - want| (8-bit levels, any channel, any screen pixel) outside and inside the hole."""
    diff = np.abs(shot - want).max(-1)  # (H, W)
    hole = np.repeat(np.repeat(missing, SCALE, 0), SCALE, 1)
    return float(diff[~hole].max(initial=0.0)), float(diff[hole].max(initial=0.0))


def hole_count(status: str) -> int | None:
    """The pixel count of the painter's status line ('hole: 123 pixels (...)'), or None."""
    m = re.match(r"hole: (\d+) pixels", status.strip())
    return int(m.group(1)) if m else None


def reachable_state(state: dict[str, dict], root: str) -> dict[str, dict]:
    """The widget models reachable from ``root`` (children, layouts, ...) plus the links between them."""
    keep: set[str] = set()
    todo = [root]

    def refs(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value[len("IPY_MODEL_"):]] if value.startswith("IPY_MODEL_") else []
        if isinstance(value, (list, tuple)):
            return [r for v in value for r in refs(v)]
        if isinstance(value, dict):
            return [r for v in value.values() for r in refs(v)]
        return []

    while todo:
        mid = todo.pop()
        if mid in keep or mid not in state:
            continue
        keep.add(mid)
        todo.extend(refs(state[mid].get("state", {})))
    for mid, m in state.items():
        if m.get("model_name") in ("LinkModel", "DirectionalLinkModel"):
            ends = refs([m.get("state", {}).get("source"), m.get("state", {}).get("target")])
            if ends and all(e in keep for e in ends):
                keep.add(mid)
    return {mid: state[mid] for mid in keep}


# ----------------------------------------------------------------------------- the kernel side

# Python run in the notebook's kernel (through the page's kernel connection, not as a notebook cell).
_PROBE_MASK = """
import base64 as _b64, json as _json
import numpy as _np
from maskgit_lib.viz import to_pixels as _to_pixels
print(_json.dumps({"size": int(painter.missing.shape[0]), "brush": int(painter.brush.value),
                   "missing": _b64.b64encode(_np.packbits(painter.missing)).decode(),
                   "pixels": _b64.b64encode(_np.ascontiguousarray(_to_pixels(painter.image[None])[0])).decode(),
                   "status": painter.status.value}))
"""
# only the painter's models go back (the whole state of a real-mode kernel is megabytes: over the server's output
# rate limit), so reachable_state runs in the kernel
_PROBE_STATE = "from typing import Any\n" + inspect.getsource(reachable_state) + """
import json as _json, ipywidgets as _w
print(_json.dumps({"root": painter.widget.model_id, "player": painter.player is not None,
                   "state": reachable_state(_w.Widget.get_manager_state(drop_defaults=False)["state"],
                                            painter.widget.model_id)}))
"""


def decode_mask_probe(out: dict) -> tuple[np.ndarray, np.ndarray]:
    """(missing (S, S) bool, pixels (S, S, 3) uint8) from :data:`_PROBE_MASK`'s output."""
    size = out["size"]
    missing = np.unpackbits(np.frombuffer(base64.b64decode(out["missing"]), np.uint8))[: size * size]
    pixels = np.frombuffer(base64.b64decode(out["pixels"]), np.uint8).reshape(size, size, 3)
    return missing.reshape(size, size).astype(bool), pixels


# ----------------------------------------------------------------------------- the page side

_READY_JS = """
async () => {
  const app = window.jupyterapp;
  if (!app) return 'no window.jupyterapp';
  await app.started; await app.restored;
  const panel = app.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.content || !panel.content.model) return 'no notebook panel';
  await panel.sessionContext.ready;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!kernel) return 'no kernel';
  return kernel.status === 'idle' ? '' : 'kernel ' + kernel.status;
}
"""

# started, not awaited: the tool polls the cells, so a hanging cell meets the tool's timeout
_RUN_ALL_JS = "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }"

_CELLS_JS = """
() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.model.cells;
  const out = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    const errors = c.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue);
    out.push({index: i, count: c.executionCount, errors: errors});
  }
  const kernel = panel.sessionContext.session.kernel;
  return {cells: out, kernel: kernel ? kernel.status : 'none'};
}
"""

_KERNEL_JS = """
async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code: code, silent: false, store_history: false});
  let out = '', err = null;
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === 'stream' && msg.content.name === 'stdout') out += msg.content.text;
    else if (t === 'error') err = msg.content.ename + ': ' + msg.content.evalue;
  };
  await future.done;
  return {out: out, err: err};
}
"""

_MARK_JS = """
(index) => {  // mark the painter cell's output, its canvas, status and buttons; report what is there
  const panel = window.jupyterapp.shell.currentWidget;
  const cell = panel.content.widgets[index];
  cell.node.scrollIntoView();
  const out = cell.node.querySelector('.jp-OutputArea');
  if (!out) return {error: 'the painter cell has no output area'};
  out.setAttribute('data-live', 'painter');
  const canvases = [...out.querySelectorAll('canvas')].filter(c => c.offsetParent !== null);
  const errors = out.querySelectorAll('.jupyter-widgets-error-widget').length;
  const texts = %s;
  const textErrors = texts.filter(t => out.textContent.includes(t));
  const html = [...out.querySelectorAll('.widget-html-content')];
  return {canvases: canvases.length, errors: errors, textErrors: textErrors,
          width: canvases.length ? canvases[0].width : 0,
          buttons: [...out.querySelectorAll('button')].map(b => b.textContent.trim()),
          status: html.length ? html[0].textContent.trim() : null};
}
""" % json.dumps(list(bc.ERROR_TEXTS))

_STATUS_JS = """
() => {
  const out = document.querySelector('[data-live="painter"]');
  const html = out ? out.querySelector('.widget-html-content') : null;
  return html ? html.textContent.trim() : null;
}
"""

_LOCATE_PLAYER_JS = """
(i) => {  // the player inside the painter, marked as browser_check marks viewers
  %s
  const why = markViewer(document.querySelector('[data-live="painter"]'), i);
  return why ? why + ' in the painter' : '';
}
""" % bc.MARK_VIEWER_FN


def _poll(page: Any, js: str, done: Any, timeout_s: float, every_ms: int = 250, arg: Any = None) -> tuple[bool, Any]:
    """Evaluate ``js`` until ``done(value)``; returns (done in time, last value)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(js, arg) if arg is not None else page.evaluate(js)
        if done(value):
            return True, value
        if time.monotonic() > deadline:
            return False, value
        page.wait_for_timeout(every_ms)


def kernel_json(page: Any, code: str) -> dict:
    """Run ``code`` in the notebook's kernel; parse the JSON it prints. RuntimeError on a kernel error."""
    res = page.evaluate(_KERNEL_JS, code)
    if res["err"]:
        raise RuntimeError(f"kernel probe failed: {res['err']}")
    try:
        return json.loads(res["out"])
    except json.JSONDecodeError as e:
        raise RuntimeError(f"kernel probe printed no JSON ({len(res['out'])} characters: {res['out'][:200]!r}); "
                           "too large for the server's output rate limit?") from e


def _wait_stable_status(page: Any, timeout_s: float) -> str | None:
    """The status line once it has not changed for a second (the kernel has caught up with the mouse)."""
    last, since, deadline = None, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = page.evaluate(_STATUS_JS)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 1.0:
            return now
        page.wait_for_timeout(150)
    return last


def check_canvas(page: Any, report: Report, name: str, probe: dict, save: Path | None = None) -> None:
    """The canvas screenshot against what the kernel says it drew (image + red hole); kept as ``save``."""
    missing, pixels = decode_mask_probe(probe)
    canvas = page.locator('[data-live="painter"] canvas').first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    side = SCALE * probe["size"]
    if abs(box["width"] - side) > 0.5 or abs(box["height"] - side) > 0.5:
        report.check(False, name, f"the canvas is shown at {box['width']:.1f}x{box['height']:.1f} CSS px, not {side}x{side}")
        return
    png = page.screenshot(clip={"x": round(box["x"]), "y": round(box["y"]), "width": side, "height": side})
    if save is not None:
        save.write_bytes(png)
    shot = canvas_pixels(png, probe["size"])
    known, hole = canvas_mismatch(shot, expected_canvas(pixels, missing), missing)
    red = int(missing.sum())
    report.check(known <= KNOWN_TOLERANCE and hole <= HOLE_TOLERANCE, name,
                 f"every screen pixel of the canvas vs the kernel's image{' + red hole of ' + str(red) + ' px' if red else ''}:"
                 f" largest |diff| {known:.0f} outside the hole (limit {KNOWN_TOLERANCE}), "
                 + (f"{hole:.0f} inside (limit {HOLE_TOLERANCE}: rounding of the blend)" if red else "no hole")
                 + " (8-bit levels)")


def drag(page: Any, a: tuple[float, float], b: tuple[float, float], size: int, moves: int = 24) -> None:
    """A real mouse drag over the canvas of a ``size`` x ``size`` image from image pixel a to b (left button held)."""
    box = page.locator('[data-live="painter"] canvas').first.bounding_box()
    sx, sy = box["width"] / (SCALE * size), box["height"] / (SCALE * size)

    def at(p: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + p[0] * SCALE * sx, box["y"] + p[1] * SCALE * sy

    page.mouse.move(*at(a))
    page.mouse.down()
    for k in range(1, moves + 1):
        t = k / moves
        page.mouse.move(*at((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))))
        page.wait_for_timeout(25)
    page.mouse.up()


def check_painter(page: Any, index: int, report: Report, screenshot: Path | None, steps: int, folder: Path) -> None:
    """Steps 3a-3c of the module docstring on the loaded, executed notebook; canvas screenshots go in ``folder``."""
    painter = page.locator('[data-live="painter"]')
    info = page.evaluate(_MARK_JS, index)
    if not report.check(not info.get("error") and info["canvases"] == 1 and info["width"] > 0
                        and not info["errors"] and not info["textErrors"] and {"Fill", "Clear"} <= set(info["buttons"]),
                        "[painter] rendered",
                        info.get("error") or f"{info['canvases']} canvas ({info['width']} px wide), buttons "
                        f"{info['buttons']}, {info['errors']} error widget(s)"
                        + (f", error text {info['textErrors']}" if info["textErrors"] else "")
                        + f"; status {info['status']!r}"):
        return

    painter.locator("button", has_text="Clear").click()
    ok, status = _poll(page, _STATUS_JS, lambda s: hole_count(s or "") == 0, 20)
    report.check(ok, "[painter] Clear", f"status {status!r}")
    before = kernel_json(page, _PROBE_MASK)
    check_canvas(page, report, "[painter] canvas shows the image", before, folder / "canvas-cleared.png")

    a, b = drag_points(before["size"])
    drag(page, a, b, before["size"])
    _wait_stable_status(page, 30)
    probe = kernel_json(page, _PROBE_MASK)
    missing, _ = decode_mask_probe(probe)
    # the page's status line catches up with the kernel's (the kernel handles the mouse events in order)
    shown, status = _poll(page, _STATUS_JS, lambda s: s == probe["status"], 15)
    problems = stroke_problems(missing, a, b, probe["brush"])
    if not shown:
        problems.append(f"the page's status {status!r} is not the kernel's {probe['status']!r}")
    report.check(not problems and missing.any() and hole_count(status or "") == int(missing.sum()),
                 "[painter] mouse drag paints the mask",
                 f"drag {a} -> {b} (image px, brush {probe['brush']}): the kernel's mask holds "
                 f"{int(missing.sum())} px, status {status!r}" + ("; " + "; ".join(problems) if problems else
                                                                 ", covers the drag and stays within the brush"))
    check_canvas(page, report, "[painter] canvas shows the painted hole", probe, folder / "canvas-painted.png")

    painter.locator("button", has_text="Fill").click()
    ok, status = _poll(page, _STATUS_JS, lambda s: (s or "").startswith("filled"), 180, every_ms=500)
    live = kernel_json(page, _PROBE_STATE)
    report.check(ok and live["player"], "[painter] Fill", f"status {status!r}")
    if not (ok and live["player"]):
        return
    state = live["state"]
    viewers = [v for v in bc.find_viewers(state, [(index, live["root"])]) if v.view_id == live["root"]]
    located = page.evaluate(_LOCATE_PLAYER_JS, 0) if len(viewers) == 1 else f"{len(viewers)} viewers in the kernel"
    if not report.check(len(viewers) == 1 and not located and not viewers[0].problems, "[painter] player",
                        located or "; ".join(viewers[0].problems) or
                        f"{viewers[0].frames} frames in the kernel's stack, jslinked to the slider and Play"):
        return
    v = viewers[0]
    label = "[painter] player"
    bc.check_initial(page, 0, v, f"{label} shows the fill", report, "the kernel's stack")
    if screenshot is not None:
        view = painter.locator(".widget-vbox").first  # the painter's own box, not the cell's printed text
        view.scroll_into_view_if_needed()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(bc.shrink_png(view.screenshot()))
        print(f"      screenshot: {screenshot} ({screenshot.stat().st_size // 1024} KB)")
    bc.check_play(page, 0, v, label, report, None)
    bc.check_keys(page, 0, v, label, report, steps)


# ----------------------------------------------------------------------------- server + browser


@contextlib.contextmanager
def jupyterlab(folder: Path, tmp: Path, timeout_s: float = 90):
    """A JupyterLab server serving ``folder``; yields (base URL, token). Stopped (with its kernels) on exit."""
    token, port = secrets.token_hex(16), free_port()
    settings, workspaces = tmp / "lab-settings", tmp / "lab-workspaces"
    for rel, value in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    workspaces.mkdir(parents=True, exist_ok=True)
    log = (tmp / "jupyterlab.log").open("w")
    proc = subprocess.Popen(lab_command(folder, port, token, settings, workspaces), env=lab_env(tmp), cwd=folder,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise bc.SetupError(f"JupyterLab exited ({proc.returncode}): {_tail(tmp / 'jupyterlab.log')}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError), \
                    urllib.request.urlopen(f"{base}api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise bc.SetupError(f"JupyterLab did not answer in {timeout_s:.0f} s: {_tail(tmp / 'jupyterlab.log')}")
            time.sleep(0.5)
        yield base, token
    finally:
        stop_server(proc, base, token)
        log.close()


def stop_server(proc: subprocess.Popen, base: str, token: str) -> None:
    """Shut the server down with its kernels (each kernel runs in its own session, out of the server's group).

    First the server's own shutdown (it stops every kernel), then SIGTERM, then SIGKILL of its group.
    """
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            req = urllib.request.Request(f"{base}api/shutdown", method="POST", headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(req, timeout=10).close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the server also stops its kernels on SIGTERM
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _tail(path: Path, n: int = 6) -> str:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return " | ".join(lines[-n:])[-800:]


def run(notebook: Path, chromium: Path, report: Report, screenshot: Path | None, steps: int,
        run_timeout_s: float, keep: Path | None = None) -> None:
    from playwright.sync_api import sync_playwright

    nb = json.loads(notebook.read_text(encoding="utf-8"))
    index = painter_cell(nb)
    with contextlib.ExitStack() as stack:
        if keep is not None and keep.exists() and any(keep.iterdir()):
            raise bc.SetupError(f"--keep {keep}: the folder exists and is not empty; give a new or empty one")
        tmp = keep.resolve() if keep else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="live-check-")))
        work = tmp / "notebooks"
        work.mkdir(parents=True, exist_ok=True)
        (work / notebook.name).write_text(json.dumps(strip_outputs(nb), indent=1), encoding="utf-8")
        t0 = time.monotonic()
        base, token = stack.enter_context(jupyterlab(work, tmp))
        print(f"      JupyterLab up in {time.monotonic() - t0:.0f} s", flush=True)
        pw = stack.enter_context(sync_playwright())
        profile = stack.enter_context(tempfile.TemporaryDirectory(prefix="chromium-"))
        ctx, blocked = bc.offline_context(pw, profile, chromium, base, height=1000)  # the kernel's WebSocket is base's
        stack.callback(ctx.close)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}lab/tree/{notebook.name}?reset&token={token}", wait_until="load")
        ok, why = _poll(page, _READY_JS, lambda s: s == "", 120, every_ms=500)
        if not report.check(ok, "[lab] notebook open", "kernel idle" if ok else f"not ready: {why}"):
            return
        t0 = time.monotonic()
        page.evaluate(_RUN_ALL_JS)
        ok, cells = _poll(page, _CELLS_JS, lambda c: c["kernel"] == "idle" and (
            all(x["count"] for x in c["cells"]) or any(x["errors"] for x in c["cells"])), run_timeout_s, every_ms=1000)
        failed = [f"cell {x['index']}: {x['errors'][0]}" for x in cells["cells"] if x["errors"]]
        report.check(ok and not failed, "[lab] run all cells",
                     f"{sum(bool(x['count']) for x in cells['cells'])}/{len(cells['cells'])} code cells ran in "
                     f"{time.monotonic() - t0:.0f} s (SMOKE=1), kernel {cells['kernel']}"
                     + (f"; errors: {failed[:2]}" if failed else ""))
        if ok and not failed:
            check_painter(page, index, report, screenshot, steps, tmp)
        report.check(not errors, "[lab] page", f"{len(errors)} JS exception(s)"
                     + (f": {errors[0].splitlines()[0][:200]}" if errors else "")
                     + f"; {len(blocked)} request(s) to other hosts blocked"
                     + (f" ({', '.join(sorted({u.split('/')[2] for u in blocked if '//' in u}))})" if blocked else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", nargs="?", default=str(NOTEBOOK), help="the notebook with the painter cell")
    parser.add_argument("--screenshot", default=str(DEFAULT_SCREENSHOT),
                        help="where the screenshot of the painter after a fill goes ('' = none)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds for running all cells")
    parser.add_argument("--keys", type=int, default=3, help="arrow-key presses in the slider check")
    parser.add_argument("--keep", type=Path, help="keep the server's folder (notebook copy, log) here")
    args = parser.parse_args(argv)
    # a SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the server and its kernels are shut down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    t_start = time.monotonic()
    try:
        bc.ensure_playwright()
        chromium = bc.ensure_chromium()  # the widget JS of the saved-state check is not needed here
    except (bc.SetupError, subprocess.CalledProcessError) as e:
        print(f"FAIL  setup: {e}")
        return 1
    report = Report()
    notebook = Path(args.notebook)
    try:
        run(notebook, chromium, report, Path(args.screenshot) if args.screenshot else None, args.keys,
            args.timeout, args.keep)
    except Exception as e:  # noqa: BLE001 - a server or browser that fails is a failed check
        report.check(False, "live check", f"{type(e).__name__}: {str(e).strip()[:800]}")
    verdict = "FAIL" if report.failures else "PASS"
    print(f"{verdict}: {len(report.lines) - report.failures} passed, {report.failures} failed "
          f"({notebook.name} in JupyterLab, {time.monotonic() - t_start:.0f} s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
