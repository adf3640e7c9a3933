"""``maskgit inpaint`` / ``generate`` / ``outpaint``: argparse shells over :mod:`maskgit_lib.folders`.

Each command parses its flags into an :class:`~maskgit_lib.inpaint.InpaintSettings`,
checks the output folder before loading any model, calls the Python function and
prints a one-line summary.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .. import paths
from ..evaluation import demo
from ..folders import generate_folder, inpaint_folder, outpaint_folder
from ..decoding import CONFIDENCE_KINDS
from ..inpaint import Inpainter, InpaintSettings
from ..outputs import prepare_output_dir
from .argtypes import fraction, int_at_least, nonnegative_float, schedule_arg, seed_int


def settings_from_args(args: argparse.Namespace) -> InpaintSettings:
    """Build :class:`InpaintSettings` from parsed CLI arguments (fields absent from ``args`` keep defaults)."""
    fields = {f.name for f in dataclasses.fields(InpaintSettings)}
    return InpaintSettings(**{k: v for k, v in vars(args).items() if k in fields})


def add_settings_arguments(parser: argparse.ArgumentParser, batch_size: int = 64) -> None:
    """The ``sampler`` group: every :class:`InpaintSettings` flag shared by the sampling commands and ``demo``."""
    g = parser.add_argument_group("sampler")
    D = InpaintSettings  # the defaults are the library's (the class attributes of the dataclass)
    g.add_argument("--steps", type=int_at_least(1), default=D.steps, metavar="T",
                   help="T, decoding steps (default %(default)s; the lab's name --total-iter T also works)")
    g.add_argument("--schedule", type=schedule_arg, default=D.schedule, metavar="NAME",
                   help="mask schedule: linear, cosine, square, cubic, sqrt, log, exp, arccos, pow<p> "
                        "(default %(default)s; the lab's name --mask-func NAME also works)")
    # The lab's names as separate hidden flags, so that an error names the flag typed (argument --steps: ...).
    for lab_name, dest, kind in (("--total-iter", "steps", int_at_least(1)), ("--mask-func", "schedule", schedule_arg)):
        g.add_argument(lab_name, dest=dest, type=kind, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    g.add_argument("--sweet-spot", type=int_at_least(1), default=None, metavar="S",
                   help="stop after step S <= T and keep that image (default: T)")
    g.add_argument("--seed", type=seed_int, default=0, metavar="N", help="random seed (default %(default)s)")
    g.add_argument("--confidence", choices=CONFIDENCE_KINDS, default=D.confidence,
                   help="token choice and ranking: lab = the argmax token ranked by its probability (the course "
                        "lab's rule, the best measured), official = a sampled token ranked by log p (the MaskGIT "
                        "paper), p = a sampled token ranked by p (default %(default)s; "
                        "results/sampler_study/README.md)")
    g.add_argument("--choice-temperature", type=nonnegative_float, default=D.choice_temperature, metavar="C",
                   help="Gumbel noise on the confidence, annealed (default %(default)s)")
    g.add_argument("--temperature", dest="sampling_temperature", type=nonnegative_float,
                   default=D.sampling_temperature, metavar="TAU",
                   help="sampling temperature, 0 = argmax; with --confidence lab the token is always the "
                        "argmax and tau only rescales p (default %(default)s)")
    g.add_argument("--prefill", choices=("harmonic", "gray"), default=D.prefill,
                   help="what the tokenizer sees in the holes: a smooth fill from the hole borders "
                        "or the lab's gray 128 (default %(default)s)")
    g.add_argument("--blend", choices=("poisson", "paste"), default=D.blend,
                   help="how the decoded holes meet the known pixels: seamless Poisson blending "
                        "or the lab's plain paste (default %(default)s)")
    g.add_argument("--batch-size", type=int_at_least(1), default=batch_size, metavar="N",
                   help="images per batch (default %(default)s)")


def add_model_arguments(parser: argparse.ArgumentParser, checkpoints: bool = True) -> None:
    """The ``models`` group: device, bf16 and (unless ``checkpoints`` is False) the checkpoint paths."""
    m = parser.add_argument_group("models")
    m.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (CUDA if available), cpu, cuda, cuda:N (default %(default)s)")
    m.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or CUDA)")
    if checkpoints:
        m.add_argument("--vqgan-checkpoint", type=Path, default=None, metavar="PATH",
                       help=f"default: {paths.default_vqgan_checkpoint()}")
        m.add_argument("--transformer-checkpoint", type=Path, default=None, metavar="PATH",
                       help=f"default: {paths.default_transformer_checkpoint()}")


def add_sampler_arguments(parser: argparse.ArgumentParser, batch_size: int = 64) -> None:
    """Sampler and model flags shared by ``inpaint``, ``generate`` and ``outpaint`` (``demo`` takes the sampler)."""
    add_settings_arguments(parser, batch_size)
    add_model_arguments(parser)


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: write into a non-empty --out folder that this command did not fill."""
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out folder even if it holds files this command did not "
                             "write (never into an input or a dataset folder)")


