"""The benchmark behind ``maskgit benchmark``: MaskGIT decoding settings vs classical baselines -> results/.

:func:`run_benchmark` takes a :class:`BenchmarkConfig` (the CLI's flags) and returns the
report it also writes as JSON, markdown and figures. The rows are planned in
:mod:`~maskgit_lib.evaluation.rows`, the data and caches live in
:mod:`~maskgit_lib.evaluation.tracks`, the report in :mod:`~maskgit_lib.evaluation.report`.

Tracks (the same ground-truth images in each, fixed masks, holes painted gray 128):

- ``freeform``: the test set's shipped brush-stroke masks (``test/mask64``);
- ``box``: a centred square hole, side 50% (:func:`maskgit_lib.masks.box_mask`);
- ``border``: outpainting, keep the centred 50% square (:func:`~maskgit_lib.masks.border_mask`).

Each row is one method on one track: MaskGIT with some :class:`InpaintSettings`
(schedule, T, sweet spot s, composite (Poisson or paste) or raw, the confidence rule), a
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

import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__, paths
from ..blend import get_blend
from ..data import from_uint8, to_uint8
from ..errors import ConfigError
from ..inpaint import Inpainter, batch_seed
from ..runtime import cpu_info
from . import baselines
from .fid import frechet_distance_from_features
from .kid import kid_from_features
from .report import _fmt, _write_figures, _write_outputs
from .rows import GALLERY_IMAGES, NOTE_DETERMINISM, PROFILES, QUICK_LIMIT, TRACKS, Row, plan_rows
from .tracks import (TrackData, features, file_sha256, gt_features, hole_metrics, load_row, load_tracks,
                     row_cache_path, save_row)

logger = logging.getLogger(__name__)


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
    """The JSON record of a finished row: settings, metrics, FID, KID and times.

    FID and KID (:func:`~maskgit_lib.evaluation.kid.kid_from_features`: 100 subsets of
    1000 images, or N/2 below 2000, seed 0, its own generator) come from the same features of
    ``outputs`` against ``gt_feats`` (N, 2048); ``fid_seconds`` covers features, FID and KID.
    """
    n = len(data.names)
    record = {"id": f"{row.track}/{row.label}", "label": row.label, "kind": row.kind, **row.spec(), "images": n,
              **hole_metrics(outputs, data.gt, data.pixel_missing),
              "missing_pixel_fraction": float(data.pixel_missing.float().mean()),
              "seconds_inpaint": seconds, "seconds_per_image": seconds / n, "fid": None, "kid": None,
              "kid_std": None, "fid_seconds": None}
    if gt_feats is not None:
        t0 = time.perf_counter()
        feats = features(outputs, device, use_cache)  # (N, 2048) float64
        record["fid"] = frechet_distance_from_features(feats, gt_feats)
        record["kid"], record["kid_std"] = kid_from_features(feats, gt_feats)
        record["fid_seconds"] = time.perf_counter() - t0
    return record


# ----------------------------------------------------------------------------- reports


# ----------------------------------------------------------------------------- CLI


def _machine() -> dict:
    cpu = cpu_info().get("model name") or platform.processor() or platform.machine()
    count = os.cpu_count()
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"summary": f"{cpu} ({count} CPUs)" + (f", {cuda}" if cuda else ""),
            "cpu": cpu, "cpu_count": count, "cuda": cuda, "platform": platform.platform(),
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


@dataclass(frozen=True)
class BenchmarkConfig:
    """What :func:`run_benchmark` measures and where it writes; the fields are ``maskgit benchmark``'s flags.

    Attributes:
        profile: ``quick`` (a few rows, first 64 images, free-form), ``headline`` (the README's rows on the
            whole test set), ``full`` (the grid) or ``complete`` (every row).
        tracks: subset of :data:`~maskgit_lib.evaluation.rows.TRACKS` (None: free-form for ``quick``, else all).
        limit: only the first N test images (None: 64 for ``quick``, else all).
        out: folder for ``benchmark*.{md,json}`` and figures (None: ``results/``).
        data: dataset folder (None: ``data/twemoji64``). vqgan_checkpoint, transformer_checkpoint: None = shipped.
        device, seed, batch_size: where and how MaskGIT decodes (batch k uses ``batch_seed(seed, k)``).
        fid: compute FID. cache: read and write cached rows and features. figures: write the PNGs.
        command: the command line recorded in the report.
    """

    profile: str = "full"
    tracks: tuple[str, ...] | None = None
    limit: int | None = None
    out: Path | None = None
    data: Path | None = None
    vqgan_checkpoint: Path | None = None
    transformer_checkpoint: Path | None = None
    device: str = "auto"
    seed: int = 0
    batch_size: int = 64
    fid: bool = True
    cache: bool = True
    figures: bool = True
    command: str = "maskgit benchmark"

    def __post_init__(self) -> None:
        tracks = self.tracks if self.tracks is not None else (("freeform",) if self.profile == "quick" else TRACKS)
        object.__setattr__(self, "tracks", tuple(tracks))
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown benchmark profile {self.profile!r}; choose one of {PROFILES}")
        if not set(self.tracks) <= set(TRACKS) or self.batch_size < 1 or (self.limit is not None and self.limit < 2):
            raise ConfigError(f"--tracks must be a subset of {TRACKS}, --batch-size >= 1 and --limit >= 2")


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Run every planned row (cached rows are reused); write JSON, markdown and figures.

    Returns:
        The report: ``{"meta": {...}, "rows": [record, ...]}`` (what ``benchmark*.json`` holds);
        ``meta["markdown"]`` is the markdown file's path.
    """
    start = time.perf_counter()
    profile, tracks = cfg.profile, cfg.tracks
    limit = cfg.limit if cfg.limit is not None else QUICK_LIMIT if profile == "quick" else None
    suffix = {"quick": "_quick", "headline": "_headline"}.get(profile, "")
    out, use_cache = Path(cfg.out or paths.results_dir()), cfg.cache
    rows = plan_rows(profile, tracks, cfg.seed)
    inpainter = Inpainter.from_checkpoints(cfg.vqgan_checkpoint, cfg.transformer_checkpoint, device=cfg.device)
    dev = inpainter.device
    ckpt = {k: Path(p or d) for k, p, d in (("vqgan", cfg.vqgan_checkpoint, paths.default_vqgan_checkpoint()),
                                            ("transformer", cfg.transformer_checkpoint,
                                             paths.default_transformer_checkpoint()))}
    ckpt = {k: {"path": str(p), "sha256": file_sha256(p)} for k, p in ckpt.items()}
    data = load_tracks(cfg.data, tracks, limit)
    meta = {"profile": profile, "command": cfg.command,
            "tracks": list(tracks), "seed": cfg.seed, "batch_size": cfg.batch_size, "device": str(dev),
            "torch": torch.__version__, "maskgit_lib": __version__, "versions": _versions(), "machine": _machine(),
            "checkpoints": ckpt, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "planned_rows": len(rows),
            "images": {t: len(d.names) for t, d in data.items()}, "dataset": str(data[tracks[0]].gt_dir.parent),
            "fid_protocol": "pytorch-fid InceptionV3 pool3 (offline weights), bilinear resize to 299, every row vs "
                            "the same N ground truths of test/gt; FID with N < 2048 is biased high, compare rows "
                            "of equal N only." if cfg.fid else "skipped (--no-fid)",
            "determinism": NOTE_DETERMINISM}
    report = {"meta": meta, "rows": []}
    total = sum(_cost(r, len(data[r.track].names)) for r in rows)
    done = computed = compute_s = 0.0
    keep = {}  # (track, label) -> first outputs for the gallery
    for track, td in data.items():
        ctx = {"data": td.fingerprint(), "device_type": dev.type, "batch_size": cfg.batch_size, "seed": cfg.seed,
               "checkpoints": {k: v["sha256"] for k, v in ckpt.items()}}
        gt_feats = None if not cfg.fid else gt_features(td, dev, use_cache)
        groups: dict[tuple, list[Row]] = {}
        for r in (r for r in rows if r.track == track):
            groups.setdefault(r.group(), []).append(r)
        for grows in groups.values():
            t0 = time.perf_counter()
            results = {r: load_row(row_cache_path(r, ctx), len(td.names)) if use_cache else None for r in grows}
            from_cache, same = {r: v is not None for r, v in results.items()}, {}
            if not all(from_cache.values()):
                fresh = (run_maskgit_group(inpainter, td, grows, cfg.batch_size, cfg.seed)
                         if grows[0].kind == "maskgit" else run_reference_group(inpainter, td, grows, cfg.batch_size))
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
    figures = [] if not cfg.figures else _write_figures(report, keep, data, inpainter, out, suffix, cfg.seed)
    meta.update(figures=figures, wall_seconds=time.perf_counter() - start)
    _write_outputs(report, out, suffix)
    meta["markdown"] = str(out / f"benchmark{suffix}.md")
    return report
