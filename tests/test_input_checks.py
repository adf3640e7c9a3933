"""Input checks of ``maskgit inpaint`` that used to mislead or hang.

* pairing: names with spaces/emoji pair, two files competing for one partner and
  one folder given for both --images and --masks are named as such;
* ``--temperature inf`` / ``--choice-temperature inf`` are refused;
* ``--steps`` above the token count is refused (it would run for ever);
* the "may be inverted" mask warning uses the mask's own resolution.

CLI commands run in-process with tiny random models (as in ``tests/test_errors.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskgit_lib import data, paths
from maskgit_lib.cli import main
from maskgit_lib.decoding import check_steps_fit
from maskgit_lib.errors import ConfigError, DataError

S = 64
pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, request):
    monkeypatch.setenv("MASKGIT_CACHE", str(tmp_path / "cache"))
    if "ckpts" in request.fixturenames:
        monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(request.getfixturevalue("ckpts")))


def models(ckpts: Path) -> list[str]:
    return ["--device", "cpu", "--steps", "2", "--vqgan-checkpoint", str(ckpts / paths.VQGAN_CHECKPOINT_NAME),
            "--transformer-checkpoint", str(ckpts / paths.TRANSFORMER_CHECKPOINT_NAME)]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def user_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert f"maskgit {argv[0]}: error: " in err
    return err


def argparse_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and "Traceback" not in out + err
    return err


def rgb(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (S, S, 3), dtype=np.uint8))


def hole_mask(size: int = S, inverted: bool = False) -> Image.Image:
    """0 = missing: a centred box of about 1/9 of the image (or its inverse)."""
    known = np.full((size, size), 255, np.uint8)
    known[size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 0
    return Image.fromarray(255 - known if inverted else known, "L")


def folder(root: Path, files: dict[str, Image.Image]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, image in files.items():
        image.save(root / name)
    return root


# ----------------------------------------------------------------------------- pairing images with masks


def test_names_with_spaces_and_emoji_pair(tmp_path, ckpts, capsys):
    name = "image_000 \U0001F600"
    images = folder(tmp_path / "images", {f"{name}.png": rgb(), "image_001.png": rgb(1)})
    masks = folder(tmp_path / "masks", {"mask_000 \U0001F600.png": hole_mask(), "mask_001.png": hole_mask()})
    code, out, err = run(capsys, "inpaint", "--images", images, "--masks", masks, "--out", tmp_path / "o",
                         *models(ckpts))
    assert code == 0, err
    assert "Inpainted 2 image(s)" in out
    assert (tmp_path / "o" / f"{name}.png").is_file()


@pytest.mark.parametrize("names, message", [
    (["image_000.png", "image_000.jpg"],
     "image_000.jpg and image_000.png in {images} would both pair with the mask mask_000.png; keep one"),
    (["image_000.png", "image_000.jpg", "image_0.png"],
     "image_0.png, image_000.jpg and image_000.png in {images} would all pair with the mask mask_000.png; keep one"),
])
def test_two_images_for_one_mask_are_named(tmp_path, ckpts, capsys, names, message):
    images = folder(tmp_path / "images", {n: rgb(i) for i, n in enumerate(names)})
    masks = folder(tmp_path / "masks", {"mask_000.png": hole_mask()})
    err = user_error(capsys, "inpaint", "--images", images, "--masks", masks, "--out", tmp_path / "o",
                     *models(ckpts))
    assert message.format(images=images) in err
    assert "has no mask" not in err and not (tmp_path / "o").exists()


def test_two_masks_for_one_image_are_named(tmp_path, ckpts, capsys):
    images = folder(tmp_path / "images", {"image_000.png": rgb()})
    masks = folder(tmp_path / "masks", {"mask_000.png": hole_mask(), "mask_0.png": hole_mask(inverted=True)})
    err = user_error(capsys, "inpaint", "--images", images, "--masks", masks, "--out", tmp_path / "o",
                     *models(ckpts))
    assert f"mask_0.png and mask_000.png in {masks} would both pair with the image image_000.png; keep one" in err


def test_the_same_folder_for_images_and_masks_is_refused(tmp_path, ckpts, capsys):
    both = folder(tmp_path / "both", {"image_000.png": rgb(), "mask_000.png": hole_mask()})
    err = user_error(capsys, "inpaint", "--images", both, "--masks", both, "--out",
                     tmp_path / "o", *models(ckpts))
    assert f"--images and --masks are the same folder {both}; masks must be in their own folder" in err
    assert "has no mask" not in err


def test_pairing_rules_of_inpaint_folder(tmp_path):
    images = folder(tmp_path / "i", {"image_7.png": rgb(), "cat dog.png": rgb(1), "image_x y.png": rgb(2)})
    masks = folder(tmp_path / "m", {"mask_007.png": hole_mask(), "cat dog.png": hole_mask(),
                                    "mask_x y.png": hole_mask()})
    pairs = [(i.name, m.name) for i, m in data.InpaintFolder(images, masks).pairs]
    assert pairs == [("cat dog.png", "cat dog.png"), ("image_7.png", "mask_007.png"),
                     ("image_x y.png", "mask_x y.png")]
    lonely = folder(tmp_path / "lonely", {"my_image_1.png": rgb()})
    with pytest.raises(DataError, match=r"my_image_1.png has no mask in .*; expected a mask named my_image_1.png"):
        data.InpaintFolder(lonely, masks)


# ----------------------------------------------------------------------------- temperatures and steps


@pytest.mark.parametrize("command", ["inpaint", "generate"])
@pytest.mark.parametrize("flag", ["--temperature", "--choice-temperature"])
def test_infinite_temperatures_are_refused(tmp_path, capsys, command, flag):
    needs = {"inpaint": ["--images", "a", "--masks", "b"], "generate": []}[command]
    err = argparse_error(capsys, command, *needs, "--out", tmp_path / "o", flag, "inf")
    assert f"argument {flag}: must be a finite number >= 0, got inf" in err


@pytest.mark.parametrize("command, steps", [("inpaint", 10000), ("generate", 257)])
def test_more_steps_than_tokens_are_refused(tmp_path, ckpts, capsys, command, steps):
    images = folder(tmp_path / "images", {"image_000.png": rgb()})
    masks = folder(tmp_path / "masks", {"mask_000.png": hole_mask()})
    inputs = {"inpaint": ["--images", images, "--masks", masks], "generate": ["--n", "1"]}[command]
    err = user_error(capsys, command, *inputs, "--out", tmp_path / "o", *models(ckpts), "--steps", steps)
    assert (f"--steps {steps} exceeds the 256 tokens of a 16x16 grid; each step must unmask at least one token: "
            "use --steps <= 256") in err
    assert not list((tmp_path / "o").glob("*.png"))


def test_steps_up_to_the_token_count_are_accepted():
    check_steps_fit(256, 256)
    check_steps_fit(1, 1)
    with pytest.raises(ConfigError, match="--steps 10 exceeds the 8 tokens; "):
        check_steps_fit(10, 8)


# ----------------------------------------------------------------------------- the "may be inverted" warning


def _stripes(size: int, width: int, period: int) -> Image.Image:
    """Vertical missing stripes ``width`` of every ``period`` pixels (0 = missing)."""
    known = np.full((size, size), 255, np.uint8)
    for lo in range(0, size, period):
        known[:, lo:lo + width] = 0
    return Image.fromarray(known, "L")


@pytest.mark.parametrize("kind, warns", [("thin strokes", False), ("inverted", True), ("normal", False)])
def test_inverted_warning_uses_the_full_resolution(tmp_path, caplog, kind, warns):
    mask = {"thin strokes": _stripes(1024, 5, 16),  # 31% missing, 100% after the conservative downscale
            "inverted": hole_mask(1024, inverted=True), "normal": hole_mask(1024)}[kind]
    mask.save(tmp_path / "mask.png")
    with caplog.at_level("WARNING", logger="maskgit_lib.data"):
        pixel_missing = data.load_mask(tmp_path / "mask.png", size=S)
    assert pixel_missing.shape == (S, S)
    if kind == "thin strokes":
        assert bool(pixel_missing.all())  # the downscaled mask alone would look inverted
    assert ("may be inverted" in caplog.text) == warns
    if warns:
        assert "mask.png marks 89% of pixels missing" in caplog.text
