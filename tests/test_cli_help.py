"""`maskgit COMMAND --help` (defaults, examples), `-v` in both positions, and `maskgit demo`'s sampler flags."""

import argparse
import dataclasses
import json
import logging
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskgit_lib.cli import COMMANDS, EXAMPLES, build_parser, main
from maskgit_lib.cli.sample import settings_from_args
from maskgit_lib.evaluation.demo import DemoConfig
from maskgit_lib.inpaint import InpaintSettings

S = 64


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_shows_every_default_and_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert any(line.startswith(f"  maskgit {command}") for line in text.splitlines()), text
    p = subparser(command)
    formatter = p._get_formatter()
    checked = 0
    for action in p._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.default in (None, argparse.SUPPRESS):
            continue
        assert "default" in formatter._expand_help(action), (command, action.option_strings)
        assert action.option_strings[0] in text
        checked += 1
    assert checked or command == "prepare-fid"  # prepare-fid has only --force (and -v, -h)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_example_parses(command):
    examples = [line for line in EXAMPLES[command] if line.startswith("maskgit ")]
    assert examples
    for line in examples:
        argv = shlex.split(line)[1:]
        assert argv[0] == command
        assert build_parser(command).parse_args(argv).command == command


def test_demo_epilog_names_the_headline_command():
    assert "maskgit demo" in EXAMPLES["demo"] and "maskgit demo --confidence official" in EXAMPLES["demo"]
    headline = json.loads((Path(__file__).resolve().parents[1] / "results" / "benchmark_headline.json").read_text())
    rows = {r["label"]: r for r in headline["rows"] if r["track"] == "freeform"}
    best = min((r for r in rows.values() if r["kind"] == "maskgit"), key=lambda r: r["fid"])
    assert best["label"] == "maskgit cosine T=8"  # the defaults are the headline's best MaskGIT row
    assert best["settings"] == dataclasses.asdict(InpaintSettings())


@pytest.mark.parametrize("argv, expected", [
    (["inpaint", "--images", "a", "--masks", "b", "--out", "c"], False),
    (["-v", "inpaint", "--images", "a", "--masks", "b", "--out", "c"], True),
    (["inpaint", "--images", "a", "--masks", "b", "--out", "c", "-v"], True),
    (["inpaint", "--verbose", "--images", "a", "--masks", "b", "--out", "c"], True),
    (["-v", "inpaint", "--images", "a", "--masks", "b", "--out", "c", "-v"], True),
    (["demo", "-v"], True),
    (["--verbose", "demo"], True),
])
def test_verbose_before_or_after_the_command(argv, expected):
    assert build_parser(argv[-1] if argv[-1] == "demo" else "inpaint").parse_args(argv).verbose is expected


@pytest.mark.parametrize("argv", [["demo", "-v"], ["-v", "demo"]])
def test_verbose_sets_debug_logging(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(tmp_path))  # no checkpoints: demo says what is missing
    levels = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    assert main(argv + ["--data", str(tmp_path / "nodata")]) == 0
    assert levels == [logging.DEBUG]
    capsys.readouterr()


def test_demo_takes_the_sampler_flags_of_inpaint():
    def sampler_flags(command: str) -> set[str]:
        group = next(g for g in subparser(command)._action_groups if g.title == "sampler")
        return {s for a in group._group_actions for s in a.option_strings}

    flags = sampler_flags("demo")
    assert flags == sampler_flags("inpaint")
    assert {"--confidence", "--prefill", "--blend", "--choice-temperature", "--temperature", "--sweet-spot",
            "--steps", "--schedule", "--seed", "--total-iter", "--mask-func"} <= flags
    args = build_parser("demo").parse_args(["demo", "--total-iter", "3", "--mask-func", "linear", "--prefill", "gray",
                                            "--blend", "paste", "--temperature", "0", "--choice-temperature", "2"])
    assert settings_from_args(args) == InpaintSettings(steps=3, schedule="linear", prefill="gray", blend="paste",
                                                       sampling_temperature=0.0, choice_temperature=2.0)


