"""The benchmark's report: the markdown table, the JSON, and the figures (FID vs steps, gallery, schedule steps)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..data import from_uint8
from ..inpaint import Inpainter, InpaintSettings
from ..outputs import atomic_write, write_json
from ..viz import schedule_comparison_figure, to_pixels
from .rows import GALLERY_IMAGES, LAB_SCHEDULES, NOTE_DETERMINISM
from .tracks import TrackData


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(records: list[dict]) -> list[str]:
    lines = ["| row | FID | KID x 1000 (± std) | PSNR hole (dB) | L1 hole | SSIM | SSIM hole | s/img (inpaint) "
             "| cached |", "|---|---:|---:|---:|---:|---:|---:|---:|:-:|"]
    for r in records:
        kid = "-" if r.get("kid") is None else f"{1000 * r['kid']:.2f} ± {1000 * r['kid_std']:.2f}"
        lines.append(f"| {r['label']} | {_fmt(r['fid'])} | {kid} | {_fmt(r['psnr_hole_db'])} | {_fmt(r['l1_hole'], 4)} "
                     f"| {_fmt(r.get('ssim'), 4)} | {_fmt(r.get('ssim_hole'), 4)} "
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
              "- KID: unbiased MMD^2 of the same Inception features with the kernel (x.y/2048 + 1)^3, mean ± std "
              "over 100 random subsets of 1000 images per side, or N/2 when N < 2000 (seed 0), shown x 1000. Unlike FID it is "
              "unbiased at small N (its expectation is 0 for equal distributions, so it can be slightly negative).",
              "- PSNR and L1 are over the missing pixels only (per image, then averaged; L1 on the 0..1 scale).",
              "- SSIM: scikit-image `structural_similarity` (7x7 windows, data range 255, RGB channels) of the whole "
              "image; SSIM hole: its SSIM map averaged over the missing pixels (windows near the hole's edge also "
              "see known pixels). Both per image with a hole, then averaged.",
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


def settings_text(settings: dict) -> str:
    """Short settings of a MaskGIT row, e.g. ``cosine T=8, lab conf, harmonic fill, poisson blend``."""
    s, default = settings, dataclasses.asdict(InpaintSettings())
    parts = [f"{s['schedule']} T={s['steps']}" + (f" s={s['sweet_spot']}" if s.get("sweet_spot") is not None else ""),
             f"{s['confidence']} conf", f"{s['prefill']} fill",
             f"{s['blend']} blend" if s["composite"] else "raw (not composited)"]
    parts += [f"{k}={s[k]:g}" for k in ("choice_temperature", "sampling_temperature") if s[k] != default[k]]
    return ", ".join(parts + ([f"dilate={s['dilate']}"] if s.get("dilate") else []))


def row_title(record: dict) -> str:
    """A row's name, short settings and score, e.g. ``MaskGIT cosine T=8, lab conf, ... — FID 104.1``."""
    name = f"MaskGIT {settings_text(record['settings'])}" if record["kind"] == "maskgit" else record["label"]
    score = (f"FID {record['fid']:.1f}" if record["fid"] is not None
             else f"PSNR hole {_fmt(record.get('psnr_hole_db'))} dB (no FID)")
    return f"{name} — {score}"


def _same_but_steps(settings: dict | None, reference: dict) -> bool:
    """``settings`` equals ``reference`` in every field except ``steps`` and ``schedule`` (each line's own)."""
    return bool(settings) and all(settings.get(k) == v for k, v in reference.items() if k not in ("steps", "schedule"))


