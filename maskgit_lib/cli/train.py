"""``maskgit train-vqgan`` / ``train-transformer`` / ``eval-vqgan`` / ``eval-transformer``: argparse shells.

Each command parses its flags into the config object of the Python API
(:class:`~maskgit_lib.training.VQGANRun`, :class:`~maskgit_lib.training.TransformerRun`),
calls the function (:func:`~maskgit_lib.training.train_vqgan`,
:func:`~maskgit_lib.training.train_transformer`,
:func:`~maskgit_lib.evaluation.models.evaluate_vqgan`,
:func:`~maskgit_lib.evaluation.models.evaluate_transformer`) and prints the result.

Training flags are named after :class:`~maskgit_lib.config.TrainConfig`'s fields
(``--max-steps`` -> ``max_steps``, ``--views`` -> ``token_views``) and default to
None, meaning "the preset's value": :func:`train_config_from_flags` copies the given
ones over the preset's :class:`~maskgit_lib.config.TrainConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from .. import paths
from ..config import TrainConfig
from ..errors import ConfigError, DataError
from ..outputs import write_json
from ..runtime import native_bf16, resolve_device
from ..training import TransformerRun, VQGANRun, train_transformer, train_vqgan
from ..training.run import WEIGHT_DTYPES
from ..views import parse_views
from .argtypes import dropout_rate, positive_int, seed_int

log = logging.getLogger(__name__)

_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


# ------------------------------------------------------------------ training flags
def add_train_arguments(parser: argparse.ArgumentParser, default_out: Path) -> None:
    """Options shared by ``train-vqgan`` and ``train-transformer`` (None = the preset's value)."""
    parser.add_argument("--data", type=Path, default=None,
                        help=f"dataset folder with train/ and val/, or any folder of images "
                             f"(default: {paths.default_dataset_dir()})")
    parser.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "lab"],
                        help="model size and training defaults (default: cpu)")
    parser.add_argument("--out", type=Path, default=default_out,
                        help=f"run folder: state.pt, final.safetensors, log.csv, curves.png, summary.json "
                             f"(default: {default_out})")
    parser.add_argument("--export", type=Path, default=None, help="also copy the final weights here")
    parser.add_argument("--weights-dtype", choices=sorted(WEIGHT_DTYPES), default="float32",
                        help="round the final weights to this precision (validated after rounding); "
                             "--export then stores them at that size (default: float32)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="optimizer steps; 0 = until --max-minutes, with the LR decay following the clock")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop cleanly (final validation, weights, state) within this wall time")
    parser.add_argument("--stop-at-step", type=int, default=None,
                        help="stop after this step although the LR schedule follows --max-steps "
                             "(train in several sessions; resume continues)")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size per optimizer step")
    parser.add_argument("--grad-accum", type=int, default=None, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear LR warmup steps")
    parser.add_argument("--min-lr-ratio", type=float, default=None, help="final LR / peak LR of the cosine decay")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay")
    parser.add_argument("--grad-clip", type=float, default=None, help="max gradient norm (0: off)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 autocast (default: on for CUDA, off for CPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--seed", type=seed_int, default=None, help="random seed (default 0)")
    parser.add_argument("--val-every", type=int, default=None, help="validate every N steps")
    parser.add_argument("--ckpt-every", type=int, default=None, help="write state.pt every N steps")
    parser.add_argument("--log-every", type=int, default=None, help="CSV row + NaN check every N steps")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from OUT/state.pt if it exists (default: on)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar (default: on)")


def train_config_from_flags(args: argparse.Namespace, preset: TrainConfig) -> TrainConfig:
    """The preset's TrainConfig with every TrainConfig flag given on the command line copied over it.

    Warns when ``--bf16`` runs on a CPU without native bf16 matmuls (emulated: several times slower).
    """
    given = {name: getattr(args, name) for name in _TRAIN_FIELDS if getattr(args, name, None) is not None}
    cfg = dataclasses.replace(preset, **given)
    device = resolve_device(args.device)
    if cfg.bf16 and device.type == "cpu":
        if not native_bf16(device):
            log.warning("--bf16 on a CPU without native bf16 matmuls (no AVX512-BF16/AMX): autocast is emulated "
                        "and several times slower than fp32 here (maskgit bench measures it); drop --bf16")
    return cfg


def _run_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields every training command takes from its flags (``device`` goes to ``default``)."""
    return {"data_dir": args.data, "out_dir": args.out, "export": args.export,
            "weights_dtype": args.weights_dtype, "stop_at_step": args.stop_at_step, "resume": args.resume,
            "progress": args.progress}


def _is_main_process() -> bool:
    """Rank 0 under torchrun (or a plain process): the one that prints."""
    return os.environ.get("RANK", "0") == "0"


def _print_weights(summary: dict[str, Any], export: Path | None) -> None:
    print(f"weights: {summary['final']}" + (f" (exported to {export})" if export else ""))


# ------------------------------------------------------------------ train-vqgan
def add_train_vqgan_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``maskgit train-vqgan``."""
    add_train_arguments(parser, paths.project_root() / "runs" / "vqgan")
    parser.add_argument("--recon-loss", choices=["l1", "mse", "l1+mse"], default=None,
                        help="pixel reconstruction loss (default: l1+mse)")
    parser.add_argument("--gan-weight", type=float, default=None, help="PatchGAN hinge loss weight (default 0: off)")
    parser.add_argument("--gan-start", type=int, default=None, help="step at which the GAN loss starts")
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                        help="random horizontal flips (default: on)")


