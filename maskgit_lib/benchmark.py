"""``maskgit benchmark``: MaskGIT decoding settings vs classical baselines, on fixed masks -> results/.

Tracks (the same ground-truth images in each, fixed masks, holes painted gray 128):

- ``freeform``: the test set's shipped brush-stroke masks (``test/mask64``);
- ``box``: a centred square hole, side 50% (:func:`maskgit_lib.data_prep.box_mask`);
- ``border``: outpainting, keep the centred 50% square (:func:`~maskgit_lib.data_prep.border_mask`).

Each row is one method on one track: MaskGIT with some :class:`InpaintSettings`
(schedule, T, sweet spot s, composite (Poisson or paste) or raw, official or lab confidence), a
classical baseline (:mod:`maskgit_lib.baselines`) or the VQGAN tokenizer ceiling.
Metrics: FID against the track's ground truths (pytorch-fid protocol, the same N
on both sides and for every row), PSNR and L1 over the missing pixels, and
inpainting seconds per image (FID excluded). MaskGIT rows that differ only in
the sweet spot or in compositing share one decoding (``Inpainter.inpaint`` with
the trace kept, then one VQGAN decode per extra stop step): their outputs are
bit-identical to separate runs, and their time counts the shared decoding.

Determinism: batch k (``--batch-size``, default 64) is seeded with
``inpaint.batch_seed(seed, k)``, exactly as ``maskgit inpaint``, so the
free-form cosine T=8 row reproduces ``maskgit demo``. Outputs are cached under
``cache_dir()/benchmark/`` keyed by row settings, data, checkpoint hashes,
device type, batch size and seed (an interrupted run resumes); Inception
features are cached by output content.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__, baselines, paths
from .checkpoint import atomic_write
from .data import from_uint8, test_set, to_uint8
from .errors import ConfigError
from .blend import get_blend
from .inpaint import Inpainter, InpaintSettings, batch_seed
from .argtypes import seed_int
from .masking import SCHEDULES

logger = logging.getLogger(__name__)

CACHE_VERSION = "benchmark-v1"
TRACKS = ("freeform", "box", "border")
PROFILES = ("quick", "headline", "full", "complete")
LAB_SCHEDULES = ("cosine", "linear", "square")
BOX_FRAC, KEEP_FRAC = 0.5, 0.5
QUICK_LIMIT, GALLERY_IMAGES = 64, 8
FULL_GRID = {"cosine": (1, 4, 8, 12, 16), "linear": (4, 8, 12), "square": (4, 8, 12)}  # full profile: T per schedule
FULL_OTHER_SCHEDULES = ("arccos",)  # the full profile's other schedules (T = 8)
NOTE_DETERMINISM = (
    "Fixed masks and per-batch seeds: the same command with the same checkpoints, torch version, device type and "
    "batch size gives bitwise identical outputs and FIDs on this CPU (checked by re-running rows). On another CPU "
    "model or on CUDA, float rounding in the transformer can flip a sampled token now and then, so FIDs may move "
    "slightly; Inception features also differ in the last digits between BLAS builds.")


@dataclass(frozen=True)
class Row:
    """One benchmark row: a method on a track.

    Attributes:
        track: one of :data:`TRACKS`.
        method: ``"maskgit"``, a :data:`maskgit_lib.baselines.BASELINES` name,
            ``"vqgan_composite"`` or ``"vqgan_raw"`` (the tokenizer ceiling).
        settings: MaskGIT sampler settings (``method == "maskgit"`` only).
    """

    track: str
    method: str
    settings: InpaintSettings | None = None

    @property
    def label(self) -> str:
        """Readable name, e.g. ``maskgit cosine T=12 s=8 raw``."""
        if self.method != "maskgit":
            return {"vqgan_composite": "VQGAN ceiling (GT recon, composited)",
                    "vqgan_raw": "VQGAN ceiling (GT recon, raw)"}.get(self.method, f"baseline {self.method}")
        s = self.settings
        text = f"maskgit {s.schedule} T={s.steps}" + (f" s={s.sweet_spot}" if s.sweet_spot is not None else "")
        return (text + ("" if s.composite else " raw") + (" lab-conf" if s.confidence == "lab" else "")
                + (f" {s.prefill}-fill" if s.prefill != InpaintSettings.prefill else "")
                + (f" {s.blend}-blend" if s.composite and s.blend != InpaintSettings.blend else "")
                + (f" temp={s.sampling_temperature:g}" if s.sampling_temperature != 1.0 else ""))

    @property
    def kind(self) -> str:
        """``maskgit``, ``baseline`` or ``ceiling``."""
        return self.method if self.method == "maskgit" else "ceiling" if self.method.startswith("vqgan") else "baseline"

    def spec(self) -> dict:
        """JSON-friendly description (the cache key and the JSON record)."""
        return {"track": self.track, "method": self.method,
                "settings": dataclasses.asdict(self.settings) if self.settings else None}

    def group(self) -> tuple:
        """Rows with equal groups share one computation (sweet spots and raw/composite of one decoding)."""
        if self.method == "maskgit":
            return (self.track, "maskgit", dataclasses.replace(self.settings, sweet_spot=None, composite=True,
                                                               blend=InpaintSettings.blend))
        return (self.track, "vqgan" if self.kind == "ceiling" else self.method)


def plan_rows(profile: str = "full", tracks: tuple[str, ...] = TRACKS, seed: int = 0) -> list[Row]:
    """The rows of a profile, track by track: ``quick``, ``headline``, ``full`` or ``complete``.

    ``complete`` is the whole grid: the lab's schedules x T in 1, 4, 8, 12, 16, the
    other schedules at T = 8, sweet spots (12, 8), (16, 8), (16, 12), raw, lab
    confidence (a GPU job). ``full`` prunes it to fit about an hour on a shared
    2-core CPU at 64 images (:data:`FULL_GRID`, :data:`FULL_OTHER_SCHEDULES`);
    ``quick`` is a few free-form rows; ``headline`` is what the README's table needs
    on the whole test set: cosine T = 8 with the official and the lab's confidence,
    each with the harmonic fill and Poisson blending (defaults), the harmonic fill
    pasted, and the lab's pipeline (gray fill, pasted). Box and border tracks get
    cosine T = 8 blended and pasted (and lab confidence in ``headline``) and the
    references. T = 1 is listed once (cosine): with one step the schedule is
    never evaluated, so every schedule gives the same output.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown benchmark profile {profile!r}; expected one of {', '.join(PROFILES)}")

    def mg(track: str, schedule: str = "cosine", steps: int = 8, **kw) -> Row:
        return Row(track, "maskgit", InpaintSettings(steps=steps, schedule=schedule, seed=seed, **kw))

    rows = []
    for t in tracks:
        if t != "freeform":
            rows += [mg(t), mg(t, blend="paste")] + ([mg(t, composite=False)] if profile == "complete" else [])
            rows += [mg(t, confidence="lab")] if profile in ("headline", "complete") else []
        elif profile == "quick":
            rows += [mg(t), mg(t, "linear"), mg(t, "square"), mg(t, confidence="lab"), mg(t, blend="paste"),
                     mg(t, confidence="lab", blend="paste"), mg(t, prefill="gray", blend="paste"),
                     mg(t, steps=1), mg(t, steps=12, sweet_spot=8), mg(t, composite=False)]
        elif profile == "headline":
            fills = (("harmonic", "poisson"), ("harmonic", "paste"), ("gray", "paste"))
            rows += [mg(t, confidence=c, prefill=p, blend=b) for p, b in fills for c in ("official", "lab")]
        else:
            grid = FULL_GRID if profile == "full" else {s: (1, 4, 8, 12, 16) for s in LAB_SCHEDULES}
            others = FULL_OTHER_SCHEDULES if profile == "full" else [s for s in SCHEDULES if s not in LAB_SCHEDULES]
            rows += [mg(t, s, n) for s in LAB_SCHEDULES for n in grid[s] if n > 1 or s == "cosine"]
            rows += [mg(t, steps=n, sweet_spot=k) for n, k in ((12, 8), (16, 8), (16, 12)) if n in grid["cosine"]]
            rows += [mg(t, composite=False), mg(t, confidence="lab"), mg(t, blend="paste"),
                     mg(t, confidence="lab", blend="paste"), mg(t, prefill="gray", blend="paste"),
                     mg(t, confidence="lab", prefill="gray", blend="paste")] + [mg(t, s) for s in others]
        rows += [Row(t, m) for m in (*baselines.BASELINES, "vqgan_composite", "vqgan_raw")]
    return rows


