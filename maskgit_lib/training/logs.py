"""The training log: an append-only CSV that survives resumes, and its curves as a PNG.

:class:`CsvLogger` writes ``log.csv`` (one row per log interval and per
validation), :func:`read_csv` reads it back skipping half-written lines, and
:func:`plot_curves` (:func:`curves_figure`) draws every numeric column that varies against ``step`` into
``curves.png`` (matplotlib, imported only when a plot is drawn).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from ..outputs import atomic_write


class CsvLogger:
    """Append-only CSV of training rows, safe across resumes.

    On a resume, rows logged after the checkpoint (``step > resume_step``) are
    dropped, so the file reads as if the run had never been interrupted; a
    half-written last line (a crash mid-write) is dropped too. A file with
    another header is moved aside to ``log.<n>.csv``. Disabled loggers (ranks
    other than 0) do nothing.

    Args:
        path: the CSV file.
        fieldnames: columns; must include ``step``.
        resume_step: keep existing rows up to this step; None starts a new file.
        enabled: write at all.
    """

    def __init__(self, path: Path, fieldnames: Sequence[str], *, resume_step: int | None, enabled: bool = True) -> None:
        self.path, self.fieldnames, self.enabled = Path(path), list(fieldnames), enabled
        if not enabled:
            return
        kept: list[dict[str, str]] = []
        if resume_step is not None and self.path.exists():
            header, rows = read_csv(self.path)
            if header == self.fieldnames:
                kept = [r for r in rows if int(float(r["step"])) <= resume_step]
            else:
                n = 1
                while self.path.with_name(f"{self.path.stem}.{n}.csv").exists():
                    n += 1
                self.path.rename(self.path.with_name(f"{self.path.stem}.{n}.csv"))
        self._filled = {(int(float(r["step"])), k) for r in kept for k, v in r.items() if v not in (None, "")}
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write(self.path, lambda tmp: tmp.write_text(text.getvalue()))

    def has_value(self, step: int, column: str) -> bool:
        """Whether a row of ``step`` with a value in ``column`` is in the file (kept or logged)."""
        return self.enabled and (step, column) in self._filled

    def log(self, row: dict[str, Any]) -> None:
        """Append one row (missing columns stay empty; floats with 6 significant digits)."""
        if not self.enabled:
            return
        unknown = set(row) - set(self.fieldnames)
        if unknown:
            raise ValueError(f"CSV row has columns {sorted(unknown)} not in {self.fieldnames}")
        out = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.fieldnames, lineterminator="\n").writerow(out)
        self._filled.update((int(row["step"]), k) for k, v in row.items() if v is not None)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and well-formed rows of a CSV log (rows with a bad ``step`` are skipped)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                continue
            try:
                int(float(row["step"]))
            except (KeyError, ValueError):
                continue
            rows.append(row)
    return header, rows


FRACTION_METRICS = ("acc", "usage", "mask_ratio")  # columns (also val_*) that are fractions in [0, 1]


def _is_fraction(key: str) -> bool:
    return any(key.removeprefix("val_").endswith(name) for name in FRACTION_METRICS)


def _fraction_ylim(ys: Sequence[float], min_span: float = 0.05) -> tuple[float, float]:
    """A y range of at least ``min_span`` around values in [0, 1], kept inside [0, 1] plus a small margin."""
    lo, hi = min(ys), max(ys)
    pad = max(0.0, min_span - (hi - lo)) / 2
    lo, hi = lo - pad, hi + pad
    if hi > 1.0:
        lo, hi = lo - (hi - 1.0), 1.0
    if lo < 0.0:
        lo, hi = 0.0, hi - lo
    margin = 0.03 * (hi - lo)
    return lo - margin, hi + margin


def plot_curves(csv_path: Path, png_path: Path, title: str = "") -> Path | None:
    """Plot the numeric CSV columns that vary against ``step`` into one PNG (:func:`curves_figure`).

    Returns:
        ``png_path``, or None if the log has no rows yet (or nothing varies).
    """
    fig = curves_figure(csv_path, title)
    return None if fig is None else atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))


def curves_figure(csv_path: Path, title: str = ""):
    """The figure of :func:`plot_curves`: one panel per numeric column that varies, against ``step`` (no pyplot).

    A column whose values are all equal (within 1e-12, two rows or more) gets no panel; the figure's footer names
    it and its value. Fractions (``*acc``, ``*usage``, ``mask_ratio``) get a y range of at least 0.05, so that
    noise around 0.999 does not fill a panel as if it were a collapse.

    Returns:
        a matplotlib ``Figure``, or None if the log has no rows yet (or nothing varies).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: only when a plot is drawn
    from matplotlib.figure import Figure

    header, rows = read_csv(Path(csv_path))
    series, constant = {}, {}
    for key in header:
        if key in ("step", "epoch", "elapsed_s"):
            continue
        pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        finite = [y for _, y in pts if math.isfinite(y)]
        if len(pts) >= 2 and len(finite) == len(pts) and max(finite) - min(finite) <= 1e-12:
            constant[key] = finite[0]
        elif pts:
            series[key] = pts
    if not series:
        return None
    cols = min(3, len(series))
    nrows = math.ceil(len(series) / cols)
    fig = Figure(figsize=(4.2 * cols, 2.8 * nrows + (0.4 if title else 0) + (0.3 if constant else 0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    for i, (key, pts) in enumerate(series.items()):
        ax = fig.add_subplot(nrows, cols, i + 1)
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if key.startswith("val_") and len(xs) < 30 else None, ms=3)
        finite = [y for y in ys if math.isfinite(y)]
        if finite and all(y > 0 for y in finite) and key in ("loss", "lr") and max(finite) > 20 * min(finite):
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(axis="y", useOffset=False)
        if finite and _is_fraction(key) and all(0.0 <= y <= 1.0 for y in finite):
            ax.set_ylim(*_fraction_ylim(finite))
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    if constant:
        fig.supxlabel("constant, not drawn: " + ", ".join(f"{k} = {v:.6g}" for k, v in constant.items()), fontsize=8)
    return fig
