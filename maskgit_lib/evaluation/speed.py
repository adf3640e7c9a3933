"""Measuring speed honestly: matmul peaks, FLOP counts, interleaved timing, machine facts (``maskgit bench``).

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

import logging
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..runtime import cpu_info, native_bf16, physical_cores

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


# ----------------------------------------------------------------------------- run and report


