"""Tests of maskgit_lib.data: image/mask loaders, their error messages, and the lab layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskgit_lib import data
from maskgit_lib.data import (ImageFolder, InpaintFolder, from_uint8, list_images, load_image, load_mask,
                              save_image, to_uint8)
from maskgit_lib.errors import DataError


def _rgb(path: Path, size=(64, 64), color=(10, 200, 30)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def _mask(path: Path, missing: np.ndarray) -> Path:
    Image.fromarray(np.where(missing, 0, 255).astype(np.uint8), "L").save(path)
    return path


def _stripe_missing(size=64, rows=16) -> np.ndarray:
    missing = np.zeros((size, size), dtype=bool)
    missing[:rows] = True
    return missing


@pytest.fixture
def lab_dir(tmp_path) -> Path:
    """A tiny dataset in the course lab's layout: train/, val/, masked_image/, mask64/."""
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        for i in range(3):
            _rgb(tmp_path / split / f"{i:05d}.jpg", color=(i * 50, 100, 200))
    (tmp_path / "masked_image").mkdir()
    (tmp_path / "mask64").mkdir()
    for i in range(3):
        _rgb(tmp_path / "masked_image" / f"image_{i:03d}.png")
        _mask(tmp_path / "mask64" / f"mask_{i:03d}.png", _stripe_missing(rows=8 * (i + 1)))
    return tmp_path


# ---- list_images ----------------------------------------------------------------------------------

