"""Tests for maskgit_lib.evaluation.sampler_study: rules, the selection track, decode_rule, best-of-K."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskgit_lib import paths
from maskgit_lib.data import from_uint8, to_uint8
from maskgit_lib.errors import ConfigError
from maskgit_lib.evaluation import benchmark, rows as plans
from maskgit_lib.evaluation import sampler_study as ss
from maskgit_lib.evaluation.baselines import gray_fill
from maskgit_lib.evaluation.tracks import TrackData
from maskgit_lib.inpaint import Inpainter, InpaintSettings

S = 64
pytestmark = pytest.mark.usefixtures("one_thread")


def test_rules_map_to_settings_and_the_grid_has_every_combination():
    paper = ss.PAPER_RULE.settings()
    assert paper == InpaintSettings(confidence="official")  # the paper's rule: one setting from the defaults
    lab = ss.LAB_RULE.settings(seed=3)
    assert (lab.confidence, lab.sampling_temperature, lab.choice_temperature, lab.seed) == ("p", 0.0, 4.5, 3)
    grid = ss.rule_grid(steps=(1, 8))
    assert len(grid) == 3 + 3 * 2 * 3 and len(set(grid)) == len(grid)
    assert {r for r in grid if r.steps == 1} == {ss.SamplerRule(t, "logp", 0.0, 1) for t in (1.0, 0.5, 0.0)}
    assert [r.deterministic for r in grid if r.steps == 8].count(True) == 2  # argmax, no noise, logp and p
    with pytest.raises(ConfigError, match="score must be one of logp, p"):
        ss.SamplerRule(score="rank")


def tiny_inpainter(ckpts: Path) -> Inpainter:
    return Inpainter.from_checkpoints(ckpts / paths.VQGAN_CHECKPOINT_NAME, ckpts / paths.TRANSFORMER_CHECKPOINT_NAME,
                                      device="cpu")


def tiny_track(n: int = 5) -> TrackData:
    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(n, 3, 1, 1, generator=g) * 255 * torch.linspace(0, 1, S)[None, None, None]).round().byte()
    gt = gt.expand(n, 3, S, S).clone()
    missing = torch.zeros(n, S, S, dtype=torch.bool)
    for i in range(n):
        missing[i, 4 + 5 * i:30 + 5 * i, 8:40] = True
    return TrackData([f"im{i}" for i in range(n)], gray_fill(gt, missing), missing, gt, gt_dir=None)


def test_decode_rule_is_the_benchmark_row(ckpts):
    inpainter, data = tiny_inpainter(ckpts), tiny_track()
    rule = ss.SamplerRule(0.5, "p", 1.0, 4)
    out, seconds = ss.decode_rule(inpainter, data, rule, seed=2, batch_size=2)
    row = plans.Row("freeform", "maskgit", rule.settings(seed=2))
    expected = benchmark.run_maskgit_group(inpainter, data, [row], batch_size=2, seed=2)[row][0]
    assert torch.equal(out, expected) and seconds > 0
    other, _ = ss.decode_rule(inpainter, data, rule, seed=3, batch_size=2)
    assert not torch.equal(other, out)  # seeds matter for a sampling rule


def test_best_of_one_is_the_single_decoding_and_best_of_two_picks_the_better_seam(ckpts):
    inpainter, data = tiny_inpainter(ckpts), tiny_track(4)
    rule = ss.SamplerRule(1.0, "logp", 4.5, 3)
    single, _ = ss.decode_rule(inpainter, data, rule, seed=0, batch_size=4)
    picked, decode_s, score_s = ss.best_of_k(inpainter, data, rule, k=1, seed=0, batch_size=4)
    assert set(picked) == set(ss.PICK_SCORES) and decode_s > 0 and score_s > 0
    assert all(torch.equal(v, single) for v in picked.values())
    picked2, _, _ = ss.best_of_k(inpainter, data, rule, k=2, seed=0, batch_size=4)
    images, pm = from_uint8(data.inputs), data.pixel_missing
    seams = []
    for seed in (0, 1):
        res = inpainter.inpaint(images, pm, rule.settings(seed), torch.Generator().manual_seed(seed))
        seams.append((to_uint8(res.images), ss._seam(res.raw, images, pm)))
    for i in range(4):
        best = min((0, 1), key=lambda j: float(seams[j][1][i]))
        assert torch.equal(picked2["seam"][i], seams[best][0][i])
    with pytest.raises(ConfigError, match="k >= 1"):
        ss.best_of_k(inpainter, data, rule, k=0)


def test_seam_score_by_hand():
    images = torch.zeros(1, 3, 8, 8)
    missing = torch.zeros(1, 8, 8, dtype=torch.bool)
    missing[0, 3:5, 3:5] = True
    raw = images.clone()
    raw[0, :, 1, 1] = 0.6  # inside the 2-pixel ring around the hole
    raw[0, :, 7, 7] = 5.0  # far from the hole: ignored
    raw[0, :, 3, 3] = 9.0  # in the hole: ignored
    ring = 6 * 6 - 4  # rows/cols 1..6 minus the 2x2 hole
    assert torch.allclose(ss._seam(raw, images, missing), torch.tensor([0.6 / ring]))


def test_likelihood_prefers_the_first_step_argmax(ckpts):
    """The factorised likelihood is maximised by the first step's argmax tokens (a check that can fail)."""
    inpainter, data = tiny_inpainter(ckpts), tiny_track(3)
    images, pm = from_uint8(data.inputs), data.pixel_missing
    greedy = inpainter.inpaint(images, pm, InpaintSettings(steps=1, sampling_temperature=0), keep_trace=True)
    sampled = inpainter.inpaint(images, pm, InpaintSettings(steps=1, confidence="official"), keep_trace=True)
    lg, ls = ss._likelihood(inpainter, images, pm, [greedy.trace.final, sampled.trace.final])
    assert (lg >= ls).all() and (lg > ls).any() and (lg < 0).all()


