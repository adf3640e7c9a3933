"""Check in headless Chromium, with no kernel, that the frame viewers animate from saved widget state.

``maskgit_lib.widgets`` puts every frame of a viewer (decoding player, frame slider,
mask-ratio explorer) in an ``ipywidgets.Stack`` whose ``selected_index`` is ``jslink``-ed
to the slider (and the Play button to the slider), so an executed notebook's saved widget
state should animate in an HTML export with no kernel behind it. This tool checks that
for real:

1. executes the notebooks in smoke mode (``SMOKE=1``, nbclient with
   ``store_widget_state=True``) into a temporary folder, or takes notebooks that are
   already executed (any notebook given that has outputs, e.g. ``notebooks/executed/*``
   from ``make notebooks``); a notebook whose code builds no frame viewer (see
   ``VIEWER_BUILDERS``) and shows none is skipped (SKIP line, not a failure);
2. exports each to HTML (nbconvert's lab template) and rewrites the page to load
   require.js and ``@jupyter-widgets/html-manager`` from a local cache instead of a CDN;
3. serves the pages on 127.0.0.1 and opens them in headless Chromium (playwright driving
   Debian's ``/usr/bin/chromium``), every request outside 127.0.0.1 blocked, and checks
   a) every widget rendered (no error placeholder), each viewer showing the frame the
   kernel left it on; b) decoding player: Play moves the visible frame and the slider
   readout; c) every viewer's slider, moved with the keyboard, changes the visible frame,
   readout and caption. The visible frame is identified by the SHA-256 of the shown
   image's bytes, matched against the frames in the saved state;
4. saves a screenshot of the first decoding player mid-animation (default
   ``docs/img/widgets_saved_state.png``) and prints one PASS/FAIL line per check;
   exits 1 on any failure.

Setup (first run; later runs are offline): ``pip install -r requirements-browser.txt``
when playwright is missing, ``apt-get install -y chromium`` when /usr/bin/chromium is
missing (root only), and ``npm pack`` of the two JS packages into ``.cache/browser/``,
checked against the integrity hashes pinned below.

Usage::

    python tools/browser_check.py                      # notebooks 03 and 04, smoke mode
    python tools/browser_check.py notebooks/executed/*.ipynb
    python tools/browser_check.py --setup-only
    make browser-check [BROWSER_NOTEBOOKS="..."]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import html as html_lib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "browser"
REQUIREMENTS = ROOT / "requirements-browser.txt"
CHROMIUM = Path("/usr/bin/chromium")
DEFAULT_NOTEBOOKS = ["notebooks/03_mvtm_training.ipynb", "notebooks/04_iterative_decoding.ipynb"]
DEFAULT_SCREENSHOT = ROOT / "docs" / "img" / "widgets_saved_state.png"
SCREENSHOT_MAX_BYTES = 300_000

# The html-manager that goes with ipywidgets 8.1 (@jupyter-widgets/base 6, controls 5), and require.js
# for its AMD bundle. npm pack checks each tarball against the registry's integrity; we check that
# against the one pinned here.
NPM_PACKAGES = {  # key: (name, version, the registry's sha512 integrity of the tarball)
    "html-manager": ("@jupyter-widgets/html-manager", "1.0.15",
                     "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="),
    "requirejs": ("requirejs", "2.3.7",
                  "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw=="),
}
# a notebook whose code calls one of these must display a frame viewer (the painter makes a player when filled)
VIEWER_BUILDERS = ("frame_slider(", "decoding_player(", "mask_ratio_explorer(", "hole_painter(")
ASSETS = "_widgets"  # URL folder (relative to the pages) the rewritten pages load the JS from
REQUIRE_JS = f"{ASSETS}/require.js"
RENDERER_JS = f"{ASSETS}/html-manager/embed-amd.js"

STATE_MIME = "application/vnd.jupyter.widget-state+json"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"
ERROR_TEXTS = ("Error displaying widget", "Error creating widget", "Could not create a view",
               "Loading widget", "Failed to load model class", "Click to show javascript error")
SMOKE_ENV = {"SMOKE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # a notebook's kernel
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class SetupError(RuntimeError):
    """Something the check needs is missing and could not be installed."""


# ----------------------------------------------------------------------------- pure Python parts


def widget_state(nb: dict) -> dict[str, dict] | None:
    """The saved widget models ``{model_id: {model_name, state, buffers, ...}}`` of a notebook, or None."""
    saved = (nb.get("metadata") or {}).get("widgets") or {}
    state = (saved.get(STATE_MIME) or {}).get("state")
    return state or None


def html_widget_state(page: str) -> dict[str, dict] | None:
    """The widget models saved in an exported HTML page (its widget-state script), or None."""
    m = re.search(r'<script type="' + re.escape(STATE_MIME) + r'">(.*?)</script>', page, re.S)
    if not m:
        return None
    text = m.group(1).replace("<\\/", "</")
    try:
        return json.loads(text).get("state") or None
    except json.JSONDecodeError:
        return json.loads(html_lib.unescape(text)).get("state") or None


def html_view_ids(page: str) -> list[str]:
    """Model ids of the widget views an HTML page displays, in page order."""
    ids = []
    for body in re.findall(r'<script type="' + re.escape(VIEW_MIME) + r'">(.*?)</script>', page, re.S):
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            ids.append(json.loads(body.strip()).get("model_id"))
    return [i for i in ids if i]


def displayed_ids(nb: dict) -> list[tuple[int, str]]:
    """``(cell index, model id)`` of every widget view in the notebook's outputs, in order."""
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        for o in cell.get("outputs", []) or []:
            view = (o.get("data") or {}).get(VIEW_MIME)
            if view and view.get("model_id"):
                out.append((i, view["model_id"]))
    return out