def vqgan_run_from_args(args: argparse.Namespace) -> VQGANRun:
    """The :class:`~maskgit_lib.training.VQGANRun` that ``maskgit train-vqgan ARGS`` trains."""
    run = VQGANRun.default(args.preset, args.device, **_run_fields(args))
    return dataclasses.replace(run, train=train_config_from_flags(args, run.train))


def run_train_vqgan(args: argparse.Namespace) -> int:
    """Train a VQGAN; write OUT/final.safetensors (and --export); print a summary."""
    run = vqgan_run_from_args(args)
    summary = train_vqgan(run)
    if _is_main_process():
        m = summary["metrics"]
        print(f"train-vqgan: {summary['steps']} steps ({summary['stop_reason']}) in "
              f"{summary['wall_time_s']:.0f} s on {summary['device']}; val PSNR {m['psnr']:.2f} dB, "
              f"codebook usage {m['usage']:.1%}, perplexity {m['perplexity']:.1f}")
        _print_weights(summary, run.export)
    return 0


# ------------------------------------------------------------ train-transformer
def _views_arg(text: str) -> tuple[str, ...]:
    try:
        return parse_views(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_train_transformer_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``maskgit train-transformer``."""
    add_train_arguments(parser, paths.project_root() / "runs" / "transformer")
    parser.add_argument("--vqgan-checkpoint", type=Path, default=None,
                        help=f"frozen tokenizer (default: {paths.default_vqgan_checkpoint()})")
    parser.add_argument("--label-smoothing", type=float, default=None, help="cross-entropy label smoothing (0.1)")
    parser.add_argument("--schedule", default=None, help="MVTM mask schedule gamma (default: cosine)")
    parser.add_argument("--min-mask-ratio", type=float, default=None, help="minimum masking rate (default 0)")
    parser.add_argument("--hole-fraction", type=float, default=None, metavar="P",
                        help="share of training examples that are brush-stroke holes with prefilled context "
                             "(see maskgit_lib.training.hole_examples; default 0 = plain MVTM)")
    parser.add_argument("--hole-variants", type=positive_int, default=None, metavar="V",
                        help="hole examples built per training image (default 4)")
    parser.add_argument("--init-weights", type=Path, default=None, metavar="PATH",
                        help="start from these transformer weights (fine-tuning; same config); "
                             "ignored when resuming from OUT/state.pt")
    parser.add_argument("--views", dest="token_views", type=_views_arg, default=None, metavar="V1,V2,...",
                        help="views of each training image to tokenize (maskgit_lib.views; default id,flip; "
                             "e.g. id,flip,small,small+flip,large,large+flip)")
    parser.add_argument("--dropout", type=dropout_rate, default=None,
                        help="transformer dropout (default: the preset's, 0.1; attention dropout keeps the preset's)")
    parser.add_argument("--attention", choices=["sdpa", "scratch"], default=None,
                        help="attention implementation (default: the preset's, sdpa)")


def transformer_run_from_args(args: argparse.Namespace) -> TransformerRun:
    """The :class:`~maskgit_lib.training.TransformerRun` that ``maskgit train-transformer ARGS`` trains."""
    run = TransformerRun.default(args.preset, args.device, vqgan_checkpoint=args.vqgan_checkpoint,
                                 init_weights=args.init_weights, **_run_fields(args))
    model = run.model
    if args.attention:
        model = dataclasses.replace(model, attention=args.attention)
    if args.dropout is not None:
        model = dataclasses.replace(model, dropout=args.dropout)
    return dataclasses.replace(run, model=model, train=train_config_from_flags(args, run.train))


def run_train_transformer(args: argparse.Namespace) -> int:
    """Tokenize (cached), train with MVTM, write OUT/final.safetensors with val metrics; print a summary."""
    run = transformer_run_from_args(args)
    summary = train_transformer(run)
    if _is_main_process():
        m = summary["metrics"]
        print(f"train-transformer: {summary['steps']} steps ({summary['stop_reason']}) in "
              f"{summary['wall_time_s']:.0f} s on {summary['device']}; val masked CE {m['ce']:.4f}, "
              f"val masked-token accuracy {m['masked_acc']:.2%} ({int(m['num_masked'])} tokens); "
              f"val holes CE {m['hole_ce']:.4f}, accuracy {m['hole_acc']:.2%}")
        _print_weights(summary, run.export)
    return 0


# ------------------------------------------------------------------- eval-vqgan
def add_eval_vqgan_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``maskgit eval-vqgan``."""
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"VQGAN weights (default: {paths.default_vqgan_checkpoint()})")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"dataset folder; uses DIR/test/gt (default: {paths.default_dataset_dir()})")
    parser.add_argument("--no-fid", action="store_true", help="skip rFID (needs pytorch-fid and its weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")


