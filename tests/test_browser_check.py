"""tools/browser_check.py without a browser: saved-state parsing, viewer discovery, HTML rewriting.

The browser part (``make browser-check``) needs Chromium and playwright; these tests need
neither: they build real viewers with ``maskgit_lib.widgets``, take the kernel-side widget
state (what nbclient saves with ``store_widget_state=True``) and export it with nbconvert.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
from pathlib import Path

import ipywidgets
import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

from maskgit_lib import widgets

TOOL = Path(__file__).resolve().parent.parent / "tools" / "browser_check.py"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
spec = importlib.util.spec_from_file_location("browser_check", TOOL)
bc = importlib.util.module_from_spec(spec)
sys.modules["browser_check"] = bc  # dataclasses look their module up by name
spec.loader.exec_module(bc)


def _frames(n: int = 5) -> list[bytes]:
    return [widgets.compose_frame([np.full((8, 8, 3), 40 * i, np.uint8)], ["panel"], f"step {i + 1}/{n}")
            for i in range(n)]


def _notebook(*shown: ipywidgets.Widget, state: bool = True) -> nbformat.NotebookNode:
    """A notebook whose cells display ``shown``, with the kernel's widget state saved (as nbclient does)."""
    nb = nbformat.v4.new_notebook()
    for w in shown:
        cell = nbformat.v4.new_code_cell("viewer")
        cell.outputs = [nbformat.v4.new_output("display_data", data={
            bc.VIEW_MIME: {"version_major": 2, "version_minor": 0, "model_id": w.model_id}, "text/plain": "VBox()"})]
        nb.cells.append(cell)
    if state:
        nb.metadata["widgets"] = {bc.STATE_MIME: ipywidgets.Widget.get_manager_state()}
    return nb


@pytest.fixture()
def player():
    return widgets.decoding_player(_frames(5))


def test_find_viewers_decoding_player(player):
    nb = _notebook(player.widget)
    viewers = [v for v in bc.find_viewers(bc.widget_state(nb), bc.displayed_ids(nb)) if v.view_id]
    assert len(viewers) == 1
    v = viewers[0]
    assert (v.kind, v.frames, v.cell, v.view_id) == ("decoding player", 5, 0, player.widget.model_id)
    assert (v.stack_id, v.slider_id, v.play_id) == (player.stack.model_id, player.slider.model_id, player.play.model_id)
    assert v.hashes == [None] + [hashlib.sha256(f).hexdigest() for f in player.frames]  # child 0: placeholder
    assert v.saved_index == 1 and v.readout_of(3) == "3" and v.interval_ms == 700
    assert v.frame_of(hashlib.sha256(player.frames[2]).hexdigest()) == 3
    assert bc.state_problems(nb) == [] and bc.link_mismatches(bc.widget_state(nb)) == []


def test_find_viewers_mask_ratio_explorer():
    explorer = widgets.mask_ratio_explorer(torch.randint(0, 30, (256,)), "cosine", num_values=6)
    nb = _notebook(explorer.widget)
    (v,) = [v for v in bc.find_viewers(bc.widget_state(nb), bc.displayed_ids(nb)) if v.view_id]
    assert (v.kind, v.index_trait, v.play_id, v.frames) == ("mask-ratio explorer", "index", None, 6)
    assert v.labels == ["0.00", "0.20", "0.40", "0.60", "0.80", "1.00"]
    assert v.readout_of(v.saved_index) == "0.40" and v.captions[v.saved_index].startswith("r = 0.40")


def test_slider_moved_in_python_keeps_play_in_step(player):
    """The browser's jslink sets the slider from Play on load: Play must follow the slider in Python."""
    player.slider.value = 4
    assert player.play.value == 4
    nb = _notebook(player.widget)
    assert bc.link_mismatches(bc.widget_state(nb)) == []
    state = bc.widget_state(nb)
    state[player.play.model_id]["state"]["value"] = 1  # what the saved state held before the fix
    (msg,) = [m for m in bc.link_mismatches(state) if "PlayModel" in m]
    assert "PlayModel.value = 1 but IntSliderModel.value = 4" in msg


def test_state_problems_name_what_is_missing(player):
    assert bc.state_problems(_notebook(player.widget, state=False)) == [
        "no saved widget state (metadata.widgets); execute with store_widget_state=True"]
    nb = _notebook(player.widget)
    state = bc.widget_state(nb)
    for mid in [m for m, x in state.items() if x["model_name"] == "LinkModel"
                and x["state"]["target"] == [f"IPY_MODEL_{player.stack.model_id}", "selected_index"]]:
        del state[mid]  # no jslink to the stack: the page cannot change frames
    (problem,) = bc.state_problems(nb)
    assert f"the Stack {player.stack.model_id} shown in cell 0 is not jslinked to a slider" in problem
    assert bc.state_problems(_notebook(ipywidgets.HTML("no viewer"))) == [
        "no frame viewer displayed (no Stack jslinked to a slider in any output)"]
    gone = _notebook(player.widget)
    del bc.widget_state(gone)[player.widget.model_id]
    assert any("missing from the saved state" in p for p in bc.state_problems(gone))