def _ref(value: Any) -> str | None:
    """Model id of an ``"IPY_MODEL_<id>"`` reference, else None."""
    return value[len("IPY_MODEL_"):] if isinstance(value, str) and value.startswith("IPY_MODEL_") else None


def _buffer(model: dict, name: str) -> bytes | None:
    for b in model.get("buffers", []) or []:
        if b.get("path") == [name]:
            data = b.get("data", "")
            return base64.b64decode(data) if b.get("encoding", "base64") == "base64" else data.encode()
    value = model.get("state", {}).get(name)
    return value.encode() if isinstance(value, str) else None


@dataclass
class Viewer:
    """A frame viewer found in saved widget state: stack + slider (+ Play), with what each frame shows."""

    kind: str  # "decoding player" (has Play), "mask-ratio explorer" (SelectionSlider), "frame slider"
    view_id: str | None  # the displayed model whose view holds the viewer (None: not displayed)
    cell: int | None
    box_id: str  # the VBox([controls, stack])
    stack_id: str
    slider_id: str
    play_id: str | None
    index_trait: str  # slider trait linked to stack.selected_index ("value" or "index")
    saved_index: int | None  # stack.selected_index in the saved state
    slider_saved: Any  # slider value in the saved state (index for a SelectionSlider)
    labels: list[str]  # SelectionSlider option labels (readout text per index), else []
    hashes: list[str | None]  # per stack child: sha256 of its Image bytes (None: no image, e.g. a placeholder)
    captions: list[str]  # per stack child: caption HTML value ('' if none)
    interval_ms: int = 0
    play_saved: Any = None
    problems: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        """Number of stack children that hold an image."""
        return sum(h is not None for h in self.hashes)

    def frame_of(self, digest: str | None) -> int | None:
        """Stack index of the child whose image has this SHA-256 (first one), or None."""
        return self.hashes.index(digest) if digest in self.hashes else None

    def readout_of(self, stack_index: int) -> str:
        """The slider readout the stack index corresponds to (the stack index is the linked trait)."""
        if self.labels:
            return self.labels[stack_index] if 0 <= stack_index < len(self.labels) else "?"
        return str(stack_index)


def find_viewers(state: dict[str, dict], displayed: list[tuple[int, str]] | None = None) -> list[Viewer]:
    """Every Stack whose ``selected_index`` is jslinked (a LinkModel) to a slider, with its frames.

    ``displayed`` (from :func:`displayed_ids`) says which view shows each viewer. A problem
    found in the state (a frame that is not an image, a view that is missing) is in
    ``viewer.problems``.
    """
    displayed = displayed or []
    links = []
    for mid, m in state.items():
        if m.get("model_name") in ("LinkModel", "DirectionalLinkModel"):
            s = m.get("state", {})
            src, tgt = s.get("source") or [None, None], s.get("target") or [None, None]
            links.append((_ref(src[0]), src[1], _ref(tgt[0]), tgt[1], mid))

    def model(mid: str | None) -> dict:
        return state.get(mid or "", {})

    parents: dict[str, str] = {}
    for mid, m in state.items():
        for child in m.get("state", {}).get("children", []) or []:
            if _ref(child):
                parents.setdefault(_ref(child), mid)

    def ancestors(mid: str) -> list[str]:
        chain = [mid]
        while chain[-1] in parents and parents[chain[-1]] not in chain:
            chain.append(parents[chain[-1]])
        return chain

    order = {mid: k for k, (_, mid) in enumerate(displayed)}
    viewers = []
    for src, src_trait, tgt, tgt_trait, _ in links:
        if tgt_trait != "selected_index" or model(tgt).get("model_name") != "StackModel":
            continue
        stack, slider = model(tgt), model(src)
        problems = []
        if not slider:
            problems.append(f"the slider {src} linked to the stack is not in the saved state")
        play = None
        for a, a_trait, b, b_trait, _ in links:
            if b == src and b_trait == "value" and model(a).get("model_name") == "PlayModel":
                play = a
            elif a == src and a_trait == "value" and model(b).get("model_name") == "PlayModel":
                play = b
        hashes, captions = [], []
        for child in stack.get("state", {}).get("children", []):
            page = model(_ref(child))
            kids = [model(_ref(k)) for k in page.get("state", {}).get("children", []) or []]
            image = next((k for k in kids if k.get("model_name") == "ImageModel"), None)
            caption = next((k for k in kids if k.get("model_name") == "HTMLModel"), None)
            data = _buffer(image, "value") if image else None
            hashes.append(hashlib.sha256(data).hexdigest() if data else None)
            captions.append(str((caption or {}).get("state", {}).get("value", "")))
            if not page:
                problems.append(f"stack child {child} is not in the saved state")
        box = parents.get(tgt, tgt)
        chain = ancestors(box)
        view = next(((cell, v) for cell, v in displayed if v in chain), (None, None))
        sstate = slider.get("state", {})
        kind = ("decoding player" if play else
                "mask-ratio explorer" if slider.get("model_name") == "SelectionSliderModel" else "frame slider")
        viewers.append(Viewer(
            kind=kind, view_id=view[1], cell=view[0], box_id=box, stack_id=tgt, slider_id=src, play_id=play,
            index_trait=src_trait, saved_index=stack.get("state", {}).get("selected_index"),
            slider_saved=sstate.get(src_trait), labels=list(sstate.get("_options_labels", []) or []),
            hashes=hashes, captions=captions, interval_ms=int(model(play).get("state", {}).get("interval", 100) or 100),
            play_saved=model(play).get("state", {}).get("value") if play else None, problems=problems))
    return sorted(viewers, key=lambda v: order.get(v.view_id, len(order)))