# ----------------------------------------------------------------------------- data and metrics


@dataclass
class TrackData:
    """Inputs of one track: names (N,), inputs/gt uint8 (N, 3, S, S), pixel_missing bool (N, S, S)."""

    names: list[str]
    inputs: torch.Tensor
    pixel_missing: torch.Tensor
    gt: torch.Tensor
    gt_dir: Path

    def fingerprint(self) -> str:
        h = hashlib.sha256("\0".join(self.names).encode())
        for t in (self.inputs, self.pixel_missing, self.gt):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


def load_tracks(dataset_dir: str | os.PathLike | None, tracks: tuple[str, ...], limit: int | None) -> dict:
    """Load the test set (first ``limit`` images) once and build each track from its ground truths."""
    folder = test_set(dataset_dir)
    if folder.gt_dir is None:
        raise ConfigError(f"the test set {folder.images_dir.parent} has no gt/ folder; the benchmark needs it")
    if limit is not None:
        folder.pairs = folder.pairs[:limit]
    names, inputs, missing, gt = [], [], [], []
    for i, (name, image, pixel_missing) in enumerate(folder):
        names.append(name)
        inputs.append(to_uint8(image))
        missing.append(pixel_missing)
        gt.append(to_uint8(folder.ground_truth(i)))
    gt_u8, size = torch.stack(gt), gt[0].shape[-1]
    out = {}
    for track in tracks:
        if track == "freeform":
            pm, inp = torch.stack(missing), torch.stack(inputs)
        else:
            from .data_prep import border_mask, box_mask

            hole = box_mask(size, BOX_FRAC) if track == "box" else border_mask(size, KEEP_FRAC)
            pm = hole.expand(len(names), -1, -1).clone()
            inp = baselines.gray_fill(gt_u8, pm)
        out[track] = TrackData(names, inp, pm, gt_u8, folder.gt_dir)
    return out


