"""The benchmark's and the training's figures plot what they claim: the right rows, labels and axis ranges."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.patches import Patch

from maskgit_lib.evaluation import report
from maskgit_lib.inpaint import InpaintSettings
from maskgit_lib.training.logs import curves_figure, plot_curves
from maskgit_lib.viz import schedule_comparison_figure


def _mg(steps, schedule="cosine", fid=100.0, **changes):
    settings = dataclasses.asdict(InpaintSettings(steps=steps, schedule=schedule, **changes))
    label = f"maskgit {schedule} T={steps}" + "".join(f" {k}={v}" for k, v in changes.items())
    return {"label": label, "kind": "maskgit", "track": "freeform", "fid": fid, "psnr_hole_db": 20.0,
            "images": 64, "settings": settings}


def _ref(label, kind, fid):
    return {"label": label, "kind": kind, "track": "freeform", "fid": fid, "psnr_hole_db": 20.0, "images": 64,
            "settings": None}


def _records():
    """Reference rows (fid = 100 + T) among decoys with the same schedule and steps but other settings, each
    listed after the true row of its T so that a filter missing a field lets the decoy win."""
    rows = []
    for t in (4, 8, 12):
        rows.append(_mg(t, fid=100.0 + t))
        rows += [_mg(t, fid=150.0 + t, prefill="gray"), _mg(t, fid=160.0 + t, blend="paste"),
                 _mg(t, fid=170.0 + t, prefill="gray", blend="paste"), _mg(t, fid=180.0 + t, confidence="lab"),
                 _mg(t, fid=190.0 + t, sampling_temperature=0.5), _mg(t, fid=60.0 + t, composite=False)]
    rows += [_mg(1, fid=130.0), _mg(1, fid=131.0, blend="paste"), _mg(8, "linear", fid=108.5),
             _mg(8, "linear", fid=140.0, prefill="gray"), _mg(12, fid=120.0, sweet_spot=8),
             _ref("baseline biharmonic", "baseline", 104.3), _ref("baseline telea", "baseline", 126.9),
             _ref("VQGAN ceiling (GT recon, composited)", "ceiling", 46.5)]
    rows.append({**_mg(8, fid=999.0), "track": "box"})
    return rows


def test_fid_vs_steps_plots_exactly_the_reference_rows():
    records = _records()
    fig = report.fid_vs_steps_figure(records)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    expected = {"cosine": [(1, 130.0), (4, 104.0), (8, 108.0), (12, 112.0)], "linear": [(1, 130.0), (8, 108.5)]}
    for sched, pts in expected.items():
        assert list(zip(lines[sched].get_xdata(), lines[sched].get_ydata())) == pts, sched
    by_label = {r["label"]: r for r in records if r["track"] == "freeform"}
    points = report.fid_vs_steps_points(records, "freeform")
    assert {s: [(t, f) for t, f, _ in p] for s, p in points.items()} == expected
    default = dataclasses.asdict(InpaintSettings())
    for sched, pts in points.items():
        for steps, fid, label in pts:  # each point is the row it names, at the reference settings
            row = by_label[label]
            assert row["fid"] == fid and row["settings"]["steps"] == steps
            assert {k: v for k, v in row["settings"].items() if k not in ("steps", "schedule")} == \
                   {k: v for k, v in default.items() if k not in ("steps", "schedule")}
    baselines = [ln for ln in ax.get_lines() if ln.get_label().startswith("baseline")]
    assert sorted(ln.get_ydata()[0] for ln in baselines) == [104.3, 126.9]
    assert all(len(set(ln.get_ydata())) == 1 for ln in baselines)  # horizontal
    assert any(ln.get_label() == "baseline biharmonic (104.3)" for ln in baselines)
    assert "prefill=harmonic" in ax.get_title() and "blend=poisson" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
    stars = [ln for ln in ax.get_lines() if ln.get_label().startswith("best MaskGIT row")]
    assert [ln.get_ydata()[0] for ln in stars] == [104.0] or not stars  # best composited row is on a line


def test_fid_vs_steps_with_another_reference_follows_it():
    ref = {**dataclasses.asdict(InpaintSettings()), "prefill": "gray", "blend": "paste"}
    points = report.fid_vs_steps_points(_records(), "freeform", ref)
    assert {s: [(t, f) for t, f, _ in p] for s, p in points.items()} == {"cosine": [(4, 174.0), (8, 178.0),
                                                                                   (12, 182.0)]}
    ax = report.fid_vs_steps_figure(_records(), "freeform", ref).axes[0]
    assert "prefill=gray" in ax.get_title() and "blend=paste" in ax.get_title()


def test_fid_vs_steps_marks_a_best_row_off_the_lines():
    records = [r for r in _records() if r["track"] == "freeform"] + [_mg(8, fid=90.0, confidence="lab")]
    ax = report.fid_vs_steps_figure(records).axes[0]
    stars = [ln for ln in ax.get_lines() if ln.get_label().startswith("best MaskGIT row")]
    assert len(stars) == 1 and list(stars[0].get_ydata()) == [90.0] and "confidence=lab" in stars[0].get_label()


def test_row_title_names_settings_and_fid():
    rec = _mg(8, fid=104.103, confidence="lab")
    assert report.row_title(rec) == "MaskGIT cosine T=8, lab conf, harmonic fill, poisson blend — FID 104.1"
    assert report.row_title(_ref("baseline biharmonic", "baseline", 66.36)) == "baseline biharmonic — FID 66.4"


def _texts(fig):
    return {t.get_text() for sub in [fig, *fig.subfigs] for t in sub.texts}


def test_gallery_rows_follow_the_profile_and_galleries_differ(tmp_path):
    gen = torch.Generator().manual_seed(0)
    td = SimpleNamespace(inputs=torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=gen),
                         gt=torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=gen))
    records = [{**r, "track": "box"} for r in _records() if r["track"] == "freeform"]
    keep = {("box", r["label"]): td.gt for r in records}
    pngs = []
    for profile, scale in (("quick", 1.0), ("headline", 0.6)):
        rep = {"meta": {"profile": profile}, "rows": [{**r, "fid": r["fid"] * scale} for r in records]}
        rows = report.gallery_rows(rep, keep, td, "box")
        names = list(rows)
        assert names[1] == f"MaskGIT cosine T=4, lab conf, harmonic fill, poisson blend — FID {104 * scale:.1f}"
        assert names[2] == f"baseline biharmonic — FID {104.3 * scale:.1f}"
        fig = report.gallery_figure(rows, f"{profile} gallery")
        assert set(names) <= _texts(fig) and f"{profile} gallery" in _texts(fig)
        assert len(fig.subfigs) == 4 and all(len(sub.axes) == 8 for sub in fig.subfigs)
        written = report._write_figures(rep, keep, {"box": td}, None, tmp_path, f"_{profile}", 0)
        assert sorted(p.rsplit("/", 1)[1] for p in written) == [f"fid_vs_steps_{profile}.png", f"gallery_{profile}.png"]
        pngs.append((tmp_path / f"gallery_{profile}.png").read_bytes())
    assert pngs[0] != pngs[1]


def test_schedule_steps_labels_rows_steps_and_mask_legend():
    steps, s = 3, 16
    results = {k: (torch.zeros(steps + 1, 3, s, s), torch.ones(steps + 1, 256, dtype=torch.bool))
               for k in ("cosine", "linear", "square")}
    fig = schedule_comparison_figure(results, step_labels=report._step_labels(steps))
    hidden = {k: [256, 100, 20, 0] for k in results}
    fig = report._label_schedule_steps(fig, hidden, 0, steps)
    ylabels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert ylabels == [f"{k}\n{row}" for k in results for row in ("image", "token mask")]
    assert [ax.get_title() for ax in fig.axes[:steps + 1]] == ["input", "step 1/3", "step 2/3", "step 3/3"]
    assert [ax.get_xlabel() for ax in fig.axes[steps + 1:2 * (steps + 1)]] == ["256 hidden", "100 hidden",
                                                                              "20 hidden", "0 hidden"]
    legend_labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert legend_labels == ["hidden token ([MASK])", "known / revealed token"]
    assert all(isinstance(h, Patch) for leg in fig.legends for h in leg.legend_handles)


def _plot(tmp_path, columns):
    header = ["step", "epoch", *columns]
    lines = [",".join(header)] + [",".join([str(10 * i), "0", *(f"{v[i]:.6g}" for v in columns.values())])
                                  for i in range(len(next(iter(columns.values()))))]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    assert plot_curves(tmp_path / "log.csv", tmp_path / "c.png", "vqgan training") == tmp_path / "c.png"
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    return curves_figure(tmp_path / "log.csv", "vqgan training")


def test_plot_curves_drops_constant_panels_and_widens_fractions(tmp_path):
    n = 20
    rng = np.random.default_rng(0)
    fig = _plot(tmp_path, {"loss": list(np.linspace(2, 1, n)), "usage": [1.0] * n,
                                        "masked_acc": list(0.999 + 0.001 * rng.random(n)),
                                        "val_psnr": list(np.linspace(20, 25, n))})
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert set(panels) == {"loss", "masked_acc", "val_psnr"}  # usage is constant
    lo, hi = panels["masked_acc"].get_ylim()
    assert hi - lo >= 0.05 and lo >= 0.9 and hi <= 1.01
    assert fig.get_suptitle() == "vqgan training" and fig.get_layout_engine() is not None
    assert "usage = 1" in " ".join(t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text")))


@pytest.mark.parametrize("values", [[0.0, 0.001, 0.002], [0.5, 0.51, 0.5]])
def test_fraction_axis_span_stays_in_unit_range(tmp_path, values):
    ax = _plot(tmp_path, {"hole_acc": values, "loss": [3.0, 2.0, 1.0]}).axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.05 and lo >= -0.01 and hi <= 1.01 and lo <= min(values) and hi >= max(values)