def test_a_notebook_without_viewers_is_only_skipped_when_its_code_builds_none(player):
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])  # no widgets, no saved state
    assert not bc.expects_viewer(bare) and bc.state_problems(bare, require_viewer=False) == []
    bars = _notebook(ipywidgets.FloatProgress(value=1.0))  # e.g. tqdm's progress bars
    assert bc.state_problems(bars, require_viewer=False) == []
    lost = _notebook(ipywidgets.HTML("the viewer is gone"))
    lost.cells[0].source = "player = widgets.decoding_player(frames)\nplayer"
    assert bc.expects_viewer(lost)  # its code builds a viewer, so a missing one is a failure
    assert bc.state_problems(lost, require_viewer=bc.expects_viewer(lost)) == [
        "no frame viewer displayed (no Stack jslinked to a slider in any output)"]
    shown_no_state = _notebook(ipywidgets.FloatProgress(value=1.0), state=False)
    assert bc.state_problems(shown_no_state, require_viewer=False) == [
        "no saved widget state (metadata.widgets); execute with store_widget_state=True"]
    for name in ("02_vqgan_tokenizer", "06_fid"):  # the course's notebooks without a frame viewer
        assert not bc.expects_viewer(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4))
    for name in ("01_attention_from_scratch", "03_mvtm_training", "04_iterative_decoding", "05_mask_schedules"):
        assert bc.expects_viewer(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4))


def test_export_is_localized_and_keeps_state(player):
    page = bc.export_html(_notebook(player.widget))
    assert [u for u in bc.remote_scripts(page) if "jupyter-widgets" in u or "require" in u] == []
    assert f'<script src="{bc.REQUIRE_JS}"></script>' in page
    assert f"var widgetRendererSrc = '{bc.RENDERER_JS}';" in page
    assert 'require.config({paths: {"@jupyter-widgets": "_widgets/html-manager"}})' in page
    assert bc.html_view_ids(page) == [player.widget.model_id]
    assert player.stack.model_id in bc.html_widget_state(page)
    again, counts = bc.localize_html(page)  # idempotent
    assert again == page and counts == {"require": 1, "renderer": 2}


def test_localize_html_rewrites_cdn_urls():
    page = ('<html><head><script src="https://cdn.example/ajax/libs/require.js/2.1.10/require.min.js"></script>'
            "</head><body><script>var widgetRendererSrc = 'https://cdn.example/@jupyter-widgets/html-manager@*/dist/"
            "embed-amd.js';</script></body></html>")
    assert len(bc.remote_scripts(page)) == 2
    out, counts = bc.localize_html(page, "x/require.js", "x/hm/embed-amd.js")
    assert counts == {"require": 1, "renderer": 1} and bc.remote_scripts(out) == []
    assert "'x/hm/embed-amd.js'" in out and 'src="x/require.js"' in out and '"@jupyter-widgets": "x/hm"' in out
    assert bc.html_widget_state(out) is None and bc.html_view_ids(out) == []


def test_export_without_state_has_no_renderer(player):
    page = bc.export_html(_notebook(player.widget, state=False))
    assert bc.html_widget_state(page) is None and "widgetRendererSrc" not in page


def test_third_party_views():
    state = {"a": {"state": {"_view_module": "ipycanvas", "_view_name": "CanvasView"}},
             "b": {"state": {"_view_module": "ipycanvas", "_view_name": None}},
             "c": {"state": {"_view_module": "@jupyter-widgets/controls", "_view_name": "SliderView"}}}
    assert bc.third_party_views(state) == {"ipycanvas": 1}
    state["box"] = {"state": {"children": ["IPY_MODEL_c"]}}
    assert bc.third_party_views(state, [(0, "box")]) == {}  # the canvas is not shown
    state["box"]["state"]["children"].append("IPY_MODEL_a")
    assert bc.third_party_views(state, [(0, "box")]) == {"ipycanvas": 1}


def test_shrink_png_fits_the_limit():
    noise = np.random.default_rng(0).integers(0, 256, (600, 800, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    assert len(buf.getvalue()) > 300_000
    small = bc.shrink_png(buf.getvalue(), 300_000)
    assert len(small) <= 300_000 and Image.open(io.BytesIO(small)).format == "PNG"