def test_demo_defaults_are_the_library_defaults():
    defaults = settings_from_args(build_parser("demo").parse_args(["demo"]))
    assert defaults == DemoConfig().settings == InpaintSettings()
    assert (defaults.steps, defaults.schedule, defaults.seed, defaults.confidence, defaults.sampling_temperature,
            defaults.choice_temperature, defaults.prefill, defaults.blend) == (
        8, "cosine", 0, "lab", 1.0, 4.5, "harmonic", "poisson")  # results/sampler_study/README.md


def lab_test_set(root: Path) -> tuple[Path, Path]:
    """root/{masked_image,mask64,gt}: 3 coloured discs with a box hole."""
    for sub in ("masked_image", "mask64", "gt"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:S, :S]
    mask = np.full((S, S), 255, np.uint8)
    mask[20:44, 12:40] = 0
    for i in range(3):
        image = np.zeros((S, S, 3), np.uint8) + np.array([40 * i, 200, 255 - 50 * i], np.uint8)
        image[(yy - 32) ** 2 + (xx - 20 - 8 * i) ** 2 < 200] = (250, 120, 20)
        Image.fromarray(image).save(root / "gt" / f"image_{i:03d}.png")
        Image.fromarray(np.where(mask[..., None] < 128, np.uint8(128), image)).save(
            root / "masked_image" / f"image_{i:03d}.png")
        Image.fromarray(mask, "L").save(root / "mask64" / f"mask_{i:03d}.png")
    return root / "masked_image", root / "mask64"


@pytest.mark.usefixtures("one_thread")
def test_demo_confidence_official_equals_inpaint_confidence_official(ckpts, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(ckpts))
    images, masks = lab_test_set(tmp_path / "data" / "test")
    assert main(["demo", "--confidence", "official", "--limit", "2", "--steps", "2", "--no-fid", "--device", "cpu",
                 "--data", str(tmp_path / "data"), "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "inpainted 2 test images (T=2 cosine, confidence official, prefill harmonic, blend poisson" in out
    assert "seed 0" in out
    assert main(["inpaint", "--confidence", "official", "--steps", "2", "--limit", "2", "--device", "cpu",
                 "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "inpaint")]) == 0
    capsys.readouterr()
    for name in ("image_000.png", "image_001.png"):
        assert (tmp_path / "demo" / name).read_bytes() == (tmp_path / "inpaint" / name).read_bytes()
    assert not (tmp_path / "demo" / "image_002.png").exists()


def test_readme_and_model_card_quote_the_headline_json():
    """The README's and the model card's headline numbers are the ones results/benchmark_headline.json holds."""
    root = Path(__file__).resolve().parents[1]
    rows = {r["label"]: r for r in json.loads((root / "results" / "benchmark_headline.json").read_text())["rows"]
            if r["track"] == "freeform"}
    readme, card = (root / "README.md").read_text(), (root / "checkpoints" / "README.md").read_text()
    default, paper = rows["maskgit cosine T=8"], rows["maskgit cosine T=8 official-conf"]
    kid = lambda r: f"{1000 * r['kid']:.1f} ± {1000 * r['kid_std']:.1f}"  # noqa: E731  (x 1000)
    biharmonic = rows["baseline biharmonic"]
    assert f"| **{default['fid']:.1f}** | {kid(default)} |" in readme
    assert f"| {paper['fid']:.1f} | {kid(paper)} |" in readme
    assert f"| {biharmonic['fid']:.1f} | {kid(biharmonic)} |" in readme
    assert f"FID {default['fid']:.2f}" in card and f"scores {biharmonic['fid']:.2f}" in card
    assert f"FID: {default['fid']:.2f}, the headline row" in readme  # what `make demo` printed