def hole_metrics(pred: torch.Tensor, gt: torch.Tensor, pixel_missing: torch.Tensor) -> dict:
    """PSNR and L1 over the missing pixels, per image then averaged over images that have a hole.

    Args:
        pred, gt: uint8 (N, 3, S, S). pixel_missing: bool (N, S, S).

    Returns:
        ``psnr_hole_db`` (peak 255, capped at 100 dB for an exact hole), ``l1_hole``
        (mean absolute error on the 0..1 scale) and ``images_with_hole``.
    """
    diff = pred.double() - gt.double()  # (N, 3, S, S)
    m = pixel_missing[:, None].expand_as(diff).double()  # (N, 3, S, S)
    count = m.flatten(1).sum(1)  # (N,) 3 x hole pixels
    has = count > 0
    mse = (diff.square() * m).flatten(1).sum(1) / count.clamp_min(1)  # (N,)
    l1 = (diff.abs() * m).flatten(1).sum(1) / count.clamp_min(1) / 255.0  # (N,)
    psnr = (10 * torch.log10(255.0 ** 2 / mse)).clamp(max=100.0)  # (N,) mse = 0 -> inf -> 100
    if not bool(has.any()):
        return {"psnr_hole_db": None, "l1_hole": None, "images_with_hole": 0}
    return {"psnr_hole_db": float(psnr[has].mean()), "l1_hole": float(l1[has].mean()),
            "images_with_hole": int(has.sum())}


# ----------------------------------------------------------------------------- caches


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (checkpoint identity in cache keys and the JSON)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_root() -> Path:
    return paths.cache_dir() / "benchmark"


def row_cache_path(row: Row, context: dict) -> Path:
    """``cache_dir()/benchmark/rows/<sha>.npz`` for a row in a context (data, checkpoints, device, seed...)."""
    key = json.dumps({"version": CACHE_VERSION, "row": row.spec(), **context}, sort_keys=True)
    return _cache_root() / "rows" / f"{_sha(key)}.npz"


