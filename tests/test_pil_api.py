"""The diffusers-style API: ``Inpainter.__call__`` on PIL/numpy/tensors at the input's own size,
the [0, 1] range refusal, mask polarity warnings, and ``maskgit inpaint --size / --mask-convention``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import maskgit_lib
from maskgit_lib import inpaint as inpaint_module
from maskgit_lib import paths
from maskgit_lib.cli import main
from maskgit_lib.data import from_uint8
from maskgit_lib.errors import ConfigError, DataError
from maskgit_lib.inpaint import Inpainter, InpaintSettings

S = 64
W, H = 200, 300
MAGENTA = np.array([255, 0, 255], np.uint8)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def inpainter(ckpts) -> Inpainter:
    return Inpainter.from_checkpoints(ckpts / paths.VQGAN_CHECKPOINT_NAME, ckpts / paths.TRANSFORMER_CHECKPOINT_NAME,
                                      device="cpu")


def rgba_image(seed: int = 0) -> Image.Image:
    """A 200x300 RGBA image: smooth colours, partly transparent."""
    yy, xx = np.mgrid[:H, :W]
    rgb = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) * 255 // (W + H)], -1).astype(np.uint8)
    alpha = np.where((xx // 25 + yy // 25 + seed) % 3 == 0, 90, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def on_white(image: Image.Image) -> np.ndarray:
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, image).convert("RGB"))


def white_hole_mask(where: str) -> Image.Image:
    """diffusers-style mask (255 = hole) of about 30 %: inside the centre square, or at the top and bottom."""
    hole = np.zeros((H, W), bool)
    if where == "centre":
        hole[100:220, 20:180] = True  # 32 %, inside the centred 200x200 square (rows 50..250)
    else:
        hole[:45], hole[255:] = True, True  # 30 %, all outside the centre crop
    return Image.fromarray(np.where(hole, 255, 0).astype(np.uint8), "L")


@pytest.mark.parametrize("where", ["centre", "outside the centre crop"])
def test_rgba_200x300_with_a_white_is_hole_mask_comes_back_at_its_size(inpainter, where):
    image, mask = rgba_image(), white_hole_mask(where)
    hole = np.asarray(mask) == 255
    assert 0.28 < hole.mean() < 0.34
    out = inpainter(image, mask, mask_convention="white_is_hole", steps=2)
    assert isinstance(out, Image.Image) and out.size == (W, H) and out.mode == "RGB"
    pixels, expected = np.asarray(out), on_white(image)
    assert np.array_equal(pixels[~hole], expected[~hole])  # every known pixel byte-identical
    assert not np.array_equal(pixels[hole], expected[hole])  # the holes were filled


def test_holes_get_new_values_even_under_a_placeholder(inpainter):
    rgb = on_white(rgba_image()).copy()
    hole = np.asarray(white_hole_mask("outside")) == 255
    rgb[hole] = MAGENTA
    out = np.asarray(inpainter(rgb, hole, steps=2))  # numpy uint8 image, bool mask: True = missing
    assert out.shape == (H, W, 3) and np.array_equal(out[~hole], rgb[~hole])
    assert (out[hole] != MAGENTA).any(axis=-1).mean() > 0.5  # the placeholder was painted over


def test_list_in_list_out_and_inputs_of_every_kind(inpainter, tmp_path):
    image = on_white(rgba_image())
    lab_mask = np.where(np.asarray(white_hole_mask("centre")) == 255, 0, 255).astype(np.uint8)  # lab: 0 = missing
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(lab_mask).save(tmp_path / "mask.png")
    small = np.array(Image.fromarray(image).resize((S, S)))
    small_mask = np.full((S, S), 255, np.uint8)
    small_mask[20:40, 10:50] = 0
    outs = inpainter([Image.fromarray(image), tmp_path / "image.png", torch.from_numpy(small).permute(2, 0, 1)],
                     [Image.fromarray(lab_mask), str(tmp_path / "mask.png"), torch.from_numpy(small_mask)], steps=2)
    assert isinstance(outs, list) and [o.size for o in outs] == [(W, H), (W, H), (S, S)]
    known = lab_mask == 255
    for out in outs[:2]:
        assert np.array_equal(np.asarray(out)[known], image[known])
    from_path = inpainter(tmp_path / "image.png", str(tmp_path / "mask.png"), steps=2)
    from_pil = inpainter(Image.fromarray(image), Image.fromarray(lab_mask), steps=2)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_pil))  # same input, same seed: same output
    assert np.array_equal(np.asarray(outs[2])[small_mask == 255], small[small_mask == 255])
    assert inpainter([], []) == []
    with pytest.raises(DataError, match="got 1 images and one mask; pass one image with one mask, or a list"):
        inpainter([image], lab_mask)
    with pytest.raises(DataError, match="got one image and a list of masks; pass one image"):
        inpainter(image, [lab_mask])
    with pytest.raises(DataError, match="got 1 images and 2 masks; "):
        inpainter([image], [lab_mask, lab_mask])
    with pytest.raises(DataError, match="the mask is 64x64 but the image is 200x300"):
        inpainter(image, small_mask)
    with pytest.raises(ConfigError, match=r"unknown inpainting setting\(s\) \['stepz'\]"):
        inpainter(image, lab_mask, stepz=2)
    with pytest.raises(ConfigError, match="mask_convention must be 'lab'"):
        inpainter(image, lab_mask, mask_convention="black_is_hole")


def test_a_64x64_call_equals_the_tensor_api(inpainter):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    missing = np.zeros((S, S), bool)
    missing[10:30, 20:50] = True
    out = inpainter(image, missing, steps=2, seed=5)
    tensor = inpainter.inpaint(from_uint8(torch.from_numpy(image).permute(2, 0, 1))[None],
                               torch.from_numpy(missing)[None], InpaintSettings(steps=2, seed=5))
    assert np.array_equal(np.asarray(out), maskgit_lib.data.to_uint8(tensor.images[0]).permute(1, 2, 0).numpy())


# ----------------------------------------------------------------------------- range and polarity checks


def test_zero_one_floats_are_refused_with_the_conversion(inpainter):
    g = torch.Generator().manual_seed(0)
    images01 = torch.rand(2, 3, S, S, generator=g) * 0.98  # what torchvision's ToTensor gives
    missing = torch.zeros(2, S, S, dtype=torch.bool)
    missing[:, 20:40, 20:40] = True
    with pytest.raises(DataError) as exc:
        inpainter.inpaint(images01, missing, InpaintSettings(steps=2))
    message = str(exc.value)
    assert message.startswith("images look like [0, 1] floats (min 0.0, max 0.98); the library expects [-1, 1]: "
                              "pass images * 2 - 1 (or uint8 through maskgit_lib.data.from_uint8)")
    with pytest.raises(DataError, match=r"look like \[0, 255\] floats .* pass images / 127.5 - 1"):
        inpainter.inpaint(images01 * 255, missing, InpaintSettings(steps=2))
    with pytest.raises(DataError, match=r"look like \[0, 1\] floats"):
        inpainter(images01[0], missing[0].numpy())
    inpainter.inpaint(images01 * 2 - 1, missing, InpaintSettings(steps=1))  # the fix works


def test_valid_images_that_happen_to_be_nonnegative_are_accepted(inpainter):
    missing = torch.zeros(2, S, S, dtype=torch.bool)
    missing[:, 20:40, 20:40] = True
    white = torch.ones(2, 3, S, S).where(~missing[:, None], torch.tensor(0.3))  # white + any hole content
    inpainter.inpaint(white, missing, InpaintSettings(steps=1))
    pale = from_uint8(torch.randint(128, 256, (2, 3, S, S), generator=torch.Generator().manual_seed(1),
                                    dtype=torch.uint8))  # a pale image loaded by the library: 8-bit levels
    assert float(pale.min()) >= 0
    inpainter.inpaint(pale, missing, InpaintSettings(steps=1))
    inpainter.inpaint(torch.zeros(2, 3, S, S), missing, InpaintSettings(steps=1))  # flat mid-gray


def test_an_inverted_looking_mask_warns_with_the_other_convention(inpainter, caplog):
    image = on_white(rgba_image())
    hole = np.zeros((H, W), np.uint8)
    hole[:60] = 255  # 20 % white = hole (diffusers); read in the lab convention 80 % would be missing
    diffusers_mask = Image.fromarray(hole, "L")
    with caplog.at_level("WARNING", logger="maskgit_lib.pil_io"):
        inpainter(image, diffusers_mask, steps=1)
    assert "marks 80% of pixels missing" in caplog.text and 'mask_convention="white_is_hole"' in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="maskgit_lib.pil_io"):
        inpainter(image, diffusers_mask, mask_convention="white_is_hole", steps=1)
    assert "may be inverted" not in caplog.text
    with caplog.at_level("WARNING", logger="maskgit_lib.pil_io"):
        inpainter(image, Image.fromarray(255 - hole, "L"), mask_convention="white_is_hole", steps=1)
    assert 'mask_convention="lab"' in caplog.text


# ----------------------------------------------------------------------------- the one-liner, import cost


def test_import_maskgit_lib_stays_light_and_inpaint_image_is_lazy(ckpts, monkeypatch):
    code = "import sys, maskgit_lib; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    monkeypatch.setenv("MASKGIT_CHECKPOINTS", str(ckpts))
    inpaint_module._shipped_inpainter.cache_clear()
    try:
        image = on_white(rgba_image())
        mask = white_hole_mask("centre")
        out = maskgit_lib.inpaint_image(image, mask, mask_convention="white_is_hole", steps=1)
        assert out.size == (W, H)
        maskgit_lib.inpaint_image(image, mask, mask_convention="white_is_hole", steps=1)
        assert inpaint_module._shipped_inpainter.cache_info().hits == 1  # loaded once
    finally:
        inpaint_module._shipped_inpainter.cache_clear()
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        maskgit_lib.nope  # noqa: B018


# ----------------------------------------------------------------------------- CLI: --size, --mask-convention


def lab_pairs(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> tuple[Path, Path]:
    (root / "masked_image").mkdir(parents=True)
    (root / "mask64").mkdir()
    for name, image in images.items():
        Image.fromarray(image).save(root / "masked_image" / f"image_{name}.png")
        Image.fromarray(masks[name], "L").save(root / "mask64" / f"mask_{name}.png")
    return root / "masked_image", root / "mask64"


def models(ckpts: Path) -> list[str]:
    return ["--vqgan-checkpoint", str(ckpts / paths.VQGAN_CHECKPOINT_NAME), "--transformer-checkpoint",
            str(ckpts / paths.TRANSFORMER_CHECKPOINT_NAME), "--device", "cpu", "--steps", "2", "--batch-size", "2"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_cli_size_input_and_64_are_byte_identical_on_64x64_lab_images(tmp_path, ckpts, capsys):
    rng = np.random.default_rng(3)
    lab_masks = {}
    for i in range(3):
        m = np.full((S, S), 255, np.uint8)
        m[10 + 5 * i:40, 8:30 + 6 * i] = 0
        lab_masks[f"{i:03d}"] = m
    lab_masks["003"] = np.full((S, S), 255, np.uint8)  # empty mask: copied through
    images = {k: rng.integers(0, 256, (S, S, 3), dtype=np.uint8) for k in lab_masks}
    img_dir, mask_dir = lab_pairs(tmp_path / "lab", images, lab_masks)
    code_a, out_a, _ = run(capsys, "inpaint", "--images", img_dir, "--masks", mask_dir, "--out", tmp_path / "a",
                           *models(ckpts))
    code_b, _, _ = run(capsys, "inpaint", "--images", img_dir, "--masks", mask_dir, "--out", tmp_path / "b",
                       "--size", "64", *models(ckpts))
    assert code_a == code_b == 0 and "Inpainted 4 image(s)" in out_a
    for name in lab_masks:
        a = (tmp_path / "a" / f"image_{name}.png").read_bytes()
        assert a == (tmp_path / "b" / f"image_{name}.png").read_bytes()
    # the same holes as a white_is_hole mask folder: the same bytes
    inverted = {k: 255 - m for k, m in lab_masks.items()}
    img2, mask2 = lab_pairs(tmp_path / "diffusers", images, inverted)
    code, _, _ = run(capsys, "inpaint", "--images", img2, "--masks", mask2, "--out", tmp_path / "c",
                     "--mask-convention", "white_is_hole", *models(ckpts))
    assert code == 0
    for name in lab_masks:
        same = (tmp_path / "c" / f"image_{name}.png").read_bytes() == (tmp_path / "a" / f"image_{name}.png").read_bytes()
        assert same


def test_cli_writes_other_sizes_at_the_input_size_unless_told(tmp_path, ckpts, capsys, caplog):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    mask = np.full((80, 96), 255, np.uint8)
    mask[30:50, 5:40] = 0
    inverted = np.zeros((80, 96), np.uint8)
    inverted[:10] = 255  # 88 % "missing" in the lab convention
    img_dir, mask_dir = lab_pairs(tmp_path / "lab", {"000": image, "001": image}, {"000": mask, "001": inverted})
    with caplog.at_level("WARNING", logger="maskgit_lib.data"):
        code, _, _ = run(capsys, "inpaint", "--images", img_dir, "--masks", mask_dir, "--out", tmp_path / "a",
                         *models(ckpts))
    assert code == 0 and "--mask-convention white_is_hole" in caplog.text and "mask_001.png marks 88%" in caplog.text
    out = np.asarray(Image.open(tmp_path / "a" / "image_000.png"))
    assert out.shape == (80, 96, 3) and np.array_equal(out[mask == 255], image[mask == 255])
    for size, side in (("64", 64), ("100", 100)):
        code, _, _ = run(capsys, "inpaint", "--images", img_dir, "--masks", mask_dir, "--out", tmp_path / size,
                         "--size", size, *models(ckpts))
        assert code == 0 and Image.open(tmp_path / size / "image_000.png").size == (side, side)
    with pytest.raises(SystemExit):
        main(["inpaint", "--images", "a", "--masks", "b", "--out", str(tmp_path / "o"), "--size", "0"])
    assert "argument --size: must be 'input' or a side in pixels >= 1, got '0'" in capsys.readouterr().err
