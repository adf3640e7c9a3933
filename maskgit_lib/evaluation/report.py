"""The benchmark's report: the markdown table, the JSON, and the figures (FID vs steps, gallery, schedule steps)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..data import from_uint8
from ..inpaint import Inpainter, InpaintSettings
from ..outputs import atomic_write, write_json
from ..viz import schedule_comparison_figure, show_images
from .rows import GALLERY_IMAGES, LAB_SCHEDULES, NOTE_DETERMINISM
from .tracks import TrackData


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(records: list[dict]) -> list[str]:
    lines = ["| row | FID | PSNR hole (dB) | L1 hole | s/img (inpaint) | cached |", "|---|---:|---:|---:|---:|:-:|"]
    for r in records:
        lines.append(f"| {r['label']} | {_fmt(r['fid'])} | {_fmt(r['psnr_hole_db'])} | {_fmt(r['l1_hole'], 4)} "
                     f"| {_fmt(r['seconds_per_image'], 3)} | {'yes' if r['from_cache'] else ''} |")
    return lines


def markdown_report(report: dict) -> str:
    """``benchmark.md``: a headline table, one table per track and the notes."""
    meta, records = report["meta"], report["rows"]
    lines = [f"# MaskGIT inpainting benchmark ({meta['profile']})", "",
             f"Command: `{meta['command']}`  ", f"Finished {meta.get('finished', 'running')}; wall time "
             f"{_fmt(meta.get('wall_seconds', 0) / 60, 1)} min on {meta['machine']['summary']} "
             f"(torch {meta['torch']}, {meta['machine']['torch_threads']} threads, device {meta['device']}, "
             f"load average {meta['machine']['loadavg_start']} at start).  ",
             f"Checkpoints: VQGAN `{meta['checkpoints']['vqgan']['sha256'][:12]}`, transformer "
             f"`{meta['checkpoints']['transformer']['sha256'][:12]}`; seed {meta['seed']}, batch {meta['batch_size']}.",
             "", "## Headline", "",
             "| track | best MaskGIT (composited) | FID | best classical baseline | FID | tokenizer ceiling "
             "(composited / raw) FID | MaskGIT minus baseline FID (< 0: MaskGIT better) |", "|---|---|---:|---|---:|---:|---:|"]
    for track in meta["tracks"]:
        mg, base = best(records, track, "maskgit"), best(records, track, "baseline")
        ceil = {r["method"]: r for r in records if r["track"] == track and r["kind"] == "ceiling"}
        if mg is None and base is None:
            continue
        gap = (mg["fid"] - base["fid"]) if mg and base and mg["fid"] is not None and base["fid"] is not None else None
        lines.append(f"| {track} | {mg['label'] if mg else '-'} | {_fmt(mg and mg['fid'])} | "
                     f"{base['label'] if base else '-'} | {_fmt(base and base['fid'])} | "
                     f"{_fmt(ceil.get('vqgan_composite', {}).get('fid'))} / {_fmt(ceil.get('vqgan_raw', {}).get('fid'))}"
                     f" | {_fmt(gap)} |")
    for track in meta["tracks"]:
        rows = [r for r in records if r["track"] == track]
        if rows:
            lines += ["", f"## Track: {track} ({rows[0]['images']} images, "
                      f"{100 * rows[0]['missing_pixel_fraction']:.1f}% of pixels missing)", "", *_table(rows)]
    lines += ["", "## Notes", "", f"- FID: {meta['fid_protocol']}", f"- Determinism: {NOTE_DETERMINISM}",
              "- PSNR and L1 are over the missing pixels only (per image, then averaged; L1 on the 0..1 scale).",
              "- s/img: inpainting wall time per image, FID excluded, measured when the row was computed (a cached "
              "row keeps its time). Rows sharing a decoding (sweet spot, raw, paste) count the whole T-step decoding. "
              "The CPU is shared with other jobs, so times are noisy.",
              "- T = 1 is one row: with a single step the schedule is never used, so all schedules coincide.",
              "- Compositing: MaskGIT rows Poisson-blend the decoded holes into the known pixels (the default, "
              "maskgit_lib.blend); `paste-blend` rows paste them as the lab does; `raw` rows are the decoding itself.",
              "- VQGAN ceiling: encode + decode of the full ground truth (the best these tokens allow); composited = "
              "pasted into the holes only."]
    return "\n".join(lines) + "\n"


def _save_figure(fig, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def fid_vs_steps_figure(records: list[dict], track: str = "freeform"):
    """FID vs T per schedule (composited, official confidence, no sweet spot) with reference lines."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    plain = [r for r in records if r["track"] == track and r["kind"] == "maskgit" and r["fid"] is not None
             and r["settings"]["composite"] and r["settings"]["sweet_spot"] is None
             and r["settings"]["confidence"] == "official"]
    for sched in dict.fromkeys(r["settings"]["schedule"] for r in plain):
        pts = sorted({r["settings"]["steps"]: r["fid"] for r in plain if r["settings"]["schedule"] == sched
                      or (sched in LAB_SCHEDULES and r["settings"]["steps"] == 1)}.items())  # T = 1: any schedule
        ax.plot(*zip(*pts), marker="o", label=sched)
    for kind, style in (("baseline", "--"), ("ceiling", ":")):
        ref = best(records, track, kind)
        if ref and ref["fid"] is not None:
            ax.axhline(ref["fid"], ls=style, color="gray", label=ref["label"])
    ax.set(xlabel="decoding steps T", ylabel="FID (lower is better)", title=f"{track}: FID vs T")
    ax.legend(fontsize=7)
    return fig