def _inpainter(args: argparse.Namespace) -> Inpainter:
    return Inpainter.from_checkpoints(args.vqgan_checkpoint, args.transformer_checkpoint, args.device, args.bf16)


def _report(verb: str, summary: dict, settings: InpaintSettings) -> None:
    print(f"{verb} {summary['images']} image(s) into {summary['out_dir']} in {summary['seconds']:.1f} s "
          f"({summary['images_per_second']:.1f} images/s; T={settings.steps} {settings.schedule}, "
          f"stop after step {settings.stop_step}, seed {settings.seed})")


def add_inpaint_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``maskgit inpaint``."""
    parser.add_argument("--images", type=Path, required=True, metavar="DIR", help="masked images (image_NNN.png)")
    parser.add_argument("--masks", type=Path, required=True, metavar="DIR",
                        help="masks (mask_NNN.png), 0 = missing, 255 = known")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created; never an input or dataset folder)")
    add_overwrite_argument(parser)
    parser.add_argument("--save-trace", action="store_true",
                        help="also write OUT/trace/<name>_stepTT.png and <name>_latentTT.png for every step")
    parser.add_argument("--dilate", type=int_at_least(0), default=0, metavar="N",
                        help="grow the token hole by N tokens")
    parser.add_argument("--no-composite", dest="composite", action="store_false",
                        help="keep the decoded image everywhere (known pixels are not pasted back)")
    parser.add_argument("--threshold", action="store_true", help="accept non-binary masks: values < 128 = missing")
    parser.add_argument("--limit", type=int_at_least(1), default=None, metavar="N", help="only the first N pairs")
    parser.add_argument("--mask-convention", choices=("lab", "white_is_hole"), default="lab",
                        help="lab: 0 = missing, 255 = known (the course's masks); white_is_hole: white = hole "
                             "(diffusers/OpenCV) (default %(default)s)")

    def size_arg(text: str) -> str | int:
        if text == "input" or (text.isdecimal() and int(text) >= 1):
            return text if text == "input" else int(text)
        raise argparse.ArgumentTypeError(f"must be 'input' or a side in pixels >= 1, got {text!r}")

    parser.add_argument("--size", type=size_arg, default="input", metavar="N|input",
                        help="output size: input = each output at its input's size, only the holes changed "
                             "(default); N = N x N (64: the model's view, as the benchmark and demo write)")
    add_sampler_arguments(parser)


def run_inpaint(args: argparse.Namespace) -> int:
    """Run ``maskgit inpaint``; prints a one-line summary."""
    settings = settings_from_args(args)
    prepare_output_dir(args.out, args.images, args.masks, command="inpaint", overwrite=args.overwrite)
    summary = inpaint_folder(_inpainter(args), args.images, args.masks, args.out, settings, args.batch_size,
                                              args.save_trace, args.threshold, args.limit,
                                              overwrite=args.overwrite, mask_convention=args.mask_convention,
                                              size=args.size)
    _report("Inpainted", summary, settings)
    if summary["copied"]:
        print(f"{len(summary['copied'])} image(s) had an empty mask and were copied through unchanged")
    return 0


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``maskgit generate``."""
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder; the grid goes to <DIR>_grid.png")
    add_overwrite_argument(parser)
    parser.add_argument("--n", type=int_at_least(1), default=16, metavar="N", help="number of samples (default 16)")
    add_sampler_arguments(parser)


