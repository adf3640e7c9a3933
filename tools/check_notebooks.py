"""Fail if any notebook is stored with outputs or execution counts, or would lose a figure.

A figure is lost when a cell calls a ``maskgit_lib.viz`` function that returns a
matplotlib ``Figure`` as a bare statement that is not the cell's last one: the
library never shows figures itself (they are returned), so such a figure is built and
thrown away. The functions are found by reading ``maskgit_lib/viz.py`` (every function
annotated ``-> Figure``).

Usage: python tools/check_notebooks.py notebooks/
Notebooks are committed stripped (docs/architecture.md, "Notebooks"); run
``python tools/check_notebooks.py --strip notebooks/`` to strip them in place.
"""

from __future__ import annotations

import ast
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


VIZ = Path(__file__).resolve().parent.parent / "maskgit_lib" / "viz.py"


def figure_functions(viz: Path = VIZ) -> set[str]:
    """Names of the functions in ``viz`` annotated to return a ``Figure``."""
    tree = ast.parse(viz.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.returns is not None
            and ast.unparse(n.returns).split(".")[-1] == "Figure"}


def lost_figures(path: Path, names: set[str]) -> list[str]:
    """``cell C line L: name(...)`` for every figure built by a bare, non-final statement."""
    nb = nbformat.read(path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
        try:
            body = ast.parse(source).body
        except SyntaxError:
            continue
        for stmt in body[:-1]:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                func = stmt.value.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in names:
                    problems.append(f"cell {i} line {stmt.lineno}: {name}(...) returns a Figure that is never "
                                    "displayed (not the cell's last expression); assign it and display() it")
    return problems


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
    bad = lost = 0
    names = figure_functions()
    for nb_path in notebooks:
        if do_strip:
            strip(nb_path)
            continue
        cells = dirty_cells(nb_path)
        if cells:
            bad += 1
            print(f"{nb_path}: cells {cells} carry outputs; strip with: python tools/check_notebooks.py --strip {nb_path.parent}")
        for problem in lost_figures(nb_path, names):
            lost += 1
            print(f"{nb_path}: {problem}")
    if not do_strip:
        print(f"checked {len(notebooks)} notebook(s): {'all stripped' if not bad else f'{bad} not stripped'}; "
              f"{lost} figure(s) never displayed")
    return 1 if bad or lost else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