def gallery_figure(images: dict[str, torch.Tensor]):
    """Rows of a few images each (name -> uint8 (n, 3, S, S)); the row name titles its first image."""
    n = min(len(v) for v in images.values())
    fig = show_images(from_uint8(torch.cat([v[:n] for v in images.values()])), ncols=n, scale=1.1)
    for j, name in enumerate(images):
        fig.axes[j * n].set_ylabel(textwrap.fill(name, 16), fontsize=7)
    return fig


def schedule_steps_figure(inpainter: Inpainter, data: TrackData, index: int = 0, steps: int = 8, seed: int = 0):
    """Per-step latent masks and images of the lab's three schedules on one test image."""
    image = from_uint8(data.inputs[index:index + 1])  # (1, 3, S, S)
    pm = data.pixel_missing[index:index + 1]  # (1, S, S)
    results = {}
    for sched in LAB_SCHEDULES:
        res = inpainter.inpaint(image, pm, InpaintSettings(steps=steps, schedule=sched, seed=seed), keep_trace=True)
        frames = inpainter.decode_trace_images(res.trace, images=image, pixel_missing=pm)[:, 0].cpu()  # (T, 3, S, S)
        masks = torch.cat([res.trace.initial_is_masked, res.trace.is_masked[:, 0]]).cpu()  # (T+1, L)
        results[sched] = (torch.cat([image, frames]), masks)
    labels = ["input"] + [f"step {t}" for t in range(1, steps + 1)]
    return schedule_comparison_figure(results, step_labels=labels)


def _write_outputs(report: dict, out: Path, suffix: str) -> None:
    write_json(out / f"benchmark{suffix}.json", report, sort_keys=False)
    atomic_write(out / f"benchmark{suffix}.md", lambda tmp: tmp.write_text(markdown_report(report)))


def _write_figures(report: dict, keep: dict, data: dict, inpainter: Inpainter, out: Path, suffix: str,
                   seed: int) -> list[str]:
    """fid_vs_steps, gallery and schedule_steps PNGs (those the run's rows allow)."""
    records, written = report["rows"], []
    track = "freeform" if "freeform" in data else next(iter(data))
    if any(r["fid"] is not None and r["kind"] == "maskgit" for r in records):
        written.append(_save_figure(fid_vs_steps_figure(records, track), out / f"fid_vs_steps{suffix}.png"))
    mg, base = best(records, track, "maskgit"), best(records, track, "baseline")
    if mg and base:
        td = data[track]
        rows = {"masked input": td.inputs[:GALLERY_IMAGES], mg["label"]: keep[(track, mg["label"])],
                base["label"]: keep[(track, base["label"])], "ground truth": td.gt[:GALLERY_IMAGES]}
        written.append(_save_figure(gallery_figure(rows), out / f"gallery{suffix}.png"))
    if "freeform" in data:
        written.append(_save_figure(schedule_steps_figure(inpainter, data["freeform"], seed=seed),
                                    out / f"schedule_steps{suffix}.png"))
    return [str(p) for p in written]


def _score(record: dict) -> float:
    return record["fid"] if record["fid"] is not None else -(record["psnr_hole_db"] or 0.0)


def best(records: list[dict], track: str, kind: str, composite_only: bool = True) -> dict | None:
    """The row of ``kind`` with the lowest FID (highest hole PSNR without FID) on ``track``."""
    pool = [r for r in records if r["track"] == track and r["kind"] == kind
            and not (composite_only and r["settings"] and not r["settings"]["composite"])]
    return min(pool, key=_score) if pool else None
