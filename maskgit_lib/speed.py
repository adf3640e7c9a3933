"""``maskgit bench``: matmul peak, training/decoding throughput and MFU, in one run.

Every figure that matters is a *ratio measured within one run*: the machines
here are shared, so absolute numbers move with the load. Each workload is timed
in rounds interleaved with a short matmul of the precision it uses::

    peak_0, work_1, peak_1, work_2, peak_2, ...
    MFU = model FLOP/s of the work / matmul FLOP/s of the same precision

and both the mean and the max of the peak samples are reported (the load
average is recorded at the start and after every section).

Model FLOPs (one multiply-add = 2 FLOPs):

- transformer: :func:`maskgit_lib.transformer.flops_per_image` (training = 3 x
  forward), cross-checked against :class:`torch.utils.flop_counter.FlopCounterMode`;
- VQGAN: counted by ``FlopCounterMode`` (convolutions and matmuls as executed);
- decoding, per image: T transformer passes + one VQGAN encode + one decode;
  its *FLOP-bound limit* is ``peak / FLOPs per image`` images/s.

Sections: ``peak`` (fp32/bf16 square matmuls), ``train`` (MVTM step of the
transformer, fp32 and bf16 autocast), ``vqgan`` (VQGAN training step),
``decode`` (:class:`~maskgit_lib.inpaint.Inpainter`, T=8: a batch and a single
image), ``attention`` (from-scratch vs SDPA), ``fid`` (Inception speed) and
``threads`` (1 thread vs the configured count: on a machine whose cores are
busy with other jobs, every OpenMP parallel region waits for a descheduled
thread, and small-op workloads such as the VQGAN slow down many times over).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import paths
from .argtypes import positive_int
from .runtime import cpu_info, physical_cores

log = logging.getLogger(__name__)

SECTIONS = ("peak", "train", "vqgan", "decode", "attention", "fid", "threads")
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")
FLOORS = {"train_mfu": 0.40, "decode_fraction": 0.30, "latency_s": 1.0}  # the targets


@dataclass(frozen=True)
class BenchOptions:
    """What ``maskgit bench`` measures and how long it may take.

    Attributes:
        quick: fewer rounds and smaller batches (about 1-2 minutes on 2 idle cores).
        threads: ``torch.set_num_threads`` (None: torch's default).
        device: ``cpu``, ``cuda`` or ``auto``.
        preset: model size (``cpu``: the shipped checkpoints; ``tiny``: random weights, for tests).
        sections: subset of :data:`SECTIONS`.
        peak_sizes: square matmul sides for the peak table.
        peak_budget_s: time allowed per (precision, op) in the peak table; slow
            precisions get smaller sides (reported).
        peak_sample_s: about how long one interleaved peak sample's matmul takes.
        train_batch, vqgan_batch, decode_batch: batch sizes.
        bf16_batch: transformer batch under bf16 autocast when the hardware has no
            native bf16 (it is then ~10x slower); None = ``train_batch``.
        steps: T, decoding steps.
        rounds: timed rounds per workload (interleaved with peak samples).
        latency_runs: repeats of the single-image inpainting.
        attention_batch, forward_batch: batch of the attention op / model forward comparison.
        fid_images: images pushed through Inception to time it.
        out: markdown file (a ``.json`` with the same stem is written too); None = do not write.
    """

    quick: bool = False
    threads: int | None = None
    device: str = "cpu"
    preset: str = "cpu"
    sections: tuple[str, ...] = SECTIONS
    peak_sizes: tuple[int, ...] = (1024, 1536, 2048)
    peak_budget_s: float = 8.0
    peak_sample_s: float = 0.3
    train_batch: int = 32
    vqgan_batch: int = 32
    decode_batch: int = 64
    bf16_batch: int | None = 4
    steps: int = 8
    rounds: int = 3
    latency_runs: int = 5
    attention_batch: int = 64
    forward_batch: int = 32
    fid_images: int = 50
    out: Path | None = None

    @classmethod
    def quick_defaults(cls, **overrides: Any) -> "BenchOptions":
        """The ``--quick`` settings (fewer repeats, smaller batches), then ``overrides``."""
        values = dict(quick=True, peak_sizes=(1024,), peak_budget_s=2.0, train_batch=8, vqgan_batch=8,
                      decode_batch=16, bf16_batch=1, rounds=1, latency_runs=2, attention_batch=16,
                      forward_batch=8, fid_images=10)
        values.update(overrides)
        return cls(**values)


# ----------------------------------------------------------------------------- machine


def native_bf16(device: torch.device) -> bool:
    """Does the hardware run bf16 matmuls natively (CUDA bf16, or oneDNN's AVX512-BF16/AMX)?"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model and flags, thread counts, torch build, accelerator, load average."""
    cpu = cpu_info()
    flags = set(cpu.get("flags", "").split())
    info = {
        "cpu_model": cpu.get("model name") or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
        "amx": sorted(f for f in flags if f.startswith("amx")),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(device),
        "device": str(device),
        "python": platform.python_version(),
        "load_average": load_average(),
        "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ----------------------------------------------------------------------------- FLOPs


def _cpu_flash_fwd(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _cpu_flash_bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs that ``fn()`` executes (matmuls, convolutions, attention; 2 per multiply-add).

    ``FlopCounterMode`` with the CPU flash-attention kernels added (torch does
    not count ``_scaled_dot_product_flash_attention_for_cpu`` by itself).
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_fwd
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_flash_bwd
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one call of ``fn`` (device work included)."""
    return timed_both(fn, device)[0]


def timed_both(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of one call of ``fn``; cpu = CPU time of all this process's threads.

    CPU time does not grow while the process waits for a core, so ratios of
    CPU-time rates stay meaningful on a machine shared with other jobs.
    """
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_gflops(n: int, dtype: torch.dtype, device: torch.device, repeats: int = 3, op: str = "mm",
                  budget_s: float = math.inf) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` by ``n x n`` product (``op``: ``mm`` or ``linear``).

    The first call is a warm-up; repeats stop early once ``budget_s`` is spent.
    """
    gen = torch.Generator(device).manual_seed(n)
    a = torch.randn(n, n, generator=gen, device=device).to(dtype)
    b = torch.randn(n, n, generator=gen, device=device).to(dtype)
    call = (lambda: torch.mm(a, b)) if op == "mm" else (lambda: torch.nn.functional.linear(a, b))
    start = time.perf_counter()
    best = timed(call, device)
    for _ in range(repeats):
        if time.perf_counter() - start + best > budget_s:
            break
        best = min(best, timed(call, device))
    return 2.0 * n ** 3 / best / 1e9


def peak_table(dtype: torch.dtype, device: torch.device, sizes: tuple[int, ...], budget_s: float,
               repeats: int = 3) -> dict[str, Any]:
    """Matmul peak of one precision: best GFLOP/s over ``sizes`` and ``mm``/``linear``.

    A probe (side 512 or the smallest asked, best of 3) predicts each call's time; sides whose single
    call would exceed half of ``budget_s`` are skipped, and when even the
    smallest asked side is too slow, the largest power of two that fits
    (>= 256) is used and flagged ``reduced``.
    """
    probe = matmul_gflops(min(512, *sizes), dtype, device, repeats=2)
    fits = [n for n in sizes if 2.0 * n ** 3 / (probe * 1e9) <= budget_s / 2]
    reduced = not fits
    if reduced:
        n = 256
        while 2.0 * (2 * n) ** 3 / (probe * 1e9) <= budget_s / 2 and 2 * n < min(sizes):
            n *= 2
        fits = [n]
    rows = {}
    for op in ("mm", "linear"):
        for n in fits:
            rows[f"{op}_{n}"] = round(matmul_gflops(n, dtype, device, repeats, op, budget_s / len(fits)), 2)
    best_key = max(rows, key=rows.get)
    return {"dtype": str(dtype).replace("torch.", ""), "gflops": rows[best_key], "best": best_key,
            "samples": rows, "sizes": fits, "reduced": reduced, "probe_gflops": round(probe, 2)}


class PeakSampler:
    """Short matmul samples of one precision, interleaved with a workload.

    The side is the one that gave the peak in ``table`` if a call takes at most
    ``target_s`` at that rate, else the largest of 2048/1024/512/256 that does;
    the op is the table's faster one (``mm`` or ``linear``). Each call appends
    the best wall GFLOP/s of ``repeats`` calls to ``samples`` and the best GFLOP
    per CPU-second to ``cpu_samples``.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device, table: dict[str, Any], target_s: float = 0.3,
                 repeats: int = 2) -> None:
        self.dtype, self.device, self.repeats = dtype, device, repeats
        self.op, best_side = table["best"].split("_")
        rate = max(table["gflops"], 1e-3) * 1e9
        sides = (int(best_side), 2048, 1024, 512)
        self.n = next((n for n in sides if 2.0 * n ** 3 / rate <= target_s), 256)
        gen = torch.Generator(device).manual_seed(self.n)
        self.a = torch.randn(self.n, self.n, generator=gen, device=device).to(dtype)
        self.b = torch.randn(self.n, self.n, generator=gen, device=device).to(dtype)
        self.samples: list[float] = []
        self.cpu_samples: list[float] = []

    def __call__(self) -> float:
        call = (lambda: torch.mm(self.a, self.b)) if self.op == "mm" else \
            (lambda: torch.nn.functional.linear(self.a, self.b))
        call()
        times = [timed_both(call, self.device) for _ in range(self.repeats)]
        flops = 2.0 * self.n ** 3 / 1e9
        self.samples.append(round(flops / min(w for w, _ in times), 2))
        self.cpu_samples.append(round(flops / max(min(c for _, c in times), 1e-9), 2))
        return self.samples[-1]


def interleaved(work: Callable[[], Any], images: int, flops_per_image: float, peak: PeakSampler,
                rounds: int, device: torch.device) -> dict[str, Any]:
    """Time ``work`` (``images`` images per call) in rounds between peak samples.

    Returns:
        ``images_per_s`` (median), ``seconds`` (wall) and ``cpu_seconds`` per
        round, ``achieved_gflops``, ``peak_gflops_mean``/``max``/``samples``,
        ``mfu`` (median over rounds of achieved / mean of the two adjacent peak
        samples), ``mfu_vs_mean_peak``, ``mfu_vs_max_peak``, and ``cpu_mfu``:
        the same ratio with CPU time in place of wall time (GFLOP per
        CPU-second of the work / of the matmul), which a busy machine disturbs far less.
    """
    first = len(peak.samples)
    peak()
    seconds, cpu = [], []
    for _ in range(rounds):
        wall_s, cpu_s = timed_both(work, device)
        seconds.append(wall_s)
        cpu.append(cpu_s)
        peak()
    samples, cpu_samples = peak.samples[first:], peak.cpu_samples[first:]
    work_gflop = images * flops_per_image / 1e9
    local = [work_gflop / s / ((samples[i] + samples[i + 1]) / 2) for i, s in enumerate(seconds)]
    cpu_local = [work_gflop / max(c, 1e-9) / ((cpu_samples[i] + cpu_samples[i + 1]) / 2) for i, c in enumerate(cpu)]
    rate = statistics.median(images / s for s in seconds)
    achieved = rate * flops_per_image / 1e9
    return {"images_per_s": rate, "seconds": [round(s, 3) for s in seconds], "cpu_seconds": [round(c, 3) for c in cpu],
            "achieved_gflops": achieved, "peak_gflops_mean": statistics.mean(samples),
            "peak_gflops_max": max(samples), "peak_samples": samples, "peak_cpu_samples": cpu_samples,
            "peak_side": peak.n, "mfu": statistics.median(local), "mfu_vs_mean_peak": achieved / statistics.mean(samples),
            "mfu_vs_max_peak": achieved / max(samples),
            "cpu_mfu": statistics.median(cpu_local) if device.type == "cpu" else None}


# ----------------------------------------------------------------------------- sections


class _Bench:
    """State shared by the sections of one run: options, device, peak tables, results."""

    def __init__(self, opts: BenchOptions, device: torch.device) -> None:
        self.opts, self.device = opts, device
        self.tables: dict[str, dict[str, Any]] = {}
        self.samplers: dict[str, PeakSampler] = {}

    def table(self, precision: str) -> dict[str, Any]:
        if precision not in self.tables:
            dtype = torch.float32 if precision == "fp32" else torch.bfloat16
            self.tables[precision] = peak_table(dtype, self.device, self.opts.peak_sizes, self.opts.peak_budget_s)
        return self.tables[precision]

    def sampler(self, precision: str) -> PeakSampler:
        if precision not in self.samplers:
            dtype = torch.float32 if precision == "fp32" else torch.bfloat16
            self.samplers[precision] = PeakSampler(dtype, self.device, self.table(precision),
                                                   target_s=self.opts.peak_sample_s)
        return self.samplers[precision]

    def precisions(self) -> list[str]:
        return ["fp32", "bf16"]


def _train_loop(model, train_step, tcfg, device: torch.device, num_items: int, generator_seed: int = 0):
    """One optimizer step as :class:`~maskgit_lib.training.Trainer` takes it (seeding, autocast, clip, AdamW)."""
    from .training import autocast, derive_seed, make_generator, make_optimizer

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
    from .config import TrainConfig, TransformerConfig
    from .train_transformer import TRANSFORMER_TRAIN_PRESETS, make_train_step
    from .transformer import MaskGITTransformer, count_parameters, flops_per_image

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
    from .config import TrainConfig, VQGANConfig
    from .train_vqgan import VQGAN_TRAIN_PRESETS, VQGANObjective
    from .training import DistContext
    from .vqgan import VQGAN

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


def _inpainter(opts: BenchOptions, device: torch.device):
    """The shipped checkpoints for the ``cpu`` preset (if present), else random models of the preset."""
    from .config import TransformerConfig, VQGANConfig
    from .inpaint import Inpainter
    from .transformer import MaskGITTransformer
    from .vqgan import VQGAN

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
    from .errors import DataError

    try:
        from .data import test_set

        folder = test_set(size=size)
        items = [folder[i % len(folder)] for i in range(count)]
        return (torch.stack([it[1] for it in items]), torch.stack([it[2] for it in items]),
                str(folder.images_dir.parent), len(folder))
    except (DataError, OSError) as exc:
        log.info("no test set (%s): synthetic images and brush-stroke masks", exc)
        from .data_prep import brush_stroke_mask

        gen = torch.Generator().manual_seed(3)
        images = torch.rand(count, 3, size, size, generator=gen) * 2 - 1
        masks = torch.stack([brush_stroke_mask(size, gen) for _ in range(count)])
        return images, masks, "synthetic", 500


def bench_decode(bench: _Bench) -> dict[str, Any]:
    """Inpainting with iterative decoding: a batch (throughput) and one image (latency)."""
    from .inpaint import InpaintSettings
    from .transformer import flops_per_image

    opts, device = bench.opts, bench.device
    inpainter, models = _inpainter(opts, device)
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

    from .attention import scaled_dot_product_attention
    from .config import TransformerConfig
    from .transformer import MaskGITTransformer, flops_per_image, set_attention_impl

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

    from . import fid
    from .data import load_image, test_set

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


def thread_workloads(preset: str, forward_batch: int, vqgan_batch: int,
                     device: torch.device) -> dict[str, Callable[[], Any]]:
    """Small fixed workloads for the threads section: a matmul, transformer forwards, a VQGAN step."""
    from .config import TransformerConfig, VQGANConfig
    from .transformer import MaskGITTransformer
    from .vqgan import VQGAN

    torch.manual_seed(0)
    model = MaskGITTransformer(TransformerConfig.preset(preset)).to(device).eval()
    vqgan = VQGAN(VQGANConfig.preset(preset)).to(device).train()
    tokens = torch.randint(0, model.cfg.codebook_size, (forward_batch, model.cfg.num_tokens), device=device)
    images = torch.rand(vqgan_batch, 3, vqgan.cfg.image_size, vqgan.cfg.image_size, device=device) * 2 - 1
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)

    def forward(batch: int) -> Callable[[], Any]:
        def run() -> None:
            with torch.no_grad():
                model(tokens[:batch])
        return run

    def vq_step() -> None:
        recon, vq_loss, _ = vqgan(images)
        (recon.float().abs().mean() + vq_loss).backward()

    return {"matmul_1024": lambda: torch.mm(a, b), "transformer_forward": forward(forward_batch),
            "transformer_forward_b1": forward(1), "vqgan_train_step": vq_step}


def time_workloads(work: dict[str, Callable[[], Any]], device: torch.device, rounds: int) -> dict[str, float]:
    """Best wall seconds of each workload over ``rounds`` (after one warm-up call each)."""
    best = {}
    for name, fn in work.items():
        fn()
        best[name] = min(timed(fn, device) for _ in range(max(1, rounds)))
    return best


def policy_probe(preset: str, forward_batch: int, vqgan_batch: int, threads: int, rounds: int) -> dict[str, float]:
    """:func:`time_workloads` in this process (run by :func:`bench_threads` in a child with another OpenMP env)."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    return time_workloads(thread_workloads(preset, forward_batch, vqgan_batch, device), device, rounds)


def _probe_in_child(env: dict[str, str], args: list[Any], timeout_s: float = 900.0) -> dict[str, float]:
    import subprocess

    code = ("import json, sys; from maskgit_lib.speed import policy_probe; "
            "print(json.dumps(policy_probe(*json.loads(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env, capture_output=True, text=True,
                         timeout=timeout_s, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_threads(bench: _Bench) -> dict[str, Any]:
    """Wall times at 1 thread vs the configured count, and (CPU) libgomp's default vs ``OMP_WAIT_POLICY=PASSIVE``.

    The wait policy is read when torch loads libgomp, so it is compared in two
    child processes (default: the current environment without ``OMP_WAIT_POLICY``).
    Neither changes results: the work is split across threads the same way.
    """
    opts, device = bench.opts, bench.device
    configured = torch.get_num_threads()
    vq_batch = max(2, opts.vqgan_batch // 4)
    rounds = max(1, opts.rounds - 1)
    work = thread_workloads(opts.preset, opts.forward_batch, vq_batch, device)
    result: dict[str, Any] = {"configured_threads": configured, "forward_batch": opts.forward_batch,
                              "vqgan_batch": vq_batch}
    try:
        for threads in sorted({1, configured}):
            torch.set_num_threads(threads)
            for name, seconds in time_workloads(work, device, rounds).items():
                result[f"{name}_s_{threads}_threads"] = seconds
    finally:
        torch.set_num_threads(configured)
    if configured != 1:
        for name in work:
            result[f"{name}_speedup_1_thread"] = result[f"{name}_s_{configured}_threads"] / result[f"{name}_s_1_threads"]
    if device.type == "cpu" and configured != 1:
        args = [opts.preset, opts.forward_batch, vq_batch, configured, rounds]
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        default = _probe_in_child(env, args)
        passive = _probe_in_child({**env, "OMP_WAIT_POLICY": "PASSIVE"}, args)
        result["wait_policy"] = {"default_s": default, "passive_s": passive,
                                 "speedup_passive": {k: default[k] / passive[k] for k in default}}
    result["load_average"] = load_average()
    return result


SECTION_FUNCS: dict[str, Callable[[_Bench], dict[str, Any]]] = {
    "train": bench_train, "vqgan": bench_vqgan, "decode": bench_decode, "attention": bench_attention,
    "fid": bench_fid, "threads": bench_threads,
}


# ----------------------------------------------------------------------------- run and report


def run_benchmark(opts: BenchOptions, command: str = "maskgit bench") -> dict[str, Any]:
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
        from .errors import ConfigError

        raise ConfigError(f"unknown bench section(s) {sorted(unknown)}; choose from {list(SECTIONS)}")
    previous_threads = torch.get_num_threads()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    try:
        return _run_sections(opts, command)
    finally:
        torch.set_num_threads(previous_threads)


def _run_sections(opts: BenchOptions, command: str) -> dict[str, Any]:
    """The body of :func:`run_benchmark`, with the thread count already set."""
    from .training import resolve_device

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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _status(ok: bool) -> str:
    return "meets" if ok else "**below**"


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, status) rows of the summary table."""
    rows = []
    train = r.get("train")
    if train:
        for p in ("fp32", "bf16"):
            if p in train:
                t = train[p]
                note = f", batch {t['batch']}" + (" (reduced: no native bf16)" if t.get("reduced_batch") else "")
                rows.append((f"transformer training, {p}{note}",
                             f"{t['images_per_s']:.2f} img/s, {t['achieved_gflops']:.1f} GFLOP/s; MFU "
                             f"{_pct(t['mfu'])} (vs max peak {_pct(t['mfu_vs_max_peak'])}; "
                             f"CPU-time {_pct(t['cpu_mfu'])})",
                             f">= 40% of the {p} peak", _status(t["mfu"] >= FLOORS["train_mfu"])))
    vq = r.get("vqgan")
    if vq:
        for p in ("fp32", "bf16"):
            if isinstance(vq.get(p), dict):
                t = vq[p]
                rows.append((f"VQGAN training, {p}, batch {t['batch']}",
                             f"{t['images_per_s']:.2f} img/s, {t['achieved_gflops']:.1f} GFLOP/s; MFU "
                             f"{_pct(t['mfu'])} (vs max peak {_pct(t['mfu_vs_max_peak'])}; "
                             f"CPU-time {_pct(t['cpu_mfu'])})", "-", "-"))
    dec = r.get("decode")
    if dec:
        b, s = dec["batch"], dec["single"]
        rows.append((f"decoding T={dec['steps']}, batch {b['batch']}",
                     f"{b['images_per_s']:.2f} img/s = {_pct(b['mfu'])} of the FLOP-bound limit "
                     f"({dec['limit_images_per_s']:.2f} img/s; vs max peak {_pct(b['mfu_vs_max_peak'])}; "
                     f"CPU-time {_pct(b['cpu_mfu'])})",
                     ">= 30% of the limit", _status(b["mfu"] >= FLOORS["decode_fraction"])))
        rows.append((f"{dec['test_images']} test images, T={dec['steps']}",
                     f"~{dec['test_set_estimate_s']:.0f} s (FLOP bound {dec['test_set_bound_s']:.0f} s)", "-", "-"))
        rows.append((f"single image T={dec['steps']} (latency)",
                     f"{s['latency_s']:.3f} s (min {s['latency_min_s']:.3f} s; {_pct(s['mfu'])} of the limit, "
                     f"CPU-time {_pct(s['cpu_mfu'])})",
                     "< 1 s", _status(s["latency_s"] < FLOORS["latency_s"])))
    att = r.get("attention")
    if att:
        rows.append(("attention op, scratch vs SDPA",
                     f"{att['op_scratch_ms']:.1f} ms vs {att['op_sdpa_ms']:.1f} ms (x{att['op_speedup']:.2f})",
                     "-", "-"))
        rows.append((f"model forward (batch {att['forward_batch']}), scratch vs SDPA",
                     f"{att['forward_scratch_ms']:.0f} ms vs {att['forward_sdpa_ms']:.0f} ms "
                     f"(x{att['forward_speedup']:.2f})", "-", "-"))
    th = r.get("threads")
    if th and th["configured_threads"] != 1:
        n = th["configured_threads"]
        names = ("matmul_1024", "transformer_forward", "transformer_forward_b1", "vqgan_train_step")
        rows.append((f"1 thread vs {n} threads (wall time ratio {n}/1)",
                     ", ".join(f"{k}: x{th[f'{k}_speedup_1_thread']:.2f}" for k in names if f"{k}_speedup_1_thread" in th),
                     "-", "> 1: one thread is faster now"))
        if th.get("wait_policy"):
            rows.append((f"OMP_WAIT_POLICY=PASSIVE vs default, {n} threads (wall time ratio)",
                         ", ".join(f"{k}: x{v:.2f}" for k, v in th["wait_policy"]["speedup_passive"].items()),
                         "-", "> 1: PASSIVE is faster now"))
    f = r.get("fid")
    if f:
        rows.append((f"FID of {f['test_images']} images",
                     f"Inception {f['images_per_s']:.1f} img/s ({f['achieved_gflops']:.0f} GFLOP/s); "
                     f"~{f['estimate_s']:.0f} s with gt {'cached' if f['gt_cached'] else 'NOT cached'} "
                     f"(~{f['estimate_uncached_s']:.0f} s uncached)", "-", "-"))
    return rows


def render_markdown(r: dict[str, Any]) -> str:
    """The ``results/bench.md`` text of a :func:`run_benchmark` result."""
    m = r["machine"]
    yes = lambda v: ("yes: " + ", ".join(v)) if v else "no"  # noqa: E731
    lines = [
        "# Speed benchmark (`maskgit bench`)", "",
        f"Command: `{r['command']}` ({r['date']}, {r['wall_s']:.0f} s)", "",
        "| machine | |", "|---|---|",
        f"| CPU | {m['cpu_model']} ({m['physical_cores']} physical cores, {m['logical_cpus']} logical) |",
        f"| AVX2 / AVX-512 / AMX | {'yes' if m['avx2'] else 'no'} / {yes(m['avx512'])} / {yes(m['amx'])} |",
        f"| native bf16 matmul | {'yes' if m['native_bf16'] else 'no'} |",
        f"| torch | {m['torch_version']} ({m['torch_cpu_capability']}), {m['torch_threads']} threads, "
        f"device {m['device']}{', ' + m['gpu'] if m.get('gpu') else ''} |",
        f"| load average (1/5/15 min) | start {m['load_average']}, end {r['load_average_end']} |",
        f"| OpenMP / MKL environment | {m.get('env') or 'none set'} |", "",
        "Every MFU / fraction is a ratio to matmul peaks of the same precision sampled in the same run,",
        "between the timed rounds (`mfu`: median over rounds of achieved / mean of the two adjacent samples;",
        "`vs max peak`: against the highest sample; `CPU-time`: the same ratio in GFLOP per CPU-second of",
        "this process, which hardly moves when other jobs compete for the cores). Absolute numbers move",
        "with the machine's load; compare the ratios.", "",
        "## Summary", "", "| measure | value | target | status |", "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(r)]
    if r.get("peak"):
        lines += ["", "## (a) Matmul peak", "", "| precision | peak GFLOP/s | best of | samples (GFLOP/s) |",
                  "|---|---|---|---|"]
        for p, t in r["peak"].items():
            note = " (sides reduced: too slow)" if t["reduced"] else ""
            samples = ", ".join(f"{k} {v}" for k, v in t["samples"].items())
            lines.append(f"| {p} | {t['gflops']:.1f} | {t['best']}{note} | {samples} |")
        for p, s in r.get("interleaved_peak_samples", {}).items():
            lines.append(f"\nInterleaved {p} samples ({s['side']}-side, in order): GFLOP/s {s['gflops']}; "
                         f"GFLOP per CPU-second {s['gflop_per_cpu_s']}")
    for name, title in (("train", "(b) Transformer training"), ("vqgan", "(c) VQGAN training"),
                        ("decode", "(d) Decoding"), ("attention", "(e) Attention"), ("fid", "(f) FID"),
                        ("threads", "Threads")):
        if r.get(name):
            lines += ["", f"## {title}", "", "```json", json.dumps(_short(r[name]), indent=1), "```"]
    if r.get("errors"):
        lines += ["", "## Sections that failed", ""] + [f"- {k}: {v}" for k, v in r["errors"].items()]
    return "\n".join(lines) + "\n"


def _short(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items() if k != "config"}
    if isinstance(value, list):
        return [_short(v) for v in value]
    return value


def write_report(results: dict[str, Any], md_path: Path) -> tuple[Path, Path]:
    """Atomically write the markdown report and ``<stem>.json`` next to it."""
    from .checkpoint import atomic_write

    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = md_path.with_suffix(".json")
    atomic_write(md_path, lambda tmp: tmp.write_text(render_markdown(results)))
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(results, indent=1, default=str) + "\n"))
    return md_path, json_path


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``maskgit bench``."""
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller batches (~1-2 min)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help="torch.set_num_threads(N)")
    parser.add_argument("--out", type=Path, default=paths.results_dir() / "bench.md",
                        help="markdown report; a .json twin is written next to it (default: results/bench.md)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--preset", choices=["cpu", "tiny"], default="cpu",
                        help="model sizes (cpu: the shipped checkpoints; tiny: random weights, seconds)")
    parser.add_argument("--train-batch", type=positive_int, default=None, help="transformer training batch")
    parser.add_argument("--decode-batch", type=positive_int, default=None, help="decoding batch")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """BenchOptions from the parsed flags."""
    overrides: dict[str, Any] = {"threads": args.threads, "device": args.device, "out": args.out,
                                 "preset": args.preset,
                                 "sections": tuple(s.strip() for s in args.sections.split(",") if s.strip())}
    if args.train_batch:
        overrides["train_batch"] = args.train_batch
    if args.decode_batch:
        overrides["decode_batch"] = args.decode_batch
    return BenchOptions.quick_defaults(**overrides) if args.quick else BenchOptions(**overrides)


def run_bench(args: argparse.Namespace) -> int:
    """Run ``maskgit bench``: print the summary table, write the report."""
    command = "maskgit bench" + (" " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 and
                                 Path(sys.argv[0]).name == "maskgit" else
                                 (" --quick" if args.quick else ""))
    results = run_benchmark(options_from_args(args), command)
    text = render_markdown(results)
    print(text.split("## (a)")[0].rstrip())
    if args.out is not None:
        print(f"\nreport: {args.out} and {Path(args.out).with_suffix('.json')}")
    return 1 if results["errors"] and len(results["errors"]) == len(options_from_args(args).sections) else 0
