"""Tests of maskgit_lib.sources and the --sources build: no npm, no network (synthetic tarballs in tmp_path)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskgit_lib import cli, data_prep, sources
from maskgit_lib.data_prep import match_key, prepare_twemoji, split_by_base, split_extra
from maskgit_lib.errors import ConfigError, DataError
from maskgit_lib.sources import Drawing

SMALL = dict(limit=150, n_val=12, n_test=24)


def _svg(radius: float, box: int = 72, fill: str = "#fcea2b") -> bytes:
    c = box / 2
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {box} {box}">'
            f'<circle cx="{c}" cy="{c}" r="{radius}" fill="{fill}" stroke="#000" stroke-width="{box / 36}"/>'
            '</svg>').encode()


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _openmoji_hex(twemoji_name: str) -> str:
    """Spell a Twemoji name the OpenMoji way: upper case, 4-digit code points, an FE0F after the first."""
    cps = [cp.upper().zfill(4) for cp in twemoji_name.split("-")]
    return "-".join(cps[:1] + (["FE0F"] if len(cps) == 1 else []) + cps[1:])


@pytest.fixture(scope="module")
def twemoji_splits() -> dict[str, list[str]]:
    names = sorted(p.stem for p in data_prep.twemoji_png_dir().glob("*.png"))[:SMALL["limit"]]
    return split_by_base(names, 0, SMALL["n_val"], SMALL["n_test"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory, twemoji_splits) -> Path:
    """Synthetic openmoji/fluent tarballs: each Twemoji split contributes drawings to both sources."""
    root = tmp_path_factory.mktemp("cache")
    chosen = {s: twemoji_splits[s][:4] for s in ("train", "val", "test")}
    meta, om_files, fl_files = [], {}, {}
    for split, names in chosen.items():
        for i, name in enumerate(names):
            hexcode = _openmoji_hex(name)
            om_files[f"color/svg/{hexcode}.svg"] = _svg(20 + i)
            meta.append({"hexcode": hexcode, "annotation": f"thing {split} {i}"})
            fl_files[f"icons/flat/thing-{split}-{i}.svg"] = _svg(12, box=32)
            fl_files[f"icons/modern/thing-{split}-{i}.svg"] = _svg(13, box=32, fill="#ffb02e")
    om_files["color/svg/E000.svg"] = _svg(25)  # an OpenMoji extra that Twemoji lacks -> train
    fl_files["icons/flat/no-such-emoji-anywhere.svg"] = _svg(10, box=32)  # maps to nothing -> skipped
    fl_files["icons/modern/no-such-emoji-anywhere.svg"] = _svg(10, box=32)
    om_files["data/openmoji.json"] = json.dumps(meta).encode()
    _tarball(sources.tarball_path("openmoji", root), om_files)
    _tarball(sources.tarball_path("fluent", root), fl_files)
    return root


@pytest.fixture(scope="module")
def build3(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("b3") / "emoji3"
    return prepare_twemoji(out, 0, sources=("twemoji", "openmoji", "fluent"), cache=cache, **SMALL)


def test_parse_sources():
    assert sources.parse_sources("fluent, twemoji,openmoji") == ("twemoji", "openmoji", "fluent")
    assert sources.parse_sources("twemoji") == ("twemoji",)
    with pytest.raises(ConfigError, match="unknown emoji source 'noto'"):
        sources.parse_sources("twemoji,noto")
    with pytest.raises(ConfigError, match="leaves out twemoji"):
        sources.parse_sources("openmoji")


@pytest.mark.parametrize("stem, cps", [
    ("waving-hand", "1f44b"),
    ("waving-hand-default", "1f44b"),
    ("waving-hand-medium-dark", "1f44b-1f3fe"),
    ("waving-hand-light", "1f44b-1f3fb"),
    ("man-bald-medium-light", "1f468-1f3fc-200d-1f9b2"),
    ("keycap-hash", "23-fe0f-20e3"),
    ("flag-united-states", "1f1fa-1f1f8"),
    ("1st-place-medal", "1f947"),
    ("no-such-emoji", None),
])
def test_fluent_name_to_codepoints(stem, cps):
    meta = json.dumps([
        {"hexcode": "1F44B", "annotation": "waving hand"},
        {"hexcode": "1F44B-1F3FE", "annotation": "waving hand: medium-dark skin tone"},
        {"hexcode": "1F468-1F3FC-200D-1F9B2", "annotation": "man: medium-light skin tone, bald"},
        {"hexcode": "1F468-200D-1F9B2", "annotation": "man: bald"},
        {"hexcode": "0023-FE0F-20E3", "annotation": "keycap: #"},
        {"hexcode": "1F1FA-1F1F8", "annotation": "flag: United States"},
        {"hexcode": "1F947", "annotation": "1st place medal"},
    ]).encode()
    table = sources.name_table(meta, {"keycap hash": "0023-FE0F-20E3"})
    assert sources.fluent_codepoints(stem, table) == cps


def test_emoji_data_fallback_names():
    names = sources.emoji_data_names()
    assert names and sources.slug("GRINNING FACE") in sources.name_table(None, names)


def test_normalize_and_match_key_across_spellings():
    assert sources.normalize_codepoints("0023-FE0F-20E3") == "23-fe0f-20e3"
    assert match_key("0023-FE0F-20E3") == match_key("23-20e3")
    assert match_key("1F44B-1F3FD") == match_key("1f44b")
    assert match_key("1F469-200D-1F373") == match_key("1f9d1-200d-1f373")


def test_rasterize_size_and_fill():
    small = _svg(18)  # a 36+stroke px disc in a 72 viewBox: raw side fill about 0.53
    raw = sources.raw_fill(small)
    assert 0.5 < raw < 0.56
    plain = data_prep._flatten(sources.rasterize(small, 1.0), 64)
    assert plain.size == (64, 64) and plain.mode == "RGB"
    assert abs(sources.fill_fraction(plain) - raw) < 0.05
    assert np.asarray(plain)[0, 0].tolist() == [255, 255, 255]  # composited on white
    zoom = sources.fit_zoom([raw], 0.95)
    fitted = data_prep._flatten(sources.rasterize(small, zoom), 64)
    assert 0.9 < sources.fill_fraction(fitted) <= 1.0
    big = data_prep._flatten(sources.rasterize(_svg(30), 3.0), 64)  # too much zoom is capped, never clipped
    assert np.asarray(big)[0, 0].tolist() == [255, 255, 255] and np.asarray(big)[63, 63].tolist() == [255, 255, 255]
    assert sources.fill_fraction(big) > 0.9


def test_split_extra_holds_out_twemoji_test_emoji(twemoji_splits):
    test_name = twemoji_splits["test"][0]
    drawings = [Drawing("openmoji", n, n, b"") for n in
                (_openmoji_hex(test_name), _openmoji_hex(twemoji_splits["val"][0]),
                 _openmoji_hex(twemoji_splits["train"][0]), "E000")]
    split = split_extra(twemoji_splits, drawings)
    assert [d.name for d in split["heldout"]] == [drawings[0].name]
    assert [d.name for d in split["val"]] == [drawings[1].name]
    assert sorted(d.name for d in split["train"]) == sorted([drawings[2].name, "E000"])


def test_cross_source_split_no_leak(build3, twemoji_splits):
    manifest = json.loads((build3 / "manifest.json").read_text())
    test_keys = {match_key(n) for n in manifest["splits"]["test"]}
    assert manifest["splits"] == twemoji_splits  # the Twemoji split is today's
    extra = manifest["extra_sources"]
    assert set(extra) == {"openmoji", "fluent"}
    for source, info in extra.items():
        train = [p.stem for p in (build3 / "train").glob(f"{source}_*.png")]
        val = [p.stem for p in (build3 / f"val_{source}").glob("*.png")]
        assert len(train) == info["counts"]["train"] and len(val) == info["counts"]["val"] > 0
        names = [n.split("_")[-1] for n in train + val]
        assert not {match_key(n) for n in names} & test_keys  # no Twemoji test emoji in train or val
        held = (build3 / "heldout" / source / "names.txt").read_text().split()
        assert held == info["splits"]["heldout"] and {match_key(n.split("_")[-1]) for n in held} <= test_keys
        assert len(list((build3 / "heldout" / source / "mask64").glob("mask_*.png"))) == len(held) > 0
    assert extra["openmoji"]["counts"] == {"train": 5, "val": 4, "heldout": 4}  # E000 (no Twemoji) -> train
    assert extra["fluent"]["counts"] == {"train": 8, "val": 8, "heldout": 8}  # flat + modern
    assert extra["fluent"]["unmapped"] == ["flat/no-such-emoji-anywhere", "modern/no-such-emoji-anywhere"]
    image = Image.open(build3 / "heldout" / "fluent" / "masked_image" / "image_000.png")
    assert image.mode == "RGB" and image.size == (64, 64)
    assert not list(build3.parent.glob(".emoji3*"))


def test_extra_build_keeps_twemoji_bytes_and_is_idempotent(build3, tmp_path, cache, caplog):
    plain = prepare_twemoji(tmp_path / "plain", 0, **SMALL)
    for sub in ("val", "test/gt", "test/masked_image", "test/mask64"):
        for path in (plain / sub).glob("*.png"):
            assert path.read_bytes() == (build3 / sub / path.name).read_bytes()
    for path in (plain / "train").glob("*.png"):
        assert path.read_bytes() == (build3 / "train" / path.name).read_bytes()
    stamp = (build3 / "manifest.json").stat().st_mtime_ns
    prepare_twemoji(build3, 0, sources=("twemoji", "openmoji", "fluent"), cache=cache, **SMALL)
    assert (build3 / "manifest.json").stat().st_mtime_ns == stamp  # cached tarballs, finished build: no work
    default_manifest = json.loads((plain / "manifest.json").read_text())
    assert "extra_sources" not in default_manifest and "sources" not in default_manifest


def test_missing_npm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match=r"^npm is not installed; --sources openmoji needs it once"):
        sources.fetch_tarball("openmoji", tmp_path)
    monkeypatch.setenv("MASKGIT_CACHE", str(tmp_path / "c"))
    assert cli.main(["prepare-data", "--out", str(tmp_path / "d"), "--limit", "40",
                     "--sources", "twemoji,fluent"]) == 2
    assert not (tmp_path / "d").exists()


def test_cli_unknown_source(tmp_path):
    assert cli.main(["prepare-data", "--out", str(tmp_path / "d"), "--sources", "twemoji,noto"]) == 2