def load_row(path: Path, n: int) -> tuple[torch.Tensor, float] | None:
    """Cached ``(outputs uint8 (n, 3, S, S), seconds)`` or None if absent/unreadable."""
    try:
        with np.load(path) as z:
            out, seconds = z["outputs"], float(z["seconds"])
        return (torch.from_numpy(out.copy()), seconds) if out.shape[0] == n and out.dtype == np.uint8 else None
    except (OSError, ValueError, KeyError, EOFError):
        return None


def save_row(path: Path, outputs: torch.Tensor, seconds: float, spec: dict) -> None:
    """Atomically write a row's outputs and inpainting time."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, outputs=outputs.numpy(), seconds=seconds, spec=json.dumps(spec))

    atomic_write(path, write)


def features(images: torch.Tensor, device: torch.device, use_cache: bool = True) -> np.ndarray:
    """Inception pool3 features (N, 2048) of uint8 images, cached by content."""
    from .fid import inception_features

    path = _cache_root() / "features" / f"{_sha(images.contiguous().numpy().tobytes())}.npy"
    if use_cache and path.is_file():
        feats = np.load(path)
        if feats.shape == (len(images), 2048):
            return feats.astype(np.float64)
    feats = inception_features(images, device=device)
    if use_cache:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, feats.astype(np.float32))

        atomic_write(path, write)
    return feats.astype(np.float32).astype(np.float64)  # what the cache returns: same FID cold or warm


def gt_features(data: TrackData, device: torch.device, use_cache: bool = True) -> np.ndarray:
    """Ground-truth features: fid's folder cache when the track uses the whole gt folder, else in memory."""
    from .fid import folder_features, list_fid_images

    files = list_fid_images(data.gt_dir)
    if [f.stem for f in files] == data.names:  # float32 like fid's cache: the same FID cold or warm
        return folder_features(data.gt_dir, device=device, cache=use_cache).astype(np.float32).astype(np.float64)
    return features(data.gt, device, use_cache)


# ----------------------------------------------------------------------------- running rows


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def run_maskgit_group(inpainter: Inpainter, data: TrackData, rows: list[Row], batch_size: int,
                      seed: int) -> dict[Row, tuple[torch.Tensor, float]]:
    """One decoding for rows that differ only in sweet spot / compositing.

    Returns:
        row -> (uint8 (N, 3, S, S) outputs, seconds): the shared decoding time plus the row's own
        VQGAN decode; each output equals ``inpainter.inpaint`` with the row's settings.
    """
    base = rows[0].group()[2]

    def finish(row: Row) -> tuple[int, str]:  # (stop step, "raw" or the blend)
        return row.settings.stop_step, row.settings.blend if row.settings.composite else "raw"

    stops = sorted({r.settings.stop_step for r in rows})
    parts: dict[tuple[int, str], list[torch.Tensor]] = {finish(r): [] for r in rows}
    shared, own = 0.0, {s: 0.0 for s in stops}
    dev = inpainter.device
    for k, lo in enumerate(range(0, len(data.names), batch_size)):
        images = from_uint8(data.inputs[lo:lo + batch_size]).to(dev)  # (b, 3, S, S)
        pm = data.pixel_missing[lo:lo + batch_size].to(dev)  # (b, S, S)
        gen = torch.Generator(dev).manual_seed(batch_seed(seed, k))
        t0 = _now(dev)
        res = inpainter.inpaint(images, pm, base, gen, keep_trace=stops != [base.steps])
        shared += _now(dev) - t0
        idx = res.decoded.nonzero().flatten()
        for s in stops:
            t0 = _now(dev)
            raw = res.raw
            if s != base.steps:
                raw = images.clone()
                if len(idx):
                    raw[idx] = inpainter.decode(res.trace.tokens_at(s)[idx])  # sweet spot s
            for stop, mode in parts:
                if stop == s:
                    out = raw if mode == "raw" else get_blend(mode)(raw, images, pm)
                    parts[(stop, mode)].append(to_uint8(out).cpu())
            own[s] += _now(dev) - t0
    return {r: (torch.cat(parts[finish(r)]),
                shared + own[r.settings.stop_step]) for r in rows}


