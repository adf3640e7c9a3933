"""``maskgit bench --sections threads``: one thread vs the configured count, and OMP_WAIT_POLICY, in child processes.

On a machine whose cores are busy with other jobs, every OpenMP parallel region
waits for a descheduled thread, and small-op workloads such as the VQGAN slow
down many times over; this section measures it on the machine at hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable

import torch

from ..config import TransformerConfig, VQGANConfig
from ..transformer import MaskGITTransformer
from ..vqgan import VQGAN
from .speed import _Bench, load_average, timed


def thread_workloads(preset: str, forward_batch: int, vqgan_batch: int,
                     device: torch.device) -> dict[str, Callable[[], Any]]:
    """Small fixed workloads for the threads section: a matmul, transformer forwards, a VQGAN step."""
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
    code = ("import json, sys; from maskgit_lib.evaluation.threads import policy_probe; "
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
