"""The ``results/bench.md`` report of ``maskgit bench``: a summary table against the floors, then each section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..outputs import atomic_write, write_json
from .speed import FLOORS


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
    """The ``results/bench.md`` text of a :func:`~maskgit_lib.evaluation.bench.run_bench` result."""
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
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = md_path.with_suffix(".json")
    atomic_write(md_path, lambda tmp: tmp.write_text(render_markdown(results)))
    write_json(json_path, results, indent=1, sort_keys=False)
    return md_path, json_path