def run_reference_group(inpainter: Inpainter, data: TrackData,
                        rows: list[Row], batch_size: int) -> dict[Row, tuple[torch.Tensor, float]]:
    """A classical baseline row, or the two VQGAN-ceiling rows (one reconstruction)."""
    t0 = time.perf_counter()
    if rows[0].kind == "baseline":
        return {rows[0]: (baselines.get_baseline(rows[0].method)(data.inputs, data.pixel_missing),
                          time.perf_counter() - t0)}
    dev = inpainter.device
    t0 = _now(dev)
    raw = baselines.vqgan_ceiling(inpainter.vqgan, data.gt, data.pixel_missing, composite=False,
                                  batch_size=batch_size)
    seconds = _now(dev) - t0
    done = baselines.paste_known(raw, data.gt, data.pixel_missing)
    return {r: (done if r.method == "vqgan_composite" else raw, seconds) for r in rows}


def _cost(row: Row, n: int) -> float:
    """Rough work units of a row (one transformer forward of one image = 1), for the ETA only."""
    fid = 3.0 * n
    if row.kind == "maskgit":
        return fid + n * (row.settings.steps + 2 if row.settings.sweet_spot is None and row.settings.composite else 1)
    return fid + n * (2.0 if row.kind == "ceiling" else 0.3)


def evaluate(row: Row, outputs: torch.Tensor, seconds: float, data: TrackData, gt_feats: np.ndarray | None,
             device: torch.device, use_cache: bool) -> dict:
    """The JSON record of a finished row: settings, metrics, FID and times."""
    from .fid import frechet_distance_from_features

    n = len(data.names)
    record = {"id": f"{row.track}/{row.label}", "label": row.label, "kind": row.kind, **row.spec(), "images": n,
              **hole_metrics(outputs, data.gt, data.pixel_missing),
              "missing_pixel_fraction": float(data.pixel_missing.float().mean()),
              "seconds_inpaint": seconds, "seconds_per_image": seconds / n, "fid": None, "fid_seconds": None}
    if gt_feats is not None:
        t0 = time.perf_counter()
        record["fid"] = frechet_distance_from_features(features(outputs, device, use_cache), gt_feats)
        record["fid_seconds"] = time.perf_counter() - t0
    return record


def _score(record: dict) -> float:
    return record["fid"] if record["fid"] is not None else -(record["psnr_hole_db"] or 0.0)


def best(records: list[dict], track: str, kind: str, composite_only: bool = True) -> dict | None:
    """The row of ``kind`` with the lowest FID (highest hole PSNR without FID) on ``track``."""
    pool = [r for r in records if r["track"] == track and r["kind"] == kind
            and not (composite_only and r["settings"] and not r["settings"]["composite"])]
    return min(pool, key=_score) if pool else None


# ----------------------------------------------------------------------------- reports


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    from .viz import show_images

    import textwrap

    n = min(len(v) for v in images.values())
    fig = show_images(from_uint8(torch.cat([v[:n] for v in images.values()])), ncols=n, scale=1.1)
    for j, name in enumerate(images):
        fig.axes[j * n].set_ylabel(textwrap.fill(name, 16), fontsize=7)
    return fig


def schedule_steps_figure(inpainter: Inpainter, data: TrackData, index: int = 0, steps: int = 8, seed: int = 0):
    """Per-step latent masks and images of the lab's three schedules on one test image."""
    from .viz import schedule_comparison_figure

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