def run_generate(args: argparse.Namespace) -> int:
    """Run ``maskgit generate``; prints a one-line summary."""
    settings = settings_from_args(args)
    prepare_output_dir(args.out, command="generate", overwrite=args.overwrite)
    summary = generate_folder(_inpainter(args), args.out, args.n, settings, args.batch_size,
                              overwrite=args.overwrite)
    _report("Generated", summary, settings)
    print(f"grid: {summary['grid']}")
    return 0


def add_outpaint_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``maskgit outpaint``."""
    parser.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder of images (any size)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created; never the input folder)")
    add_overwrite_argument(parser)
    parser.add_argument("--keep", type=fraction, default=0.5, metavar="F",
                        help="side of the kept centred square, as a fraction of the image (default 0.5)")
    parser.add_argument("--limit", type=int_at_least(1), default=None, metavar="N", help="only the first N images")
    add_sampler_arguments(parser)


def run_outpaint(args: argparse.Namespace) -> int:
    """Run ``maskgit outpaint``; prints a one-line summary."""
    settings = settings_from_args(args)
    prepare_output_dir(args.out, args.images, command="outpaint", overwrite=args.overwrite)
    summary = outpaint_folder(_inpainter(args), args.images, args.out, settings, args.keep, args.batch_size,
                              args.limit, overwrite=args.overwrite)
    _report("Outpainted", summary, settings)
    return 0


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``maskgit demo``: its own, then the sampler flags of ``maskgit inpaint`` (one definition)."""
    parser.add_argument("--limit", type=int_at_least(1), default=None, metavar="N",
                        help="only the first N test images (quick runs; FID then uses the same N ground truths)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/demo; the gallery goes to <out>_gallery.png)")
    add_overwrite_argument(parser)
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder: DIR/test/{masked_image,mask64,gt}, the lab's DIR/{masked_image,mask64} "
                             "(+ DIR/gt), or a masked_image/ folder with ../mask64 (default: data/twemoji64)")
    parser.add_argument("--no-fid", action="store_true", help="skip the FID")
    add_settings_arguments(parser)
    add_model_arguments(parser, checkpoints=False)


def describe_settings(settings: InpaintSettings) -> str:
    """Every sampler setting in one phrase, e.g. ``T=8 cosine, confidence lab, prefill harmonic, ...``."""
    stop = "" if settings.sweet_spot is None else f", stop after step {settings.stop_step}"
    return (f"T={settings.steps} {settings.schedule}{stop}, confidence {settings.confidence}, "
            f"prefill {settings.prefill}, blend {settings.blend}, choice temperature {settings.choice_temperature:g}, "
            f"temperature {settings.sampling_temperature:g}, seed {settings.seed}")


def run_demo(args: argparse.Namespace) -> int:
    """Run ``maskgit demo``; prints a short summary (or what is missing, exit 0)."""
    result = demo.run_demo(demo.DemoConfig(
        data=args.data, out=args.out, settings=settings_from_args(args), limit=args.limit,
        batch_size=args.batch_size, device=args.device, bf16=args.bf16, fid=not args.no_fid,
        overwrite=args.overwrite))
    if result["missing"]:
        print("maskgit demo: " + "; ".join(result["ready"]) + ".")
        print("maskgit demo: the trained checkpoints are not there yet, so there is nothing to inpaint:")
        for hint in result["missing"]:
            print(f"  - {hint}")
        print("Run `maskgit demo` (or `make demo`) again once both checkpoints exist.")
        return 0
    summary, settings = result["summary"], result["settings"]
    print(f"maskgit demo: inpainted {summary['images']} test images ({describe_settings(settings)}) "
          f"on {summary['device']}")
    print(f"  wall time {summary['seconds']:.1f} s, {summary['images_per_second']:.1f} images/s")
    print(f"  FID vs ground truth: {result['fid_text']}")
    print(f"  outputs: {result['out']}/  gallery: {result['gallery']}")
    return 0