def fid_vs_steps_points(records: list[dict], track: str = "freeform",
                        reference: dict | None = None) -> dict[str, list[tuple[int, float, str]]]:
    """The points of :func:`fid_vs_steps_figure`: ``{schedule: [(steps, fid, label)]}`` sorted by steps.

    A schedule's line holds the MaskGIT rows of ``track`` with an FID whose settings equal ``reference`` (default:
    ``InpaintSettings()``) with the line's schedule in every field except ``steps``; the T = 1 row also belongs to
    every lab schedule (one step never uses the schedule). Rows with other settings (sweet spot, raw, prefill, blend,
    confidence, temperatures, seed, ...) are never plotted.
    """
    ref = dataclasses.asdict(InpaintSettings()) if reference is None else dict(reference)
    pool = [r for r in records if r["track"] == track and r["kind"] == "maskgit" and r["fid"] is not None
            and _same_but_steps(r["settings"], ref)]
    points = {}
    for sched in dict.fromkeys(r["settings"]["schedule"] for r in pool):
        by_steps: dict[int, dict] = {}
        for r in pool:
            s = r["settings"]
            if s["schedule"] == sched or (s["steps"] == 1 and sched in LAB_SCHEDULES):
                by_steps.setdefault(s["steps"], r)  # equal settings: the first such row
        points[sched] = [(t, r["fid"], r["label"]) for t, r in sorted(by_steps.items())]
    return points


