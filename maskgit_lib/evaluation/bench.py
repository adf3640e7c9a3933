"""The sections of ``maskgit bench``: training and decoding throughput as MFU against peaks sampled in the same run.

:func:`run_bench` takes a :class:`~maskgit_lib.evaluation.speed.BenchOptions` and runs
the chosen sections (``peak``, ``train``, ``vqgan``, ``decode``, ``attention``,
``fid``, ``threads``); the measuring tools are in :mod:`~maskgit_lib.evaluation.speed`,
the report in :mod:`~maskgit_lib.evaluation.bench_report`.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import paths
from ..attention import scaled_dot_product_attention
from ..config import TrainConfig, TransformerConfig, VQGANConfig
from ..data import load_image, test_set
from ..errors import ConfigError, DataError
from ..inpaint import Inpainter, InpaintSettings
from ..masks import brush_stroke_mask
from ..runtime import DistContext, autocast, derive_seed, make_generator, native_bf16, resolve_device
from ..training.optim import make_optimizer
from ..training.transformer import TRANSFORMER_TRAIN_PRESETS, make_train_step
from ..training.vqgan import VQGAN_TRAIN_PRESETS, VQGANObjective
from ..transformer import MaskGITTransformer, count_parameters, flops_per_image, set_attention_impl
from ..vqgan import VQGAN
from . import fid
from .bench_report import write_report
from .speed import (SECTIONS, BenchOptions, _Bench, count_flops, interleaved, load_average,
                    machine_info, timed)
from .threads import bench_threads

log = logging.getLogger(__name__)


def _train_loop(model, train_step, tcfg, device: torch.device, num_items: int, generator_seed: int = 0):
    """One optimizer step as :class:`~maskgit_lib.training.Trainer` takes it (seeding, autocast, clip, AdamW)."""
    optimizer = make_optimizer(model, tcfg, device)
    order = torch.Generator().manual_seed(generator_seed)
    state = {"step": 0}

    def step(batch: int, bf16: bool) -> None:
        s = state["step"]
        state["step"] += 1
        indices = torch.randint(0, num_items, (batch,), generator=order).to(device)  # (B,)
        torch.manual_seed(derive_seed(tcfg.seed, "global", s, 0))  # dropout etc.
        gen = make_generator(derive_seed(tcfg.seed, "batch", s, 0, 0), device)
        with autocast(device, bf16):
            out = train_step(model, indices, gen, s)
        out["loss"].backward()
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _throughput_by_precision(bench: _Bench, step, flops: float, batch: int, rounds: int,
                             precisions: list[str]) -> dict[str, Any]:
    out = {}
    for precision in precisions:
        bf16 = precision == "bf16"
        slow = bf16 and not native_bf16(bench.device)
        b = (bench.opts.bf16_batch or batch) if slow else batch
        step(1 if slow else b, bf16)  # warm-up (a slow bf16 path only pays the first-call costs)
        res = interleaved(lambda: step(b, bf16), b, flops, bench.sampler(precision), 1 if slow else rounds,
                          bench.device)
        res.update(batch=b, reduced_batch=slow and b != batch, load_average=load_average())
        out[precision] = res
        log.info("%s: %.2f images/s, MFU %.1f%% (vs %s peak %.1f GFLOP/s)", precision, res["images_per_s"],
                 100 * res["mfu"], precision, res["peak_gflops_mean"])
    return out


def bench_train(bench: _Bench) -> dict[str, Any]:
    """Transformer MVTM training step (forward + backward + AdamW), fp32 and bf16 autocast."""
    opts, device = bench.opts, bench.device
    cfg = TransformerConfig.preset(opts.preset)
    tcfg = dataclasses.replace(TrainConfig(), **TRANSFORMER_TRAIN_PRESETS[opts.preset])
    torch.manual_seed(0)
    model = MaskGITTransformer(cfg).to(device).train()
    model.validate_inputs = False  # as train_transformer does
    num_items = max(256, opts.train_batch)
    tokens = torch.randint(0, cfg.codebook_size, (num_items, cfg.num_tokens),
                           generator=torch.Generator().manual_seed(1)).to(device)  # (N, L)
    step = _train_loop(model, make_train_step(tcfg, tokens, cfg.codebook_size), tcfg, device, num_items)
    analytic = flops_per_image(cfg, training=True)
    counted = count_flops(lambda: step(2, False)) / 2.0
    model.eval()
    with torch.no_grad():
        counted_fwd = count_flops(lambda: model(tokens[:1]))
    model.train()
    result = {"config": dataclasses.asdict(cfg), "parameters": count_parameters(model),
              "flops_per_image_train": analytic, "flops_per_image_forward": flops_per_image(cfg),
              "counted_train": counted, "counted_forward": counted_fwd,
              "flop_check_train": counted / analytic, "flop_check_forward": counted_fwd / flops_per_image(cfg),
              "label_smoothing": tcfg.label_smoothing, "grad_clip": tcfg.grad_clip}
    result.update(_throughput_by_precision(bench, step, analytic, opts.train_batch, opts.rounds, bench.precisions()))
    return result


def bench_vqgan(bench: _Bench) -> dict[str, Any]:
    """VQGAN training step (encoder, quantizer, decoder, L1+MSE+VQ loss, AdamW), FLOPs counted."""
    opts, device = bench.opts, bench.device
    cfg = VQGANConfig.preset(opts.preset)
    tcfg = dataclasses.replace(TrainConfig(), **VQGAN_TRAIN_PRESETS[opts.preset])
    torch.manual_seed(0)
    model = VQGAN(cfg).to(device).train()
    num_items = max(64, opts.vqgan_batch)
    images_u8 = torch.randint(0, 256, (num_items, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(2)).to(device)
    objective = VQGANObjective(tcfg, model, images_u8, DistContext(device))
    step = _train_loop(model, objective, tcfg, device, num_items)
    step(2, False)  # first step initialises the codebook from the data
    flops = count_flops(lambda: step(2, False)) / 2.0
    precisions = [p for p in bench.precisions() if p == "fp32" or native_bf16(device)]
    result = {"config": dataclasses.asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
              "flops_per_image_train": flops,
              "bf16": None if "bf16" in precisions else "skipped: no native bf16 on this hardware"}
    result.update(_throughput_by_precision(bench, step, flops, opts.vqgan_batch, opts.rounds, precisions))
    return result


def bench_inpainter(opts: BenchOptions, device: torch.device):
    """The shipped checkpoints for the ``cpu`` preset (if present), else random models of the preset."""
    vq_path, tf_path = paths.default_vqgan_checkpoint(), paths.default_transformer_checkpoint()
    if opts.preset == "cpu" and vq_path.exists() and tf_path.exists():
        return Inpainter.from_checkpoints(vq_path, tf_path, device=device), "shipped checkpoints"
    torch.manual_seed(0)
    vqgan = VQGAN(VQGANConfig.preset(opts.preset)).eval()
    transformer = MaskGITTransformer(TransformerConfig.preset(opts.preset)).eval()
    return Inpainter(vqgan, transformer, device=device), f"random {opts.preset} models"


def _test_images(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor, str, int]:
    """``count`` test images and pixel masks (the default test set, cycled), else synthetic ones.

    Returns:
        images float (count, 3, S, S), pixel_missing bool (count, S, S), source, test-set size.
    """
    try:
        folder = test_set(size=size)
        items = [folder[i % len(folder)] for i in range(count)]
        return (torch.stack([it[1] for it in items]), torch.stack([it[2] for it in items]),
                str(folder.images_dir.parent), len(folder))
    except (DataError, OSError) as exc:
        log.info("no test set (%s): synthetic images and brush-stroke masks", exc)

        gen = torch.Generator().manual_seed(3)
        images = torch.rand(count, 3, size, size, generator=gen) * 2 - 1
        masks = torch.stack([brush_stroke_mask(size, gen) for _ in range(count)])
        return images, masks, "synthetic", 500


def bench_decode(bench: _Bench) -> dict[str, Any]:
    """Inpainting with iterative decoding: a batch (throughput) and one image (latency)."""
    opts, device = bench.opts, bench.device
    inpainter, models = bench_inpainter(opts, device)
    size = inpainter.image_size
    images, pixel_missing, source, test_count = _test_images(opts.decode_batch, size)
    settings = InpaintSettings(steps=opts.steps)
    one = images[:1].to(device)
    enc = count_flops(lambda: inpainter.encode(one))
    dec = count_flops(lambda: inpainter.decode(inpainter.encode(one))) - enc
    per_pass = flops_per_image(inpainter.transformer.cfg)
    per_image = opts.steps * per_pass + enc + dec

    def run(n: int) -> Callable[[], Any]:
        gen = torch.Generator(device).manual_seed(0)
        return lambda: inpainter.inpaint(images[:n], pixel_missing[:n], settings, gen.manual_seed(0))

    run(2)()  # warm-up
    sampler = bench.sampler("fp32")
    batch = interleaved(run(opts.decode_batch), opts.decode_batch, per_image, sampler, max(1, opts.rounds - 1), device)
    batch.update(batch=opts.decode_batch, load_average=load_average())
    single = interleaved(run(1), 1, per_image, sampler, opts.latency_runs, device)
    single.update(latency_s=statistics.median(single["seconds"]), latency_min_s=min(single["seconds"]),
                  load_average=load_average())
    limit = batch["peak_gflops_mean"] * 1e9 / per_image
    return {"models": models, "images": source, "steps": opts.steps, "schedule": settings.schedule,
            "flops_per_image": per_image, "flops_transformer_pass": per_pass, "flops_vqgan_encode": enc,
            "flops_vqgan_decode": dec, "limit_images_per_s": limit, "batch": batch, "single": single,
            "test_images": test_count, "test_set_estimate_s": test_count / batch["images_per_s"],
            "test_set_bound_s": test_count / limit, "threads": torch.get_num_threads()}


def bench_attention(bench: _Bench) -> dict[str, Any]:
    """From-scratch attention vs ``F.scaled_dot_product_attention``: the op alone and a model forward."""
    import torch.nn.functional as F


    opts, device = bench.opts, bench.device
    cfg = TransformerConfig.preset(opts.preset)
    heads, length, dim = cfg.heads, cfg.num_tokens, cfg.dim // cfg.heads
    gen = torch.Generator(device).manual_seed(4)
    q, k, v = (torch.randn(opts.attention_batch, heads, length, dim, generator=gen, device=device) for _ in range(3))
    op_flops = 4.0 * opts.attention_batch * heads * length * length * dim  # Q K^T and A V
    calls = {"scratch": lambda: scaled_dot_product_attention(q, k, v)[0],
             "sdpa": lambda: F.scaled_dot_product_attention(q, k, v)}
    result: dict[str, Any] = {"op_shape": [opts.attention_batch, heads, length, dim],
                              "max_abs_diff": float((calls["scratch"]() - calls["sdpa"]()).abs().max())}
    for name, call in calls.items():
        best = min(timed(call, device) for _ in range(max(2, opts.rounds)))
        result[f"op_{name}_ms"] = 1e3 * best
        result[f"op_{name}_gflops"] = op_flops / best / 1e9
    torch.manual_seed(0)
    model = MaskGITTransformer(cfg).to(device).eval()
    tokens = torch.randint(0, cfg.codebook_size + 1, (opts.forward_batch, length), generator=gen, device=device)
    with torch.no_grad():
        for impl in ("scratch", "sdpa"):
            set_attention_impl(model, impl)
            model(tokens)
            best = min(timed(lambda: model(tokens), device) for _ in range(max(2, opts.rounds)))
            result[f"forward_{impl}_ms"] = 1e3 * best
            result[f"forward_{impl}_gflops"] = opts.forward_batch * flops_per_image(cfg) / best / 1e9
    result.update(forward_batch=opts.forward_batch, op_speedup=result["op_scratch_ms"] / result["op_sdpa_ms"],
                  forward_speedup=result["forward_scratch_ms"] / result["forward_sdpa_ms"],
                  load_average=load_average())
    return result


def bench_fid(bench: _Bench) -> dict[str, Any]:
    """Inception forward speed on test images, extrapolated to the test set; is the gt side cached?"""
    import numpy as np


    opts, device = bench.opts, bench.device
    t0 = time.perf_counter()
    model = fid.build_inception(device)
    load_s = time.perf_counter() - t0
    try:
        folder = test_set()
        gt_dir = folder.gt_dir
    except Exception:  # noqa: BLE001 - any missing test set: synthetic images, no cache check
        folder, gt_dir = None, None
    files = fid.list_fid_images(gt_dir) if gt_dir is not None else []
    if files:
        images = torch.stack([load_image(files[i % len(files)]) for i in range(opts.fid_images)])
    else:
        images = torch.rand(opts.fid_images, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    fid.inception_features(images[:2], device=device)  # warm-up
    seconds = timed(lambda: fid.inception_features(images, batch_size=50, device=device), device)
    with torch.no_grad():
        flops = count_flops(lambda: model(((images[:1] + 1) / 2).to(device)))
    rate = opts.fid_images / seconds
    n = len(files) or 500
    cached = False
    if files:
        cached = (paths.cache_dir() / "fid_stats" / f"{fid.folder_fingerprint(files)}.npz").is_file()
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((n, fid.FEATURE_DIM)), rng.standard_normal((n, fid.FEATURE_DIM))
    t1 = time.perf_counter()
    fid.frechet_distance_from_features(*feats)
    frechet_s = time.perf_counter() - t1
    pred_s = n / rate
    return {"images_timed": opts.fid_images, "images_per_s": rate, "flops_per_image": flops,
            "achieved_gflops": rate * flops / 1e9, "model_load_s": load_s, "test_images": n,
            "gt_dir": str(gt_dir) if gt_dir else None, "gt_cached": cached, "frechet_s": frechet_s,
            "estimate_s": pred_s + (0.0 if cached else pred_s) + frechet_s,
            "estimate_uncached_s": 2 * pred_s + frechet_s, "load_average": load_average()}


SECTION_FUNCS: dict[str, Callable[[_Bench], dict[str, Any]]] = {
    "train": bench_train, "vqgan": bench_vqgan, "decode": bench_decode, "attention": bench_attention,
    "fid": bench_fid, "threads": bench_threads,
}


def run_bench(opts: BenchOptions, command: str = "maskgit bench") -> dict[str, Any]:
    """Run the chosen sections; write ``opts.out`` (markdown) and its ``.json`` twin if set.

    Returns:
        The results (torch's thread count is restored afterwards): ``command``,
        ``options``, ``machine`` (start), ``peak``
        (fp32/bf16 tables), one dict per section, ``errors`` (section -> message
        for a section that failed, e.g. missing FID weights), ``load_average_end``
        and ``wall_s``.
    """
    unknown = set(opts.sections) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown bench section(s) {sorted(unknown)}; choose from {list(SECTIONS)}")
    previous_threads = torch.get_num_threads()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    try:
        return _run_sections(opts, command)
    finally:
        torch.set_num_threads(previous_threads)


def _run_sections(opts: BenchOptions, command: str) -> dict[str, Any]:
    """The body of :func:`run_bench`, with the thread count already set."""
    device = resolve_device(opts.device)
    start = time.perf_counter()
    bench = _Bench(opts, device)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()}
    results: dict[str, Any] = {"command": command, "options": options, "machine": machine_info(device),
                               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "errors": {}}
    log.info("bench on %s, %d threads, load %s", results["machine"]["cpu_model"], torch.get_num_threads(),
             results["machine"]["load_average"])
    for name in SECTIONS:
        if name not in opts.sections:
            continue
        log.info("bench section %s ...", name)
        try:
            if name == "peak":
                results["peak"] = {p: bench.table(p) for p in bench.precisions()}
            else:
                results[name] = SECTION_FUNCS[name](bench)
        except Exception as exc:  # noqa: BLE001 - a failing section must not lose the others
            log.warning("bench section %s failed: %s", name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
    results.setdefault("peak", bench.tables)
    results["interleaved_peak_samples"] = {p: {"gflops": s.samples, "gflop_per_cpu_s": s.cpu_samples, "side": s.n}
                                           for p, s in bench.samplers.items()}
    results["load_average_end"] = load_average()
    results["wall_s"] = time.perf_counter() - start
    if opts.out is not None:
        write_report(results, Path(opts.out))
    return results