def test_selection_track_uses_validation_images_and_test_masks(tmp_path):
    root = tmp_path / "data"
    for sub in ("val", "test/gt", "test/masked_image", "test/mask64"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((S, S, 3), 40 * i + 10, np.uint8)).save(root / "val" / f"v{i}.png")
        Image.fromarray(np.full((S, S, 3), 200, np.uint8)).save(root / "test" / "gt" / f"image_{i:03d}.png")
        Image.fromarray(np.full((S, S, 3), 200, np.uint8)).save(root / "test" / "masked_image" / f"image_{i:03d}.png")
        known = np.full((S, S), 255, np.uint8)
        known[10 * i:10 * i + 20, 5:25] = 0
        Image.fromarray(known, "L").save(root / "test" / "mask64" / f"mask_{i:03d}.png")
    data = ss.selection_track(root, 2)
    assert data.names == ["v0", "v1"] and data.gt_dir is None
    assert data.gt[:, 0, 0, 0].tolist() == [10, 50]
    assert data.pixel_missing[1, 10:30, 5:25].all() and data.pixel_missing[1].sum() == 400
    assert (data.inputs[data.pixel_missing[:, None].expand_as(data.inputs)] == 128).all()
    with pytest.raises(ConfigError, match="exceeds the 3 validation images or 3 masks"):
        ss.selection_track(root, 4)


def test_runner_report_aggregates_seeds(tmp_path, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("sampler_study_tool", Path(__file__).parents[1] / "tools" / "sampler_study.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(tool, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(tool, "OUT", tmp_path / "out")
    for seed, fid in ((0, 10.0), (1, 12.0), (2, 14.0)):
        path = tool._key("grid", ss.PAPER_RULE, seed, 8)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"stage": "grid", "n": 8, "label": ss.PAPER_RULE.label, "seed": seed, "fid": fid,
                                    "kid": 1.0, "psnr_hole_db": 20.0, "seconds_per_image": 0.5}))
    tool.report()
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| grid | 8 | T=8, sample tau=1, score logp, noise 4.5 |  | 3 | 12.00 ± 2.00 |" in table
    assert len(json.loads((tmp_path / "out" / "study.json").read_text())) == 3