def fid_vs_steps_figure(records: list[dict], track: str = "freeform", reference: dict | None = None):
    """FID vs T, one line per schedule at the ``reference`` settings (:func:`fid_vs_steps_points`), the classical
    baselines and the tokenizer ceiling as labelled horizontal lines, the best MaskGIT row as a star."""
    ref = dataclasses.asdict(InpaintSettings()) if reference is None else dict(reference)
    fig = Figure(figsize=(8.5, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = fid_vs_steps_points(records, track, ref)
    for sched, pts in points.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=sched)
    plotted = {p[2] for pts in points.values() for p in pts}
    top = best(records, track, "maskgit")
    if top and top["fid"] is not None and top["label"] not in plotted:
        ax.plot([top["settings"]["steps"]], [top["fid"]], marker="*", ms=12, ls="none", color="black",
                label=f"best MaskGIT row: {top['label']} ({top['fid']:.1f})")
    refs = [r for r in records if r["track"] == track and r["kind"] == "baseline" and r["fid"] is not None]
    ceiling = best(records, track, "ceiling")
    for i, r in enumerate(sorted(refs, key=lambda r: r["fid"])):
        ax.axhline(r["fid"], ls="--", lw=1, color=f"C{(i + len(points) + 1) % 10}", label=f"{r['label']} ({r['fid']:.1f})")
    if ceiling and ceiling["fid"] is not None:
        ax.axhline(ceiling["fid"], ls=":", color="gray", label=f"{ceiling['label']} ({ceiling['fid']:.1f})")
    n = next((r["images"] for r in records if r["track"] == track and r.get("images")), None)
    fig.suptitle(f"{track} track: FID vs decoding steps T" + (f" ({n} images)" if n else ""), fontsize=11)
    fixed = ", ".join(f"{k}={v}" for k, v in ref.items() if k not in ("steps", "schedule"))
    ax.set_title(textwrap.fill(f"MaskGIT lines: settings = {fixed} (all but T and schedule)", 100), fontsize=7)
    ax.set(xlabel="decoding steps T", ylabel="FID (lower is better)")
    steps = sorted({p[0] for pts in points.values() for p in pts} | ({top["settings"]["steps"]} if top else set()))
    if steps:
        ax.set_xticks(steps)
        ax.set_xlim(steps[0] - 1, steps[-1] + 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def gallery_figure(images: dict[str, torch.Tensor], title: str = ""):
    """Rows of a few images each (row title -> uint8 (n, 3, S, S)); each row is titled above its images."""
    n = min(len(v) for v in images.values())
    fig = Figure(figsize=(1.1 * n, 1.45 * len(images) + (0.35 if title else 0)), layout="constrained")
    FigureCanvasAgg(fig)
    for sub, (name, imgs) in zip(fig.subfigures(len(images), 1, squeeze=False)[:, 0], images.items()):
        pix = to_pixels(from_uint8(imgs[:n]))  # (n, S, S, 3)
        for ax, p in zip(sub.subplots(1, n, squeeze=False)[0], pix):
            ax.imshow(p)
            ax.set_xticks([])
            ax.set_yticks([])
        sub.suptitle(name, fontsize=8, x=0.01, ha="left")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def schedule_steps_figure(inpainter: Inpainter, data: TrackData, index: int = 0, steps: int = 8, seed: int = 0):
    """Per-step latent masks and images of the lab's three schedules on one test image."""
    image = from_uint8(data.inputs[index:index + 1])  # (1, 3, S, S)
    pm = data.pixel_missing[index:index + 1]  # (1, S, S)
    results, hidden = {}, {}
    for sched in LAB_SCHEDULES:
        res = inpainter.inpaint(image, pm, InpaintSettings(steps=steps, schedule=sched, seed=seed), keep_trace=True)
        frames = inpainter.decode_trace_images(res.trace, images=image, pixel_missing=pm)[:, 0].cpu()  # (T, 3, S, S)
        masks = torch.cat([res.trace.initial_is_masked, res.trace.is_masked[:, 0]]).cpu()  # (T+1, L)
        results[f"{sched} schedule"] = (torch.cat([image, frames]), masks)
        hidden[sched] = masks.sum(1).tolist()
    return _label_schedule_steps(schedule_comparison_figure(results, step_labels=_step_labels(steps)), hidden,
                                 index, steps)


def _step_labels(steps: int) -> list[str]:
    return ["input"] + [f"step {t}/{steps}" for t in range(1, steps + 1)]


def _label_schedule_steps(fig, hidden: dict[str, list[int]], index: int, steps: int):
    """Name each schedule's image and mask rows, count the hidden tokens per step, add a title and a mask legend."""
    axes = fig.axes
    cols = steps + 1
    for j, (sched, counts) in enumerate(hidden.items()):
        axes[(2 * j) * cols].set_ylabel(f"{sched}\nimage", fontsize=8)
        axes[(2 * j + 1) * cols].set_ylabel(f"{sched}\ntoken mask", fontsize=8)
        for i, c in enumerate(counts):
            axes[(2 * j + 1) * cols + i].set_xlabel(f"{c} hidden", fontsize=7)
    fig.suptitle(f"Decoding test image {index} with T={steps} under the lab's schedules (cosine, linear, square): "
                 "images after each step and the tokens still hidden", fontsize=9)
    fig.legend(handles=[Patch(facecolor="black", label="hidden token ([MASK])"),
                        Patch(facecolor="white", edgecolor="black", label="known / revealed token")],
               loc="outside lower center", ncols=2, fontsize=8)
    return fig


def _write_outputs(report: dict, out: Path, suffix: str) -> None:
    write_json(out / f"benchmark{suffix}.json", report, sort_keys=False)
    atomic_write(out / f"benchmark{suffix}.md", lambda tmp: tmp.write_text(markdown_report(report)))


def gallery_rows(report: dict, keep: dict, td, track: str) -> dict[str, torch.Tensor] | None:
    """The gallery of this run: masked inputs, its best MaskGIT row, its best classical baseline, the ground truth,
    each titled with its settings and FID (None without both rows)."""
    mg, base = best(report["rows"], track, "maskgit"), best(report["rows"], track, "baseline")
    if not (mg and base and (track, mg["label"]) in keep and (track, base["label"]) in keep):
        return None
    return {"masked input (gray = missing)": td.inputs[:GALLERY_IMAGES], row_title(mg): keep[(track, mg["label"])],
            row_title(base): keep[(track, base["label"])], "ground truth": td.gt[:GALLERY_IMAGES]}


def _write_figures(report: dict, keep: dict, data: dict, inpainter: Inpainter, out: Path, suffix: str,
                   seed: int) -> list[str]:
    """fid_vs_steps, gallery and schedule_steps PNGs (those the run's rows allow)."""
    records, written = report["rows"], []
    track = "freeform" if "freeform" in data else next(iter(data))
    if any(r["fid"] is not None and r["kind"] == "maskgit" for r in records):
        written.append(_save_figure(fid_vs_steps_figure(records, track), out / f"fid_vs_steps{suffix}.png"))
    rows = gallery_rows(report, keep, data[track], track)
    if rows:
        n = next((r["images"] for r in records if r["track"] == track and r.get("images")), "?")
        title = (f"{report['meta'].get('profile', '')} benchmark, {track} track: the first {GALLERY_IMAGES} of {n} "
                 "test images; best MaskGIT row and best classical baseline of this run")
        written.append(_save_figure(gallery_figure(rows, title), out / f"gallery{suffix}.png"))
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