# ----------------------------------------------------------------------------- CLI


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``maskgit benchmark``."""
    parser.add_argument("--quick", action="store_true",
                        help=f"a few rows on the first {QUICK_LIMIT} images, free-form track only "
                             "(writes benchmark_quick.* so a full run is not overwritten)")
    parser.add_argument("--headline", action="store_true",
                        help="the README's rows (cosine T=8, official/lab confidence x harmonic fill + Poisson or "
                             "paste, the lab's gray fill + paste) and the references on the whole test set "
                             "(writes benchmark_headline.*)")
    parser.add_argument("--complete", action="store_true",
                        help="every row (lab schedules x T in 1,4,8,12,16, all other schedules, all sweet spots): "
                             "hours on a CPU, minutes on a GPU")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: results/)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N test images")
    parser.add_argument("--tracks", default=None, help=f"comma-separated subset of {','.join(TRACKS)}")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    parser.add_argument("--seed", type=seed_int, default=0, help="sampling seed (batch k uses batch_seed(seed, k))")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (part of the seeding)")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: data/twemoji64)")
    parser.add_argument("--vqgan-checkpoint", type=Path, default=None)
    parser.add_argument("--transformer-checkpoint", type=Path, default=None)
    parser.add_argument("--no-fid", action="store_true", help="skip FID (tests only; the real run computes it)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached rows and features")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures (tables and JSON only)")


def command_line(args: argparse.Namespace) -> str:
    """``maskgit benchmark`` with the options that differ from their defaults."""
    parser = argparse.ArgumentParser()
    add_benchmark_arguments(parser)
    defaults, words = vars(parser.parse_args([])), ["maskgit", "benchmark"]
    for name, value in vars(args).items():
        if name in defaults and value != defaults[name]:
            flag = "--" + name.replace("_", "-")
            words += [flag] if value is True else [flag, str(value)]
    return " ".join(words)


def _machine() -> dict:
    import multiprocessing

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"summary": f"{cpu} ({multiprocessing.cpu_count()} CPUs)" + (f", {cuda}" if cuda else ""),
            "cpu": cpu, "cpu_count": multiprocessing.cpu_count(), "cuda": cuda, "platform": platform.platform(),
            "python": sys.version.split()[0], "torch_threads": torch.get_num_threads(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def _versions() -> dict:
    out = {"numpy": np.__version__}
    for name, module in (("opencv", "cv2"), ("scikit-image", "skimage"), ("pytorch-fid", "pytorch_fid")):
        try:
            out[name] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            out[name] = None
    return out


def _write_outputs(report: dict, out: Path, suffix: str) -> None:
    atomic_write(out / f"benchmark{suffix}.json",
                 lambda tmp: tmp.write_text(json.dumps(report, indent=2, default=str) + "\n"))
    atomic_write(out / f"benchmark{suffix}.md", lambda tmp: tmp.write_text(markdown_report(report)))


def run_benchmark(args: argparse.Namespace) -> int:
    """Run every planned row (cached rows are reused), write JSON, markdown and figures; print a summary."""
    start = time.perf_counter()
    chosen = [name for name in ("quick", "headline", "complete") if getattr(args, name, False)]
    if len(chosen) > 1:
        raise ConfigError(f"choose one of --quick, --headline, --complete (got {', '.join(chosen)})")
    profile = chosen[0] if chosen else "full"
    tracks = tuple(t.strip() for t in args.tracks.split(",")) if args.tracks else (
        ("freeform",) if args.quick else TRACKS)
    if not set(tracks) <= set(TRACKS) or args.batch_size < 1 or (args.limit is not None and args.limit < 2):
        raise ConfigError(f"--tracks must be a subset of {TRACKS}, --batch-size >= 1 and --limit >= 2")
    limit = args.limit if args.limit is not None else QUICK_LIMIT if args.quick else None
    suffix = {"quick": "_quick", "headline": "_headline"}.get(profile, "")
    out, use_cache = Path(args.out or paths.results_dir()), not args.no_cache
    rows = plan_rows(profile, tracks, args.seed)
    inpainter = Inpainter.from_checkpoints(args.vqgan_checkpoint, args.transformer_checkpoint, device=args.device)
    dev = inpainter.device
    ckpt = {k: Path(p or d) for k, p, d in (("vqgan", args.vqgan_checkpoint, paths.default_vqgan_checkpoint()),
                                            ("transformer", args.transformer_checkpoint,
                                             paths.default_transformer_checkpoint()))}
    ckpt = {k: {"path": str(p), "sha256": file_sha256(p)} for k, p in ckpt.items()}
    data = load_tracks(args.data, tracks, limit)
    meta = {"profile": profile, "command": command_line(args),
            "tracks": list(tracks), "seed": args.seed, "batch_size": args.batch_size, "device": str(dev),
            "torch": torch.__version__, "maskgit_lib": __version__, "versions": _versions(), "machine": _machine(),
            "checkpoints": ckpt, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "planned_rows": len(rows),
            "images": {t: len(d.names) for t, d in data.items()}, "dataset": str(data[tracks[0]].gt_dir.parent),
            "fid_protocol": "pytorch-fid InceptionV3 pool3 (offline weights), bilinear resize to 299, every row vs "
                            "the same N ground truths of test/gt; FID with N < 2048 is biased high, compare rows "
                            "of equal N only." if not args.no_fid else "skipped (--no-fid)",
            "determinism": NOTE_DETERMINISM}
    report = {"meta": meta, "rows": []}
    total = sum(_cost(r, len(data[r.track].names)) for r in rows)
    done = computed = compute_s = 0.0
    keep = {}  # (track, label) -> first outputs for the gallery
    for track, td in data.items():
        ctx = {"data": td.fingerprint(), "device_type": dev.type, "batch_size": args.batch_size, "seed": args.seed,
               "checkpoints": {k: v["sha256"] for k, v in ckpt.items()}}
        gt_feats = None if args.no_fid else gt_features(td, dev, use_cache)
        groups: dict[tuple, list[Row]] = {}
        for r in (r for r in rows if r.track == track):
            groups.setdefault(r.group(), []).append(r)
        for grows in groups.values():
            t0 = time.perf_counter()
            results = {r: load_row(row_cache_path(r, ctx), len(td.names)) if use_cache else None for r in grows}
            from_cache, same = {r: v is not None for r, v in results.items()}, {}
            if not all(from_cache.values()):
                fresh = (run_maskgit_group(inpainter, td, grows, args.batch_size, args.seed)
                         if grows[0].kind == "maskgit" else run_reference_group(inpainter, td, grows, args.batch_size))
                for r, (outputs, seconds) in fresh.items():
                    if from_cache[r]:  # recomputed with its group: a free determinism check
                        same[r] = torch.equal(outputs, results[r][0])
                        if not same[r]:
                            logger.warning("%s: recomputed outputs differ from the cached ones", r.label)
                    elif use_cache:
                        save_row(row_cache_path(r, ctx), outputs, seconds, r.spec())
                    results[r] = results[r] or (outputs, seconds)
            for r in grows:
                record = evaluate(r, *results[r], td, gt_feats, dev, use_cache)
                report["rows"].append({**record, "from_cache": from_cache[r], "recomputed_matches_cache": same.get(r)})
                keep[(track, r.label)] = results[r][0][:GALLERY_IMAGES]
                logger.info("%-55s FID %s  PSNR %s dB  %.3f s/img%s", record["id"], _fmt(record["fid"]),
                            _fmt(record["psnr_hole_db"]), record["seconds_per_image"],
                            " (cached)" if from_cache[r] else "")
            cost = sum(_cost(r, len(td.names)) for r in grows)
            done += cost
            if not all(from_cache.values()):
                computed, compute_s = computed + cost, compute_s + time.perf_counter() - t0
            eta = (total - done) * compute_s / computed if computed else float("nan")
            logger.info("progress: %d/%d rows, %.1f min elapsed, ETA %.1f min", len(report["rows"]), len(rows),
                        (time.perf_counter() - start) / 60, eta / 60)
            meta["wall_seconds"] = time.perf_counter() - start
            _write_outputs(report, out, suffix)
    meta.update(finished=time.strftime("%Y-%m-%d %H:%M:%S"), loadavg_end=[round(x, 2) for x in os.getloadavg()])
    figures = [] if args.no_figures else _write_figures(report, keep, data, inpainter, out, suffix, args.seed)
    meta.update(figures=figures, wall_seconds=time.perf_counter() - start)
    _write_outputs(report, out, suffix)
    print(markdown_report(report).split("\n## Notes")[0])
    print(f"wrote {out / f'benchmark{suffix}.md'}, .json and {len(figures)} figures in "
          f"{meta['wall_seconds'] / 60:.1f} min")
    return 0


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
