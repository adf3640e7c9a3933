"""The course lab's dataset layouts and flag names work wherever ours do (`data.test_set`, the CLI aliases)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskgit_lib import data, paths
from maskgit_lib.cli import main
from maskgit_lib.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def box() -> np.ndarray:
    """uint8 (64, 64) lab mask: a 24x28 hole (0) in known pixels (255)."""
    mask = np.full((64, 64), 255, np.uint8)
    mask[20:44, 12:40] = 0
    return mask


def lab_folder(folder: Path, masks: list[np.ndarray]) -> tuple[Path, Path]:
    """folder/{masked_image/image_NNN.png (gray holes), mask64/mask_NNN.png, gt/image_NNN.png}."""
    for sub in ("masked_image", "mask64", "gt"):
        (folder / sub).mkdir(parents=True)
    for i, mask in enumerate(masks):
        image = np.zeros((64, 64, 3), np.uint8) + np.array([40 * i, 200, 255 - 50 * i], np.uint8)
        Image.fromarray(image).save(folder / "gt" / f"image_{i:03d}.png")
        Image.fromarray(np.where(mask[..., None] == 0, np.uint8(128), image)).save(
            folder / "masked_image" / f"image_{i:03d}.png")
        Image.fromarray(mask, "L").save(folder / "mask64" / f"mask_{i:03d}.png")
    return folder / "masked_image", folder / "mask64"


def models(ckpts: Path) -> list[str]:
    return ["--device", "cpu", "--vqgan-checkpoint", str(ckpts / paths.VQGAN_CHECKPOINT_NAME),
            "--transformer-checkpoint", str(ckpts / paths.TRANSFORMER_CHECKPOINT_NAME)]


def lab_root(root: Path, gt: bool = True) -> Path:
    """The lab's dataset root: masked_image/, mask64/ (+ gt/) directly in it, beside train/ and val/."""
    lab_folder(root, [box(), box(), box()])
    for split in ("train", "val"):
        (root / split).mkdir()
        Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(root / split / "00000.png")
    if not gt:
        for f in (root / "gt").iterdir():
            f.unlink()
        (root / "gt").rmdir()
    return root


@pytest.mark.parametrize("layout", ["ours", "lab", "lab without gt", "lab with an empty test/", "masked_image"])
def test_test_set_accepts_every_layout(tmp_path, layout):
    if layout == "ours":
        lab_folder(tmp_path / "test", [box(), box(), box()])
        given, base = tmp_path, tmp_path / "test"
    else:
        lab_root(tmp_path, gt=layout != "lab without gt")
        if layout == "lab with an empty test/":
            (tmp_path / "test").mkdir()
        given, base = (tmp_path / "masked_image" if layout == "masked_image" else tmp_path), tmp_path
    ds = data.test_set(given)
    assert (ds.images_dir, ds.masks_dir) == (base / "masked_image", base / "mask64")
    assert ds.gt_dir == (None if layout == "lab without gt" else base / "gt")
    name, image, pixel_missing = ds[0]
    assert name == "image_000" and image.shape == (3, 64, 64) and pixel_missing.sum() == 24 * 28


def test_test_set_says_which_layouts_it_looked_for(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"has no test set; looked for test/masked_image/ \+ test/mask64/ .*"
                                        r"masked_image/ \+ mask64/ directly in it .*masked_image/ itself"):
        data.test_set(tmp_path)
    (tmp_path / "test" / "masked_image").mkdir(parents=True)
    with pytest.raises(DataError, match=r"test/masked_image have no mask folder .*test/mask64 beside them"):
        data.test_set(tmp_path)
    (tmp_path / "masked_image").mkdir()
    with pytest.raises(DataError, match=r"masked_image have no mask folder .*mask64 beside them"):
        data.test_set(tmp_path / "masked_image")


@pytest.mark.parametrize("given", ["root", "masked_image"])
def test_demo_runs_on_the_lab_layout(ckpts, tmp_path, capsys, monkeypatch, given):
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(ckpts))
    root = lab_root(tmp_path / "lab")
    folder = root / "masked_image" if given == "masked_image" else root
    code = main(["demo", "--data", str(folder), "--out", str(tmp_path / "out"), "--limit", "2",
                 "--total-iter", "2", "--mask-func", "linear", "--no-fid", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "inpainted 2 test images (T=2 linear" in out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["image_000.png", "image_001.png"]


def test_lab_flag_names_give_byte_identical_outputs(ckpts, tmp_path, capsys):
    images, masks = lab_folder(tmp_path / "lab", [box(), box()])
    outs = {}
    for name, flags in (("ours", ["--steps", "2", "--schedule", "linear"]),
                        ("lab", ["--total-iter", "2", "--mask-func", "linear"])):
        outs[name] = tmp_path / f"out_{name}"
        assert main(["inpaint", "--images", str(images), "--masks", str(masks), "--out", str(outs[name]),
                     *flags, *models(ckpts)]) == 0
    assert "T=2 linear" in capsys.readouterr().out
    files = sorted(p.name for p in outs["ours"].glob("*.png"))
    assert files == ["image_000.png", "image_001.png"]
    for f in files:
        assert (outs["ours"] / f).read_bytes() == (outs["lab"] / f).read_bytes()


@pytest.mark.parametrize("command", ["inpaint", "generate", "outpaint", "demo"])
def test_help_names_the_lab_flags_and_defaults(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps help at the terminal width, hyphens included
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the lab's name --total-iter T also works" in text and "the lab's name --mask-func NAME also works" in text
    assert "(default 8;" in text and "(default cosine;" in text and "(default auto)" in text


@pytest.mark.parametrize("command", ["inpaint", "demo"])
def test_a_bad_lab_flag_value_names_the_flag_typed(command, tmp_path, capsys):
    paths_ = ["--images", "a", "--masks", "b", "--out", str(tmp_path / "o")] if command == "inpaint" else []
    for flag, value, message in (("--total-iter", "0", "argument --total-iter: must be an integer >= 1, got 0"),
                                 ("--mask-func", "zigzag", "argument --mask-func: unknown mask schedule 'zigzag'")):
        with pytest.raises(SystemExit) as exc:
            main([command, *paths_, flag, value])
        assert exc.value.code == 2 and message in capsys.readouterr().err