def test_list_images_sorted_and_filtered(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.webp", "notes.txt", ".hidden.png"):
        _rgb(tmp_path / name) if name.lower().endswith((".png", ".jpg", ".webp")) else (tmp_path / name).write_text("x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]


def test_list_images_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope does not exist.*prepare-data"):
        list_images(tmp_path / "nope")
    _rgb(tmp_path / "one.png")
    with pytest.raises(DataError, match=r"one.png is a file, not a folder"):
        list_images(tmp_path / "one.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty holds no images; expected files ending in .png"):
        list_images(tmp_path / "empty")


# ---- load_image -----------------------------------------------------------------------------------

def test_load_image_bad_files(tmp_path):
    text = tmp_path / "fake.png"
    text.write_text("this is not a png")
    with pytest.raises(DataError, match=r"fake.png is not an image PIL can read"):
        load_image(text)
    empty = tmp_path / "zero.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"zero.png is empty \(0 bytes\)"):
        load_image(empty)
    good = _rgb(tmp_path / "good.png", size=(64, 64))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut.png is truncated or corrupt"):
        load_image(truncated)
    with pytest.raises(DataError, match=r"missing.png does not exist"):
        load_image(tmp_path / "missing.png")


def test_load_image_too_large(tmp_path, monkeypatch):
    _rgb(tmp_path / "big.png", size=(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=r"big.png is too large to decode safely"):
        load_image(tmp_path / "big.png")


def _check(image: torch.Tensor, size: int = 64) -> None:
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert image.min() >= -1.0 and image.max() <= 1.0


def test_load_image_any_size_and_mode(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 91, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(rng.integers(0, 255, (2000, 3000, 3), dtype=np.uint8)).save(tmp_path / "huge.jpg", quality=80)
    Image.new("RGBA", (80, 80), (255, 0, 0, 0)).save(tmp_path / "transparent.png")
    Image.new("L", (50, 50), 0).save(tmp_path / "gray.png")
    Image.fromarray(np.full((40, 40), 65535, dtype=np.uint16)).save(tmp_path / "white16.png")
    Image.new("1", (30, 30), 1).save(tmp_path / "bilevel.bmp")
    Image.new("P", (20, 20), 3).save(tmp_path / "palette.gif")
    Image.new("LA", (70, 70), (0, 255)).save(tmp_path / "gray_alpha.png")
    Image.new("CMYK", (64, 64), (0, 0, 0, 0)).save(tmp_path / "cmyk.tif")
    for path in sorted(tmp_path.iterdir()):
        _check(load_image(path))
    assert torch.allclose(load_image(tmp_path / "transparent.png"), torch.ones(3, 64, 64))  # alpha -> white
    assert torch.allclose(load_image(tmp_path / "white16.png"), torch.ones(3, 64, 64))  # 16-bit scaled, not clipped
    assert torch.allclose(load_image(tmp_path / "gray.png"), -torch.ones(3, 64, 64))
    assert torch.allclose(load_image(tmp_path / "gray_alpha.png"), -torch.ones(3, 64, 64))
    assert torch.allclose(load_image(tmp_path / "cmyk.tif"), torch.ones(3, 64, 64))
    _check(load_image(tmp_path / "wide.png", size=32), size=32)


def test_load_image_16bit_mid_gray(tmp_path):
    Image.fromarray(np.full((64, 64), 32896, dtype=np.uint16)).save(tmp_path / "mid16.png")  # 128 * 257
    assert torch.allclose(load_image(tmp_path / "mid16.png"), from_uint8(torch.tensor(128)).expand(3, 64, 64))


def test_load_image_center_crop(tmp_path):
    arr = np.zeros((64, 128, 3), dtype=np.uint8)
    arr[:, :32] = (255, 0, 0)
    arr[:, 32:96] = (0, 255, 0)
    arr[:, 96:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "bands.png")
    image = load_image(tmp_path / "bands.png")
    assert torch.allclose(image, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 64, 64))


def test_uint8_roundtrip_and_save_image(tmp_path):
    values = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(from_uint8(values)), values)
    image = from_uint8(torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(0)))
    path = save_image(image, tmp_path / "out" / "x.png")
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (64, 64)
    assert torch.equal(load_image(path), image)
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        save_image(image[None], tmp_path / "bad.png")


# ---- ImageFolder ----------------------------------------------------------------------------------

def test_image_folder_lazy_error_and_skip(tmp_path, caplog):
    arr = np.zeros((64, 64, 3), dtype=np.uint8)
    arr[:, :32] = 255
    Image.fromarray(arr).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("garbage")
    folder = ImageFolder(tmp_path)
    assert len(folder) == 2
    _check(folder[0])
    with pytest.raises(DataError, match=r"b.png is not an image"):
        folder[1]
    with caplog.at_level(logging.WARNING, logger="maskgit_lib.data"):
        skipping = ImageFolder(tmp_path, skip_unreadable=True)
    assert len(skipping) == 1 and "b.png" in caplog.text
    flips = ImageFolder(tmp_path, hflip=True, skip_unreadable=True, generator=torch.Generator().manual_seed(0))
    seen = {bool(flips[0][0, 0, 0] < 0) for _ in range(20)}
    assert seen == {True, False}  # both orientations occur


# ---- load_mask ------------------------------------------------------------------------------------

def test_load_mask_binary_and_threshold(tmp_path, caplog):
    missing = _stripe_missing()
    path = _mask(tmp_path / "m.png", missing)
    out = load_mask(path)
    assert out.dtype == torch.bool and out.shape == (64, 64) and torch.equal(out, torch.from_numpy(missing))
    soft = np.where(missing, 20, 240).astype(np.uint8)
    Image.fromarray(soft, "L").save(tmp_path / "soft.png")
    with pytest.raises(DataError, match=r"soft.png is not binary \(values 20, 240\).*threshold=True"):
        load_mask(tmp_path / "soft.png")
    assert torch.equal(load_mask(tmp_path / "soft.png", threshold=True), torch.from_numpy(missing))
    Image.fromarray(np.where(missing, 0, 255).astype(np.uint8), "L").convert("RGB").save(tmp_path / "rgb.png")
    assert torch.equal(load_mask(tmp_path / "rgb.png"), torch.from_numpy(missing))
    with caplog.at_level(logging.WARNING, logger="maskgit_lib.data"):
        load_mask(path)
        assert "inverted" not in caplog.text
        inverted = load_mask(_mask(tmp_path / "inv.png", ~missing))
    assert inverted.float().mean() == 0.75
    assert "inv.png" in caplog.text and "may be inverted" in caplog.text


def test_load_mask_resize_is_conservative(tmp_path):
    missing = np.zeros((128, 128), dtype=bool)
    missing[0, 0] = True  # one missing source pixel makes its whole 2x2 footprint missing
    small = load_mask(_mask(tmp_path / "big.png", missing), size=64)
    assert small.shape == (64, 64) and small[0, 0] and small.sum() == 1


# ---- InpaintFolder and the dataset helpers --------------------------------------------------------

def test_inpaint_folder_pairs_lab_layout(lab_dir):
    ds = InpaintFolder(lab_dir / "masked_image", lab_dir / "mask64")
    assert len(ds) == 3
    name, image, pixel_missing = ds[2]
    assert name == "image_002"
    _check(image)
    assert pixel_missing.dtype == torch.bool and pixel_missing.shape == (64, 64)
    assert pixel_missing.sum() == 24 * 64


def test_inpaint_folder_same_stem_and_resize(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    _rgb(tmp_path / "img" / "cat.jpg", size=(128, 128))
    _mask(tmp_path / "msk" / "cat.png", _stripe_missing(size=128, rows=32))
    name, image, pixel_missing = InpaintFolder(tmp_path / "img", tmp_path / "msk")[0]
    assert name == "cat" and image.shape == (3, 64, 64) and pixel_missing.sum() == 16 * 64


def test_inpaint_folder_errors(lab_dir, caplog):
    _rgb(lab_dir / "masked_image" / "image_003.png")
    with pytest.raises(DataError, match=r"image_003.png has no mask in .*mask64; expected a mask named mask_003.png"):
        InpaintFolder(lab_dir / "masked_image", lab_dir / "mask64")
    (lab_dir / "masked_image" / "image_003.png").unlink()
    _mask(lab_dir / "mask64" / "mask_000.png", _stripe_missing(size=32, rows=4))
    _mask(lab_dir / "mask64" / "mask_009.png", _stripe_missing())
    with caplog.at_level(logging.WARNING, logger="maskgit_lib.data"):
        ds = InpaintFolder(lab_dir / "masked_image", lab_dir / "mask64")
    assert "mask_009.png" in caplog.text
    with pytest.raises(DataError, match=r"mask_000.png is 32x32 but image .*image_000.png is 64x64"):
        ds[0]


def test_test_set_layouts(lab_dir, tmp_path_factory):
    ds = data.test_set(lab_dir)
    assert len(ds) == 3 and ds.gt_dir is None
    with pytest.raises(DataError, match="No ground-truth folder"):
        ds.ground_truth(0)
    assert len(ImageFolder(data.split_dir("train", lab_dir))) == 3
    with pytest.raises(DataError, match=r"prepare-data"):
        data.test_set(tmp_path_factory.mktemp("x") / "absent")
    with pytest.raises(DataError, match=r"has no test set"):
        data.test_set(lab_dir / "train")


def test_test_set_of_a_built_dataset(tmp_path):
    from maskgit_lib.data_prep import prepare_twemoji

    root = prepare_twemoji(tmp_path / "tw", limit=60, n_val=5, n_test=6)
    ds = data.test_set(root)
    assert len(ds) == 6 and ds.gt_dir == root / "test" / "gt"
    name, image, pixel_missing = ds[0]
    gt = ds.ground_truth(0)
    assert torch.equal(image[:, ~pixel_missing], gt[:, ~pixel_missing])
    assert torch.all(image[:, pixel_missing] == from_uint8(torch.tensor(128)))
    assert len(ImageFolder(data.split_dir("val", root))) == 5
