"""tools/check_notebooks.py: stripped notebooks, and figures that a cell builds but never displays."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_notebooks.py"
spec = importlib.util.spec_from_file_location("check_notebooks", TOOL)
check_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_notebooks)


def notebook(tmp_path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_the_figure_functions_are_read_from_viz():
    names = check_notebooks.figure_functions()
    assert {"show_images", "decoding_figure", "plot_schedules"} <= names and "image_grid" not in names


def test_a_figure_that_is_not_the_cells_value_is_reported(tmp_path):
    names = check_notebooks.figure_functions()
    lost = notebook(tmp_path, "%matplotlib inline\nviz.show_images(x)\nassert True", "fig = viz.show_images(x)\nfig",
                    "viz.plot_schedules()", "print(1)\nshow_images(y)\nz = 1")
    problems = check_notebooks.lost_figures(lost, names)
    assert [p.split(":")[0] for p in problems] == ["cell 0 line 2", "cell 3 line 2"], problems
    assert "show_images(...) returns a Figure that is never displayed" in problems[0]


def test_the_shipped_notebooks_display_every_figure():
    folder = TOOL.parent.parent / "notebooks"
    assert check_notebooks.main([str(folder)]) == 0