def link_mismatches(state: dict[str, dict]) -> list[str]:
    """jslinks whose two ends disagree in the saved state.

    On load the browser's LinkModel sets the target from the source, so such a widget
    does not show what the kernel left it showing (e.g. a slider moved in Python while
    the Play button linked to it was not).
    """
    out = []
    for mid, m in state.items():
        if m.get("model_name") not in ("LinkModel", "DirectionalLinkModel"):
            continue
        s = m.get("state", {})
        (src, a), (tgt, b) = s.get("source") or [None, None], s.get("target") or [None, None]
        sm, tm = state.get(_ref(src) or "", {}), state.get(_ref(tgt) or "", {})
        if sm and tm and a in sm.get("state", {}) and b in tm.get("state", {}) and sm["state"][a] != tm["state"][b]:
            out.append(f"{sm.get('model_name')}.{a} = {sm['state'][a]!r} but {tm.get('model_name')}.{b} = "
                       f"{tm['state'][b]!r}: the browser will set the second from the first")
    return out


def _descendants(state: dict[str, dict], mid: str) -> list[str]:
    """``mid`` and every model under it through ``children`` references."""
    seen, todo = [], [mid]
    while todo:
        m = todo.pop()
        if m in seen or m not in state:
            continue
        seen.append(m)
        todo += [r for r in map(_ref, state[m].get("state", {}).get("children", []) or []) if r]
    return seen


def expects_viewer(nb: dict) -> bool:
    """Whether a code cell calls one of the library's frame-viewer builders (:data:`VIEWER_BUILDERS`)."""
    return any(c.get("cell_type") == "code" and any(b in "".join(c.get("source", "")) for b in VIEWER_BUILDERS)
               for c in nb.get("cells", []))


def state_problems(nb: dict, require_viewer: bool = True) -> list[str]:
    """Why a notebook's saved widget state cannot animate in a browser (empty list: it can).

    Problems: no saved state (while widgets are displayed, or a viewer is required); a displayed
    widget missing from it; no frame viewer displayed (when ``require_viewer``); a displayed Stack
    that no slider is jslinked to (it could only change frames with a kernel). Viewers that were
    built but never displayed do not count.
    """
    state = widget_state(nb)
    shown = displayed_ids(nb)
    if state is None:
        if not require_viewer and not shown:
            return []  # no widgets at all: nothing to animate
        return ["no saved widget state (metadata.widgets); execute with store_widget_state=True"]
    missing = [m for _, m in shown if m not in state]
    problems = [f"{len(missing)} displayed widget(s) missing from the saved state: {', '.join(missing[:3])}"] if missing else []
    viewers = [v for v in find_viewers(state, shown) if v.view_id is not None]
    linked = {v.stack_id for v in viewers}
    for cell, mid in shown:
        for sub in _descendants(state, mid):
            if state[sub].get("model_name") == "StackModel" and sub not in linked:
                problems.append(f"the Stack {sub} shown in cell {cell} is not jslinked to a slider: "
                                "without a kernel it cannot change frames")
    if require_viewer and not viewers and not any("not jslinked" in p for p in problems):
        problems.append("no frame viewer displayed (no Stack jslinked to a slider in any output)")
    for v in viewers:
        problems += [f"{v.kind} in cell {v.cell}: {p}" for p in v.problems]
        if v.frames == 0:
            problems.append(f"{v.kind} in cell {v.cell}: its stack holds no image")
    return problems


_REQUIRE_RE = re.compile(r'(<script[^>]*\ssrc=")([^"]*?/require(?:\.min)?\.js)("[^>]*>)', re.I)
_RENDERER_RE = re.compile(r"(var widgetRendererSrc = )'[^']*';")
_REQUIRE_TAG_RE = re.compile(r'<script[^>]*\ssrc="[^"]*/require(?:\.min)?\.js"[^>]*>\s*</script>', re.I)
_PATHS_MARK = "/* local widget assets */ "


def localize_html(page: str, require_url: str = REQUIRE_JS, renderer_url: str = RENDERER_JS) -> tuple[str, dict[str, int]]:
    """Point an nbconvert HTML export at local copies of require.js and the widget renderer.

    Replaces the ``<script src=".../require(.min).js">`` tag's URL and every
    ``var widgetRendererSrc = '...';`` of nbconvert's widget snippet (the CDN's
    ``@jupyter-widgets/html-manager@<range>/dist/embed-amd.js``), and maps the
    ``@jupyter-widgets`` AMD names to the renderer's folder (``require.config``) so that
    the bundle's icon fonts load from beside it.

    Returns:
        the new page and ``{"require": n, "renderer": m}``, how many URLs were replaced.
    """
    page, n_req = _REQUIRE_RE.subn(lambda m: m.group(1) + require_url + m.group(3), page)
    page, n_ren = _RENDERER_RE.subn(lambda m: f"{m.group(1)}'{renderer_url}';", page)
    if n_req and _PATHS_MARK not in page:
        # The bundle finds its icon fonts (the Play button's) beside its AMD module's URL, which
        # require.js derives from the module name: map the name to the renderer's folder.
        folder = renderer_url.rsplit("/", 1)[0] if "/" in renderer_url else "."
        config = f'<script>{_PATHS_MARK}require.config({{paths: {{"@jupyter-widgets": {json.dumps(folder)}}}}});</script>'
        page = _REQUIRE_TAG_RE.sub(lambda m: m.group(0) + "\n" + config, page, count=1)
    return page, {"require": n_req, "renderer": n_ren}


