"""``maskgit prepare-data`` and ``maskgit prepare-fid``: build the offline dataset and FID weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import paths
from ..data_prep import prepare_twemoji
from ..sources import parse_sources
from .argtypes import positive_int, seed_int


def add_prepare_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``maskgit prepare-data``."""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"dataset folder (default: {paths.default_dataset_dir()})")
    parser.add_argument("--seed", type=seed_int, default=0, help="split and test-mask seed (default 0)")
    parser.add_argument("--force", action="store_true", help="rebuild even if an identical build exists")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="use only the first N source PNGs (smoke tests; val/test shrink in proportion)")
    parser.add_argument("--sources", default="twemoji",
                        help="comma-separated emoji sets: twemoji (default, offline), openmoji, fluent; the "
                             "extra sets are fetched once with `npm pack` and cached (data/README.md)")


def run_prepare_data(args: argparse.Namespace) -> int:
    """Run ``maskgit prepare-data``; returns the exit status."""
    prepare_twemoji(args.out, args.seed, force=args.force, limit=args.limit, sources=parse_sources(args.sources))
    return 0
