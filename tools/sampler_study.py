"""The sampler study of results/sampler_study/README.md: run its stages, resumably, and write the report.

Usage (each stage skips runs already done; two processes can share a stage with --shard):

    python tools/sampler_study.py grid  [--n 128] [--shard 0/2]   # tau x score x noise at T=8, seeds 0-2
    python tools/sampler_study.py steps [--n 128] [--shard 0/2]   # T in 1,4,8,12 for the rules in STEP_RULES
    python tools/sampler_study.py bestofk [--n 128] [--k 4]       # best-of-K (seam and likelihood picks), seeds 0..K-1
    python tools/sampler_study.py report                          # results/sampler_study/{study.json,table.md}

Runs: the shipped checkpoints, cosine schedule, harmonic prefill, Poisson blend, batches of 64 with the
benchmark's per-batch seeds, 1 CPU thread per process. grid/steps/bestofk use the selection track
(validation images + the test masks, :func:`maskgit_lib.evaluation.sampler_study.selection_track`);
the test-set confirmation is ``maskgit benchmark --headline``. Each run is a JSON file under ``.cache/sampler_study/`` (atomic writes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from maskgit_lib import paths
from maskgit_lib.evaluation import sampler_study as ss
from maskgit_lib.evaluation.tracks import features
from maskgit_lib.inpaint import Inpainter
from maskgit_lib.outputs import atomic_write

OUT = paths.project_root() / "results" / "sampler_study"
RUNS = paths.cache_dir() / "sampler_study"
SEEDS = (0, 1, 2)
# Seeds 1 and 2 of the grid (two CPU-hours for all of them did not fit one session): every argmax rule, the
# tau = 0.5 rules with noise 4.5, the paper's rule with and without noise, and sampling in a random order (p, 4.5).
GRID_REPEAT = [ss.SamplerRule(0.0, s, c) for s in ("logp", "p") for c in (4.5, 1.0)] + [
    ss.SamplerRule(0.5, "logp", 4.5), ss.SamplerRule(0.5, "p", 4.5), ss.PAPER_RULE, ss.SamplerRule(1.0, "logp", 1.0),
    ss.SamplerRule(1.0, "logp", 0.0), ss.SamplerRule(1.0, "p", 4.5)]
# After the grid (README): T in 1, 4, 12 for its best rule (argmax, p, 4.5: the lab's) and the paper's, two seeds;
# best-of-K for the best rule. The confirmation on the test set is the headline benchmark.
STEP_RULES = [ss.LAB_RULE, ss.PAPER_RULE]
STEP_SEEDS = SEEDS[:2]
BESTOFK_RULE = ss.LAB_RULE


def _key(stage: str, rule: ss.SamplerRule, seed: int, n: int, extra: str = "") -> Path:
    name = f"T{rule.steps}_tau{rule.tau:g}_{rule.score}_c{rule.noise:g}_s{seed}_n{n}{extra}"
    return RUNS / stage / f"{name}.json"


def _save(path: Path, record: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    print(json.dumps(record), flush=True)


def _jobs(rules, seeds, repeat=None) -> list[tuple[ss.SamplerRule, int]]:
    """Seed by seed (every rule's first seed, then every rule's second, ...): an interrupted stage is still a grid.

    Seeds after the first only for the rules in ``repeat`` (None = all) that draw random numbers.
    """
    return [(r, s) for s in seeds for r in rules
            if s == seeds[0] or (not r.deterministic and (repeat is None or r in repeat))]


def _shard(jobs: list, shard: str) -> list:
    i, n = (int(x) for x in shard.split("/"))
    return jobs[i::n]


def run_rules(stage: str, rules, seeds, n: int, shard: str, repeat=None) -> None:
    inpainter = Inpainter.from_checkpoints(device="cpu")
    data = ss.selection_track(None, n)
    gt = features(data.gt, torch.device("cpu"))
    for rule, seed in _shard(_jobs(rules, seeds, repeat), shard):
        path = _key(stage, rule, seed, n)
        if path.is_file():
            continue
        outputs, seconds = ss.decode_rule(inpainter, data, rule, seed)
        _save(path, {"stage": stage, "rule": dataclasses.asdict(rule), "label": rule.label, "seed": seed, "n": n,
                     "seconds_per_image": seconds / n, **ss.score_outputs(outputs, data, gt)})


def run_bestofk(n: int, k: int) -> None:
    inpainter = Inpainter.from_checkpoints(device="cpu")
    data = ss.selection_track(None, n)
    gt = features(data.gt, torch.device("cpu"))
    for seed in (0,):  # seeds 0..K-1
        path = _key("bestofk", BESTOFK_RULE, seed, n, f"_k{k}")
        if path.is_file():
            continue
        picked, decode_s, score_s = ss.best_of_k(inpainter, data, BESTOFK_RULE, k, seed)
        for pick, outputs in picked.items():
            _save(path.with_name(path.stem + f"_{pick}.json"),
                  {"stage": "bestofk", "rule": dataclasses.asdict(BESTOFK_RULE), "label": BESTOFK_RULE.label,
                   "seed": seed, "n": n, "k": k, "pick": pick, "seconds_per_image": (decode_s + score_s) / n,
                   "score_seconds_per_image": score_s / n, **ss.score_outputs(outputs, data, gt)})
        atomic_write(path, lambda tmp: tmp.write_text("{}"))  # marks the pair done


def _mean_std(values: list[float]) -> str:
    v = np.array(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def report() -> None:
    records = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*/*.json")) if p.stat().st_size > 2]
    atomic_write(OUT / "study.json", lambda tmp: tmp.write_text(json.dumps(records, indent=1)))
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["stage"], r["n"], r["label"], r.get("pick", ""), r.get("k", 1)), []).append(r)
    lines = ["| stage | N | rule | pick | seeds | FID | KID x1000 | PSNR hole | s/img |", "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for (stage, n, label, pick, k), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                  np.mean([r["fid"] for r in kv[1]]))):
        pick_s = f"best of {k} by {pick}" if pick else ""
        lines.append(f"| {stage} | {n} | {label} | {pick_s} | {len(rs)} | {_mean_std([r['fid'] for r in rs])} | "
                     f"{_mean_std([r['kid'] for r in rs])} | {_mean_std([r['psnr_hole_db'] for r in rs])} | "
                     f"{np.mean([r['seconds_per_image'] for r in rs]):.2f} |")
    atomic_write(OUT / "table.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("grid", "steps", "bestofk", "report"))
    p.add_argument("--n", type=int, default=None, help="selection-track images (default 128)")
    p.add_argument("--k", type=int, default=4, help="samples per image for bestofk (default 4)")
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i (default 0/1)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.stage == "grid":
        run_rules("grid", ss.rule_grid(), SEEDS, a.n or 128, a.shard, repeat=GRID_REPEAT)
    elif a.stage == "steps":
        rules = [dataclasses.replace(r, steps=t) for r in STEP_RULES for t in (1, 4, 12)]
        run_rules("steps", list(dict.fromkeys(r.canonical() for r in rules)), STEP_SEEDS, a.n or 128, a.shard)
    elif a.stage == "bestofk":
        run_bestofk(a.n or 128, a.k)
    else:
        report()


if __name__ == "__main__":
    sys.exit(main())