def remote_scripts(page: str) -> list[str]:
    """URLs of scripts the page would fetch from another host (absolute or protocol-relative)."""
    urls = re.findall(r'<script[^>]*\ssrc="((?:https?:)?//[^"]+)"', page, re.I)
    urls += re.findall(r"widgetRendererSrc = '((?:https?:)?//[^']+)'", page)
    return urls


def shrink_png(data: bytes, max_bytes: int = SCREENSHOT_MAX_BYTES) -> bytes:
    """PNG bytes re-encoded (optimised, then 256-colour, then halved) until under ``max_bytes``."""
    from PIL import Image

    im = Image.open(io.BytesIO(data)).convert("RGB")

    def encode(x: Image.Image) -> bytes:
        buf = io.BytesIO()
        x.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    out = encode(im)
    if len(out) > max_bytes:
        im = im.quantize(256, method=Image.Quantize.MEDIANCUT)
        out = encode(im)
    while len(out) > max_bytes and min(im.size) > 64:
        im = im.resize((im.width // 2, im.height // 2))
        out = encode(im)
    return out


# ----------------------------------------------------------------------------- setup


def _run(cmd: list[str], **kw: Any) -> None:
    print("  $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def ensure_playwright() -> None:
    """pip install -r requirements-browser.txt into this interpreter when playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print(f"setup: playwright is missing: installing {REQUIREMENTS.name} into {sys.prefix}")
        _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-r", str(REQUIREMENTS)])
        import importlib

        importlib.invalidate_caches()  # so this process sees the new package


def ensure_chromium(path: Path = CHROMIUM) -> Path:
    """Debian's chromium, installed with apt-get (as root) when ``path`` is missing."""
    if path.exists():
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SetupError(f"{path} is missing: install Debian's chromium (apt-get install -y chromium) and rerun")
    print(f"setup: {path} is missing: installing Debian's chromium package with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-q", "chromium"], env=env)
    if not path.exists():
        raise SetupError(f"apt-get installed chromium but {path} is still missing")
    return path


def _safe_members(tar: tarfile.TarFile, keep: re.Pattern) -> list[tarfile.TarInfo]:
    out = []
    for m in tar.getmembers():
        if m.isfile() and keep.match(m.name) and ".." not in Path(m.name).parts and not m.name.startswith("/"):
            out.append(m)
    return out


def ensure_js(cache: Path = CACHE) -> Path:
    """require.js and the html-manager's dist/ (no source maps) in ``cache``, fetched once with npm pack.

    Layout: ``cache/_widgets/require.js`` and ``cache/_widgets/html-manager/embed-amd.js`` (+ fonts).
    Returns ``cache/_widgets``, the folder served as ``_widgets/``.
    """
    assets = cache / ASSETS
    marker = assets / ".versions"
    want = json.dumps({k: v[:2] for k, v in NPM_PACKAGES.items()}, sort_keys=True)
    if marker.exists() and marker.read_text() == want and (assets / "require.js").exists() \
            and (assets / "html-manager" / "embed-amd.js").exists():
        return assets
    npm = shutil.which("npm")
    if npm is None:
        raise SetupError("npm is missing (apt-get install -y npm): it fetches the widget JS once into .cache/browser/")
    print(f"setup: fetching the widget JS into {assets.relative_to(ROOT) if assets.is_relative_to(ROOT) else assets}")
    tmp = Path(tempfile.mkdtemp(prefix="npm-", dir=cache.parent if cache.parent.exists() else None))
    try:
        new = Path(tempfile.mkdtemp(prefix="assets-", dir=tmp))
        for key, (name, version, pinned) in NPM_PACKAGES.items():
            print(f"  $ npm pack {name}@{version}", flush=True)
            res = subprocess.run([npm, "pack", f"{name}@{version}", "--json", "--pack-destination", str(tmp)],
                                 check=True, capture_output=True, text=True, cwd=tmp)
            info = json.loads(res.stdout)[0]
            integrity = info.get("integrity", "")
            if integrity != pinned:
                raise SetupError(f"npm pack {name}@{version}: integrity {integrity} is not the pinned {pinned}")
            with tarfile.open(tmp / info["filename"]) as tar:
                if key == "requirejs":
                    members = _safe_members(tar, re.compile(r"package/require\.js$"))
                    dest = new
                else:
                    members = _safe_members(tar, re.compile(r"package/dist/[^/]+$(?<!\.map)"))
                    dest = new / "html-manager"
                dest.mkdir(parents=True, exist_ok=True)
                for m in members:
                    (dest / Path(m.name).name).write_bytes(tar.extractfile(m).read())
        if not (new / "require.js").exists() or not (new / "html-manager" / "embed-amd.js").exists():
            raise SetupError(f"the npm packages lack require.js or dist/embed-amd.js: {sorted(p.name for p in new.rglob('*'))[:10]}")
        (new / ".versions").write_text(want)
        cache.mkdir(parents=True, exist_ok=True)
        if assets.exists():
            shutil.rmtree(assets)
        shutil.move(str(new), str(assets))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return assets


def setup() -> tuple[Path, Path]:
    """Everything the check needs; returns (chromium, served JS folder)."""
    ensure_playwright()
    return ensure_chromium(), ensure_js()


# ----------------------------------------------------------------------------- notebooks -> HTML


def is_executed(nb: dict) -> bool:
    return any(c.get("cell_type") == "code" and c.get("outputs") for c in nb.get("cells", []))


def execute(path: Path, timeout: int) -> Any:
    """Run a notebook in smoke mode (SMOKE=1, one torch thread) in its folder, saving widget state."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = SMOKE_ENV
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=timeout, kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
                       resources={"metadata": {"path": str(path.parent)}}, store_widget_state=True).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def export_html(nb: Any) -> str:
    """nbconvert's lab-template HTML of an executed notebook, pointed at the local widget JS."""
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    page, counts = localize_html(page)
    if widget_state(nb) is not None and counts["renderer"] == 0:
        raise SetupError("the exported page has no widget renderer script to point at the local copy "
                         "(nbconvert's template changed?)")
    return page


# ----------------------------------------------------------------------------- the browser

# JS: mark the one slider+stack box inside ``area`` as viewer ``i`` (for READ_JS); '' or what is wrong
MARK_VIEWER_FN = """
function markViewer(area, i) {
  const stacks = [...area.querySelectorAll('.widget-box')].filter(b =>
      b.parentElement && b.parentElement.classList.contains('widget-vbox') && b.previousElementSibling &&
      b.previousElementSibling.querySelector('.widget-slider'));
  if (stacks.length !== 1) return 'found ' + stacks.length + ' slider+stack boxes';
  stacks[0].parentElement.setAttribute('data-check-viewer', String(i));
  stacks[0].setAttribute('data-check-stack', String(i));
  return '';
}
"""

_LOCATE_JS = """
(viewers) => {
  %s
  const scripts = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const out = [];
  viewers.forEach((v, i) => {
    const s = scripts.find(e => { try { return JSON.parse(e.textContent).model_id === v.view_id } catch (x) { return false } });
    if (!s) { out.push('no view script for model ' + v.view_id); return; }
    const area = s.previousElementSibling;
    if (!area || !area.classList.contains('widget-subarea')) { out.push('view of ' + v.view_id + ' not rendered'); return; }
    const why = markViewer(area, i);
    out.push(why ? why + ' in the view of ' + v.view_id : '');
  });
  return out;
}
""" % MARK_VIEWER_FN

READ_JS = """
async (i) => {
  const box = document.querySelector('[data-check-viewer="' + i + '"]');
  const stack = box.querySelector('[data-check-stack]');
  const imgs = [...stack.querySelectorAll('img')].filter(e => e.offsetParent !== null);
  const readout = box.querySelector('.widget-readout');
  const cap = stack.querySelector('.widget-html-content');
  let digest = null, ok = false;
  if (imgs.length === 1) {
    const img = imgs[0];
    ok = img.complete && img.naturalWidth > 0;
    const buf = await (await fetch(img.src)).arrayBuffer();
    digest = [...new Uint8Array(await crypto.subtle.digest('SHA-256', buf))]
      .map(b => b.toString(16).padStart(2, '0')).join('');
  }
  return {images: imgs.length, decoded: ok, digest: digest,
          readout: readout ? (readout.value !== undefined && readout.tagName === 'INPUT' ? readout.value : readout.textContent).trim() : null,
          caption: cap ? cap.textContent.trim() : ''};
}
"""

_CLIP_JS = """
(i) => {  // the viewer's content (controls + shown frame), not the full-width box around it
  const box = document.querySelector('[data-check-viewer="' + i + '"]');
  const parts = [...box.querySelectorAll('.widget-play, .widget-slider, [data-check-stack] img, [data-check-stack] .widget-html')];
  const r = parts.map(e => e.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0);
  const x0 = Math.min(...r.map(b => b.left)), y0 = Math.min(...r.map(b => b.top));
  const x1 = Math.max(...r.map(b => b.right)), y1 = Math.max(...r.map(b => b.bottom));
  const pad = 6;
  return {x: Math.max(0, x0 - pad + window.scrollX), y: Math.max(0, y0 - pad + window.scrollY),
          width: x1 - x0 + 2 * pad, height: y1 - y0 + 2 * pad};
}
"""

_RENDERED_JS = """
() => {
  const scripts = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  const areas = [...document.querySelectorAll('.widget-subarea')];
  const texts = %s;
  const errorWidgets = document.querySelectorAll('.widget-subarea .jupyter-widgets-error-widget').length;
  const textErrors = areas.filter(a => !a.querySelector('.jupyter-widgets-error-widget')
                                       && texts.some(t => a.textContent.includes(t))).length;
  const pending = [...document.querySelectorAll('.widget-subarea img')].filter(i => !i.complete).length;
  return {scripts: scripts.length, areas: areas.length, filled: areas.filter(a => a.children.length > 0).length,
          widgets: document.querySelectorAll('.jupyter-widgets').length,
          sliders: document.querySelectorAll('.widget-slider').length, errors: errorWidgets + textErrors,
          pending: pending};
}
""" % json.dumps(list(ERROR_TEXTS))


def third_party_views(state: dict[str, dict], displayed: list[tuple[int, str]] | None = None) -> dict[str, int]:
    """``{module: n}``: shown models whose view comes from a module the html-manager does not bundle.

    Offline their JS (e.g. ipycanvas's) is missing, so each shows an error placeholder;
    such widgets (a canvas to paint on) need a kernel anyway. ``displayed`` (from
    :func:`displayed_ids`) limits the count to the widgets under the displayed ones.
    """
    ids = (list(state) if displayed is None else
           list(dict.fromkeys(m for _, top in displayed for m in _descendants(state, top))))
    out: dict[str, int] = {}
    for mid in ids:
        st = state[mid].get("state", {})
        module = st.get("_view_module") or ""
        if st.get("_view_name") and module and not module.startswith("@jupyter-widgets/"):
            out[module] = out.get(module, 0) + 1
    return out


@dataclass
class Report:
    failures: int = 0
    lines: list[str] = field(default_factory=list)

    def check(self, ok: bool, name: str, detail: str) -> bool:
        line = f"{'PASS' if ok else 'FAIL'}  {name}: {detail}"
        print(line, flush=True)
        self.lines.append(line)
        self.failures += not ok
        return ok


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path):
    """Serve ``folder`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def frame_number(v: Viewer, stack_index: int | None) -> str:
    """'k/n' (1-based frame among the image frames) of a stack index."""
    if stack_index is None:
        return "none"
    first = next(i for i, h in enumerate(v.hashes) if h is not None)
    return f"{stack_index - first + 1}/{v.frames}"


def check_page(page: Any, name: str, viewers: list[Viewer], report: Report, screenshot: Path | None,
               steps: int, render_timeout_s: float, third_party: dict[str, int] | None = None) -> bool:
    """Run the in-browser checks on one loaded page; returns whether a screenshot was saved."""
    third_party = third_party or {}
    deadline = time.monotonic() + render_timeout_s
    info = page.evaluate(_RENDERED_JS)
    while time.monotonic() < deadline:
        info = page.evaluate(_RENDERED_JS)
        if info["scripts"] and info["filled"] >= info["scripts"] and not info["pending"]:
            break
        page.wait_for_timeout(250)
    located = page.evaluate(_LOCATE_JS, [{"view_id": v.view_id} for v in viewers])
    allowed = sum(third_party.values())
    ok = (bool(info["scripts"]) and info["filled"] >= info["scripts"] and info["errors"] <= allowed
          and not any(located))
    detail = (f"{info['filled']}/{info['scripts']} widget views rendered ({info['widgets']} .jupyter-widgets, "
              f"{info['sliders']} sliders), {info['errors']} error placeholder(s)"
              + (f" ({allowed} allowed: kernel-only widget(s) of {', '.join(sorted(third_party))}, whose JS is "
                 "not bundled with the html-manager)" if allowed else "")
              + f", {len(viewers)} frame viewer(s): " + ", ".join(f"{v.kind} ({v.frames} frames)" for v in viewers))
    if any(located):
        detail += "; " + "; ".join(x for x in located if x)
    report.check(ok, f"[{name}] widgets rendered", detail)
    if not ok:
        return False
    shot = False
    for i, v in enumerate(viewers):
        label = f"[{name}] {v.kind} (cell {v.cell})"
        check_initial(page, i, v, f"{label} initial frame", report, "saved state")
        if v.play_id is not None:
            shot |= check_play(page, i, v, label, report, screenshot if not shot else None)
        check_keys(page, i, v, label, report, steps)
    return shot


def check_initial(page: Any, i: int, v: Viewer, name: str, report: Report, source: str) -> None:
    """Viewer ``i`` shows one decoded image: the frame ``v.saved_index`` (what ``source`` holds), with its readout."""
    now = page.evaluate(READ_JS, i)
    shown = v.frame_of(now["digest"])
    want = v.saved_index
    report.check(now["images"] == 1 and now["decoded"] and shown is not None and shown == want
                 and now["readout"] == v.readout_of(want), name,
                 f"shows frame {frame_number(v, shown)} (readout {now['readout']!r}), {source}: frame "
                 f"{frame_number(v, want)} (readout {v.readout_of(want)!r}); {now['images']} visible image(s)")


def check_play(page: Any, i: int, v: Viewer, label: str, report: Report, screenshot: Path | None) -> bool:
    """Play moves viewer ``i`` (marked ``data-check-viewer``) forward; saves a screenshot mid-animation if asked."""
    box = page.locator(f'[data-check-viewer="{i}"]')
    before = page.evaluate(READ_JS, i)
    start = v.frame_of(before["digest"])
    buttons = box.locator(".widget-play button")
    if buttons.count() == 0:
        report.check(False, f"{label} Play", "no Play button (.widget-play button) in the view")
        return False
    if buttons.count() < 2:
        report.check(False, f"{label} Play", f"{buttons.count()} button(s) in the Play widget, expected play/pause, stop, repeat")
        return False
    if start is not None and start == len(v.hashes) - 1:  # at the end Play would not move: stop (back to min) first
        buttons.nth(1).click()
        page.wait_for_timeout(2 * v.interval_ms)
        before = page.evaluate(READ_JS, i)
        start = v.frame_of(before["digest"])
    buttons.first.click()
    t0 = time.monotonic()
    saved = False
    if screenshot is not None:
        page.wait_for_timeout(int(1.6 * v.interval_ms))
        box.scroll_into_view_if_needed()
        png = page.screenshot(clip=page.evaluate(_CLIP_JS, i), full_page=True)  # clip in page coordinates
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(shrink_png(png))
        saved = True
    wait = 3.5 * v.interval_ms / 1000 - (time.monotonic() - t0)
    if wait > 0:
        page.wait_for_timeout(int(wait * 1000))
    after = page.evaluate(READ_JS, i)
    end = v.frame_of(after["digest"])
    waited = time.monotonic() - t0
    ok = (end is not None and start is not None and end > start and after["readout"] != before["readout"]
          and after["readout"] == v.readout_of(end))
    report.check(ok, f"{label} Play",
                 f"frame {frame_number(v, start)} -> {frame_number(v, end)} after Play ({waited:.1f} s, interval "
                 f"{v.interval_ms} ms), readout {before['readout']!r} -> {after['readout']!r}, "
                 f"{v.frames} frames in the stack"
                 + ("; the visible image is no frame of the stack" if end is None else
                    "; Play did not move the slider (is Play jslinked to it, Play -> slider?)" if end == start else ""))
    if saved:
        print(f"      screenshot mid-animation: {screenshot} ({screenshot.stat().st_size // 1024} KB)")
    buttons.nth(1).click()  # stop: playing off, back to the first frame
    page.wait_for_timeout(300)
    return saved


def check_keys(page: Any, i: int, v: Viewer, label: str, report: Report, steps: int) -> None:
    """``steps`` arrow keys on viewer ``i``'s focused slider handle change the frame, readout and caption."""
    box = page.locator(f'[data-check-viewer="{i}"]')
    handle = box.locator(".widget-slider .noUi-handle").first
    if handle.count() == 0:
        report.check(False, f"{label} slider (keyboard)", "no slider handle (.noUi-handle) in the view")
        return
    before = page.evaluate(READ_JS, i)
    start = v.frame_of(before["digest"])
    key = "ArrowLeft" if start is not None and start >= len(v.hashes) - 1 else "ArrowRight"
    handle.focus()
    for _ in range(steps):
        page.keyboard.press(key)
        page.wait_for_timeout(60)
    page.wait_for_timeout(300)
    after = page.evaluate(READ_JS, i)
    end = v.frame_of(after["digest"])
    captions_differ = len(set(c for c, h in zip(v.captions, v.hashes) if h is not None)) > 1
    ok = (end is not None and start is not None and end != start and after["readout"] != before["readout"]
          and after["readout"] == v.readout_of(end)
          and (not captions_differ or (after["caption"] != before["caption"]
                                       and after["caption"] == html_lib.unescape(re.sub("<[^>]+>", "", v.captions[end])).strip())))
    detail = (f"{key} x{steps} on the focused handle: frame {frame_number(v, start)} -> {frame_number(v, end)}, "
              f"readout {before['readout']!r} -> {after['readout']!r}")
    if captions_differ:
        detail += f", caption {before['caption']!r} -> {after['caption']!r}"
    report.check(ok, f"{label} slider (keyboard)", detail)


def offline_context(pw: Any, profile: str, chromium: Path, base: str, height: int) -> tuple[Any, list[str]]:
    """Headless Chromium (a persistent context in ``profile``) that reaches only ``base``.

    Every HTTP request elsewhere is aborted and every WebSocket elsewhere closed (their URLs are
    appended to the returned list); service workers are blocked (they would bypass the routing).
    """
    ctx = pw.chromium.launch_persistent_context(profile, executable_path=str(chromium), headless=True,
                                                args=CHROMIUM_ARGS, viewport={"width": 1280, "height": height},
                                                service_workers="block")
    blocked: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(base):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    def close_socket(ws: Any) -> None:
        blocked.append(ws.url)
        ws.close()

    ws_base = base.replace("http", "ws", 1)
    ctx.route("**/*", route)
    ctx.route_web_socket(lambda url: not url.startswith(ws_base), close_socket)
    return ctx, blocked


def run_browser(pages: list[tuple[str, Path, list[Viewer], dict[str, int]]], root: Path, chromium: Path, report: Report,
                screenshot: Path | None, steps: int, render_timeout_s: float) -> None:
    from playwright.sync_api import sync_playwright

    with serve(root) as base, sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        ctx, blocked = offline_context(pw, profile, chromium, base, height=900)
        try:
            for name, html_path, viewers, third_party in pages:
                page = ctx.new_page()
                errors: list[str] = []  # uncaught JS exceptions
                console: list[str] = []  # console errors, less the blocked requests' "Failed to load resource"
                missing: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: console.append(m.text) if m.type == "error"
                        and "net::ERR_FAILED" not in m.text else None)
                page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
                n_blocked = len(blocked)
                page.goto(base + html_path.name, wait_until="load")
                if check_page(page, name, viewers, report, screenshot, steps, render_timeout_s, third_party):
                    screenshot = None
                new_blocked = blocked[n_blocked:]
                widget_js = [u for u in new_blocked + missing if "jupyter-widgets" in u or "require" in u
                             or u.rsplit("/", 1)[-1] in {"embed-amd.js", "require.js"}]
                report.check(not widget_js and not errors, f"[{name}] page offline",
                             ("widget JS served from 127.0.0.1" if not widget_js else "widget JS NOT loaded from 127.0.0.1")
                             + f", {len(errors)} JS exception(s); "
                             f"{len(new_blocked)} request(s) to other hosts blocked"
                             + (f" ({', '.join(sorted({u.split('/')[2] for u in new_blocked if '//' in u}))}: "
                                "MathJax, third-party widget JS)" if new_blocked else "")
                             + (f"; widget JS that failed: {widget_js[:3]}" if widget_js else "")
                             + (f"; {len(missing)} local 404(s): {missing[:3]}" if missing else ""))
                if errors or console:
                    print(f"      JS exceptions and console errors ({len(errors) + len(console)}): "
                          + " | ".join(e.splitlines()[0][:160] for e in (errors + console)[:4] if e))
                page.close()
        finally:
            ctx.close()


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help=f"notebooks (default: {' '.join(DEFAULT_NOTEBOOKS)}); "
                        "one with outputs is used as it is, one without is executed in smoke mode")
    parser.add_argument("--execute", action="store_true", help="execute even notebooks that have outputs")
    parser.add_argument("--setup-only", action="store_true", help="install what is missing and stop")
    parser.add_argument("--out", type=Path, help="keep the executed notebooks and HTML pages here (default: a temp folder)")
    parser.add_argument("--screenshot", default=str(DEFAULT_SCREENSHOT),
                        help="where the decoding player's mid-animation screenshot goes ('' = none)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per executed cell")
    parser.add_argument("--keys", type=int, default=3, help="arrow-key presses in the slider check")
    args = parser.parse_args(argv)

    t_start = time.monotonic()
    try:
        chromium, assets = setup()
    except (SetupError, subprocess.CalledProcessError) as e:
        print(f"FAIL  setup: {e}")
        return 1
    if args.setup_only:
        print(f"setup done: {chromium}, widget JS in {assets}")
        return 0
    import nbformat

    report = Report()
    paths = [Path(p) for p in (args.notebooks or [str(ROOT / n) for n in DEFAULT_NOTEBOOKS])]
    with contextlib.ExitStack() as stack:
        out = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="browser-check-")))
        out.mkdir(parents=True, exist_ok=True)
        link = out / ASSETS
        if link.is_symlink() or link.exists():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
        link.symlink_to(assets, target_is_directory=True)
        pages = []
        skipped = 0
        names: set[str] = set()
        for path in paths:
            name = path.stem
            while name in names:  # two notebooks of one name (from different folders)
                name += "+"
            names.add(name)
            if not path.exists():
                report.check(False, f"[{name}] notebook", f"{path} does not exist")
                continue
            nb = nbformat.read(path, as_version=4)
            if args.execute or not is_executed(nb):
                t0 = time.monotonic()
                print(f"executing {path} (SMOKE=1) ...", flush=True)
                try:
                    nb = execute(path, args.timeout)
                except Exception as e:  # noqa: BLE001 - any cell error fails this notebook's check
                    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
                    report.check(False, f"[{name}] execute", f"{type(e).__name__}: " + " | ".join(text[-3:])[-600:])
                    continue
                print(f"      executed in {time.monotonic() - t0:.0f} s", flush=True)
                nbformat.write(nb, out / f"{name}.ipynb")
            required = expects_viewer(nb)
            problems = state_problems(nb, require_viewer=required)
            viewers = [v for v in find_viewers(widget_state(nb) or {}, displayed_ids(nb)) if v.view_id is not None]
            if not problems and not viewers and not required:
                print(f"SKIP  [{name}] no frame viewer in this notebook ({len(displayed_ids(nb))} other widget view(s), "
                      "e.g. progress bars): nothing to animate", flush=True)
                skipped += 1
                continue
            if not report.check(not problems, f"[{name}] saved widget state",
                                "; ".join(problems) if problems else
                                f"{len(widget_state(nb))} models, {len(viewers)} frame viewer(s) jslinked to their slider"):
                continue
            mismatched = link_mismatches(widget_state(nb))
            report.check(not mismatched, f"[{name}] jslinks agree",
                         "; ".join(mismatched[:3]) if mismatched else "both ends of every jslink hold the same value")
            page = export_html(nb)
            remote = [u for u in remote_scripts(page) if "jupyter-widgets" in u or "require" in u]
            saved_in_page = html_widget_state(page) or {}
            views = html_view_ids(page)
            if not report.check(not remote and len(saved_in_page) == len(widget_state(nb)) and views,
                                f"[{name}] HTML export",
                                f"widget JS from {ASSETS}/, {len(saved_in_page)} models in the page's widget state, "
                                f"{len(views)} widget view(s)" + (f"; still loads widget JS from elsewhere: {remote}"
                                                                  if remote else "")):
                continue
            html_path = out / f"{name}.html"
            html_path.write_text(page, encoding="utf-8")
            pages.append((name, html_path, viewers, third_party_views(widget_state(nb), displayed_ids(nb))))
        if pages:
            try:
                run_browser(pages, out, chromium, report, Path(args.screenshot) if args.screenshot else None,
                            args.keys, render_timeout_s=60)
            except Exception as e:  # noqa: BLE001 - a browser that does not start is a failed check
                report.check(False, "browser", f"{type(e).__name__}: {str(e).strip()[:800]}")
    if not report.lines:
        report.check(False, "checks", f"none of the {len(paths)} notebook(s) holds a frame viewer: nothing was checked")
    took = time.monotonic() - t_start
    verdict = "FAIL" if report.failures else "PASS"
    print(f"{verdict}: {len(report.lines) - report.failures} passed, {report.failures} failed, {skipped} skipped "
          f"({len(paths)} notebook(s), {took:.0f} s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
