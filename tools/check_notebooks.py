"""Fail if any notebook is stored with outputs or execution counts.

Usage: python tools/check_notebooks.py notebooks/
Notebooks are committed stripped (docs/architecture.md, "Notebooks"); run
``python tools/check_notebooks.py --strip notebooks/`` to strip them in place.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def dirty_cells(path: Path) -> list[int]:
    """Return indices of code cells that carry outputs or an execution count."""
    nb = nbformat.read(path, as_version=4)
    return [
        i for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


def strip(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)


def main(argv: list[str]) -> int:
    do_strip = "--strip" in argv
    folders = [Path(a) for a in argv if a != "--strip"] or [Path("notebooks")]
    notebooks = sorted(p for f in folders for p in f.glob("*.ipynb"))
    bad = 0
    for nb_path in notebooks:
        if do_strip:
            strip(nb_path)
            continue
        cells = dirty_cells(nb_path)
        if cells:
            bad += 1
            print(f"{nb_path}: cells {cells} carry outputs; strip with: python tools/check_notebooks.py --strip {nb_path.parent}")
    if not do_strip:
        print(f"checked {len(notebooks)} notebook(s): {'all stripped' if not bad else f'{bad} not stripped'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