def run_eval_vqgan(args: argparse.Namespace) -> int:
    """PSNR, codebook usage/perplexity and rFID of a VQGAN checkpoint on the test ground truth."""
    from ..evaluation.models import evaluate_vqgan  # imports the FID code: only for eval

    result = evaluate_vqgan(args.checkpoint, args.data, fid=not args.no_fid, device=args.device,
                            batch_size=args.batch_size)
    rows = [("images", f"{result['num_images']}"), ("PSNR (dB)", f"{result['psnr']:.2f}"),
            ("codebook usage", f"{result['usage']:.1%} of {result['codebook_size']}"),
            ("perplexity", f"{result['perplexity']:.1f}"),
            ("rFID", f"{result['rfid']:.2f}" if result["rfid"] is not None
             else "unavailable (see rfid_error)" if "rfid_error" in result else "skipped (--no-fid)")]
    print(f"eval-vqgan: {result['checkpoint']} on {result['gt_dir']}")
    for name, value in rows:
        print(f"  {name:<16} {value}")
    if args.json is not None:
        write_json(args.json, result)
    if not all(math.isfinite(v) for v in (result["psnr"], result["perplexity"])):
        raise DataError(f"non-finite metrics: {json.dumps(result)}")
    return 0


# ------------------------------------------------------------- eval-transformer
def add_eval_transformer_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``maskgit eval-transformer``."""
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"transformer weights (default: {paths.default_transformer_checkpoint()})")
    parser.add_argument("--vqgan-checkpoint", type=Path, default=None,
                        help=f"tokenizer (default: {paths.default_vqgan_checkpoint()})")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"dataset folder; uses its val/ split (default: {paths.default_dataset_dir()})")
    parser.add_argument("--seed", type=seed_int, default=None,
                        help="seed of the fixed validation masks (default: the one recorded, 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per forward pass")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")


def run_eval_transformer(args: argparse.Namespace) -> int:
    """Recompute the validation masked-token CE and accuracy of a checkpoint; compare with its metadata."""
    from ..evaluation.models import evaluate_transformer

    result = evaluate_transformer(args.checkpoint, args.vqgan_checkpoint, args.data, seed=args.seed,
                                  device=args.device, batch_size=args.batch_size)
    print(f"eval-transformer: {result['checkpoint']} ({result['steps']} steps) on {result['val_images']} val "
          f"images, mask seed {result['mask_seed']}, schedule {result['mask_schedule']}")
    print(f"  {'metric':<18} {'recomputed':>12} {'recorded':>12}")
    for key, fmt in (("ce", "{:.5f}"), ("masked_acc", "{:.5f}"), ("num_masked", "{}"), ("hole_ce", "{:.5f}"),
                     ("hole_acc", "{:.5f}")):
        new, old = result[f"val_{key}"], result["recorded"][key]
        print(f"  {'val_' + key:<18} {fmt.format(new):>12} {('-' if old is None else fmt.format(old)):>12}")
    if args.json is not None:
        write_json(args.json, result)
    return 0
