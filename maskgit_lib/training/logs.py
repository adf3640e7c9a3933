"""The training log: an append-only CSV that survives resumes, and its curves as a PNG.

:class:`CsvLogger` writes ``log.csv`` (one row per log interval and per
validation), :func:`read_csv` reads it back skipping half-written lines, and
:func:`plot_curves` draws every numeric column against ``step`` into
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


def plot_curves(csv_path: Path, png_path: Path, title: str = "") -> Path | None:
    """Plot every numeric CSV column against ``step`` into one PNG (matplotlib, no pyplot).

    Returns:
        ``png_path``, or None if the log has no rows yet.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: only when a plot is drawn
    from matplotlib.figure import Figure

    header, rows = read_csv(Path(csv_path))
    series = {}
    for key in header:
        if key in ("step", "epoch", "elapsed_s"):
            continue
        pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if pts:
            series[key] = pts
    if not series:
        return None
    cols = min(3, len(series))
    nrows = math.ceil(len(series) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * nrows))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.12 / nrows, top=1 - 0.12 / nrows, hspace=0.55, wspace=0.3)
    for i, (key, pts) in enumerate(series.items()):
        ax = fig.add_subplot(nrows, cols, i + 1)
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if key.startswith("val_") and len(xs) < 30 else None, ms=3)
        positive = all(y > 0 for y in ys if math.isfinite(y))
        if positive and key in ("loss", "lr") and max(ys) > 20 * min(ys):
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
