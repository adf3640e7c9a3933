"""Headless tests of maskgit_lib.widgets: sliders swap precomputed frames; recompute only on new keys."""

import io

import ipywidgets
import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _instances
from ipywidgets.widgets.widget_link import Link
from PIL import Image

from maskgit_lib import widgets
from maskgit_lib.masking import get_schedule, mvtm_num_masked


def _png_size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def _trace_like(s: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(s, 3, 64, 64, generator=g) * 2 - 1
    is_masked = torch.rand(s, 256, generator=g) < torch.linspace(0.9, 0.0, s)[:, None]
    confidence = torch.randn(s, 256, generator=g)
    confidence[torch.rand(s, 256, generator=g) < 0.3] = float("inf")
    return images, is_masked, confidence


def test_decoding_frames_and_player_swap_precomputed_frames():
    images, is_masked, confidence = _trace_like()
    frames = widgets.decoding_frames(images, is_masked, confidence)
    assert len(frames) == 5 and len(set(frames)) == 5
    assert all(f.startswith(b"\x89PNG") for f in frames)
    narrow = widgets.decoding_frames(images, is_masked)  # no confidence panel
    assert _png_size(narrow[0])[0] < _png_size(frames[0])[0]

    player = widgets.decoding_player(frames)
    assert isinstance(player.widget, ipywidgets.VBox)
    assert isinstance(player.play, ipywidgets.Play) and player.play.max == player.slider.max == 5
    assert player.image.value == frames[0]
    for value in (3, 5, 1):
        player.slider.value = value
        assert player.image.value == frames[value - 1]
    assert player.frames is not frames and player.frames == frames
    assert "application/vnd.jupyter.widget-view+json" in player._repr_mimebundle_()
    with pytest.raises(ValueError):
        widgets.decoding_player([])


def _links(widget: ipywidgets.Widget) -> set[tuple[str, str, str, str]]:
    """(source class, trait, target class, trait) of every jslink among the live widgets touching ``widget``."""
    out = set()
    for w in list(_instances.values()):
        if isinstance(w, Link) and widget in (w.source[0], w.target[0]):
            out.add((type(w.source[0]).__name__, w.source[1], type(w.target[0]).__name__, w.target[1]))
    return out


def test_frames_live_in_a_stack_jslinked_to_the_slider():
    """What the browser needs without a kernel: one Image per frame in a Stack, the slider jslinked to it."""
    images, is_masked, confidence = _trace_like()
    player = widgets.decoding_player(widgets.decoding_frames(images, is_masked, confidence), labels=list("abcde"))
    stack = player.stack
    assert isinstance(stack, ipywidgets.Stack) and len(stack.children) == 6  # placeholder + 5 frames
    assert [c.children[1].value for c in stack.children[1:]] == player.frames
    assert [c.children[0].value for c in stack.children[1:]] == list("abcde")
    assert ("IntSlider", "value", "Stack", "selected_index") in _links(player.slider)
    assert ("Play", "value", "IntSlider", "value") in _links(player.play)
    explorer = widgets.mask_ratio_explorer(torch.zeros(3, 64, 64), num_values=5)
    assert ("SelectionSlider", "index", "Stack", "selected_index") in _links(explorer.slider)
    assert explorer.current == explorer.slider.index == 2 and explorer.slider.value == 0.5
    layers = widgets.frame_slider(player.frames[:3])
    assert ("IntSlider", "value", "Stack", "selected_index") in _links(layers.slider) and layers.offset == 0
    state = ipywidgets.Widget.get_manager_state(drop_defaults=True)["state"]
    assert state[stack.model_id]["state"]["selected_index"] == 1  # saved state starts at frame 1


def test_mask_ratio_explorer_counts_follow_mvtm_rule():
    image = torch.zeros(3, 64, 64)
    viewer = widgets.mask_ratio_explorer(image, "cosine", num_values=11)
    assert len(viewer.frames) == 11 and viewer.values[0] == 0.0 and viewer.values[-1] == 1.0
    for i in (0, 3, 10):
        viewer.slider.value = viewer.values[i]
        assert viewer.image.value == viewer.frames[i]
        n = int(mvtm_num_masked(torch.tensor([viewer.values[i]]), 256, "cosine")[0])
        assert f"{n}/256 tokens hidden" in viewer.label.value
    assert f"gamma(r) = {get_schedule('cosine')(0.3):.2f}" in viewer.captions[3]

    tokens = torch.randint(0, 1024, (16, 16))
    by_gamma = widgets.mask_ratio_explorer(tokens, over="gamma", num_values=5)
    assert [c.split(": ")[1] for c in by_gamma.captions] == [
        "1/256 tokens hidden", "64/256 tokens hidden", "128/256 tokens hidden",
        "192/256 tokens hidden", "256/256 tokens hidden"]
    with pytest.raises(ValueError):
        widgets.mask_ratio_explorer(tokens, over="p")


def test_schedule_explorer_recomputes_only_new_keys():
    calls = []

    def run_fn(schedule: str, steps: int, sweet_spot: int) -> bytes:
        calls.append((schedule, steps, sweet_spot))
        return widgets.compose_frame([widgets.mask_panel(torch.zeros(256, dtype=torch.bool))],
                                     [f"{schedule} {steps} {sweet_spot}"])

    ex = widgets.schedule_explorer(run_fn, ["cosine", "linear", "square"], max_steps=12,
                                   initial=("cosine", 12, 8))
    assert not ex.steps.continuous_update and not ex.sweet_spot.continuous_update
    assert ex.calls == 1 and calls == [("cosine", 12, 8)] and ex.image.value == ex.cache[("cosine", 12, 8)]
    first = ex.image.value

    ex.schedule.value = "linear"
    assert ex.calls == 2 and ex.key == ("linear", 12, 8)
    ex.schedule.value = "cosine"  # cached: no new call, same bytes
    assert ex.calls == 2 and ex.image.value == first and "cached" in ex.status.value

    ex.steps.value = 6  # sweet spot 8 > 6 is clamped, one computation only
    assert ex.sweet_spot.max == 6 and ex.key == ("cosine", 6, 6) and ex.calls == 3
    ex.sweet_spot.value = 3
    assert ex.calls == 4
    ex.steps.value = 10  # s=3 was not at the end: it stays
    assert ex.key == ("cosine", 10, 3) and ex.sweet_spot.max == 10 and ex.calls == 5
    assert len(ex.cache) == ex.calls == len(calls) == len(set(calls))
    assert ex.image.value == ex.cache[ex.key]


def test_schedule_explorer_accepts_figures_and_arrays():
    from maskgit_lib import viz

    ex = widgets.schedule_explorer(lambda s, t, k: viz.plot_schedules([s]), ["cosine"], max_steps=4)
    assert ex.key == ("cosine", 4, 4) and bytes(ex.image.value).startswith(b"\x89PNG")
    ex2 = widgets.schedule_explorer(lambda s, t, k: widgets.mask_panel(torch.ones(256, dtype=torch.bool)),
                                    ["cosine"], max_steps=4)
    assert _png_size(ex2.image.value) == (16, 16)
    with pytest.raises(ValueError):
        widgets.schedule_explorer(lambda *a: b"", ["cosine"], max_steps=4, initial=("cosine", 5, 2))


def test_frame_slider_counts_from_one_and_starts_anywhere():
    frames = [widgets.to_png(np.full((4, 4, 3), v, np.uint8)) for v in (0, 80, 160)]
    layers = widgets.frame_slider(frames, labels=["layer 1", "layer 2", "layer 3"], description="layer",
                                  first=1, value=3)
    assert (layers.slider.min, layers.slider.max, layers.slider.value) == (1, 3, 3)
    assert layers.image.value == frames[2] and layers.label.value == "layer 3" and layers.current == 2
    layers.slider.value = 1
    assert layers.image.value == frames[0] and layers.label.value == "layer 1"
    with pytest.raises(ValueError, match="value must be in 1..3"):
        widgets.frame_slider(frames, first=1, value=0)
    with pytest.raises(ValueError, match="first must be 0 or 1"):
        widgets.frame_slider(frames, first=2)


def test_show_moves_the_slider_so_play_and_stack_agree():
    images, is_masked, confidence = _trace_like()
    player = widgets.decoding_player(widgets.decoding_frames(images, is_masked, confidence))
    player.show(3)  # frame 3 = step 4
    assert (player.slider.value, player.play.value, player.current) == (4, 4, 3)
    explorer = widgets.mask_ratio_explorer(torch.zeros(3, 64, 64), num_values=5)
    explorer.show(4)
    assert explorer.slider.index == 4 and explorer.slider.value == 1.0 and explorer.current == 4


def test_compose_frame_frames_each_panel_without_touching_it():
    white = widgets.mask_panel(torch.zeros(256, dtype=torch.bool))  # no token hidden: an all-white panel
    dark = np.zeros((4, 4, 3), np.uint8)
    img = np.asarray(Image.open(io.BytesIO(widgets.compose_frame([white, dark], ["a", "b"], panel=32, pad=8))))
    y0 = 20  # no title: one caption line of 20 px above the panels
    for x0, value in ((8, 255), (48, 0)):
        assert (img[y0:y0 + 32, x0:x0 + 32] == value).all()  # the panel itself is untouched
        ring = np.concatenate([img[y0 - 1, x0 - 1:x0 + 33], img[y0 + 32, x0 - 1:x0 + 33],
                               img[y0 - 1:y0 + 33, x0 - 1], img[y0 - 1:y0 + 33, x0 + 32]])
        assert (ring == 190).all()  # a light-gray frame in the gap, so a white panel shows on the white page
