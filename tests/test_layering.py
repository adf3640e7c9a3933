"""Keep ``maskgit_lib`` layered: imports go one way, down the layers of ``LAYERS``.

Every ``.py`` file of the package is parsed with ``ast`` (nothing is imported). A module is
named relative to the package (``training/loop.py`` is ``training.loop``, a subpackage's
``__init__.py`` is ``training``, the package's own is ``__init__``). The rules:

1. a module may import modules of its own layer or a lower one, never a higher one;
2. no import cycles among the package's modules (top-level and function-local imports);
3. no function-local import of a ``maskgit_lib`` module outside ``cli`` (``cli`` imports
   commands lazily so ``maskgit --help`` stays fast; elsewhere, import at the top);
4. no ``print(`` outside ``cli`` (library code logs or returns; only the CLI talks);
5. every module is listed in ``LAYERS``;
6. no module is longer than ``MAX_LINES`` lines (split it).

Placing a new module: add its name to the LOWEST layer that holds everything it imports
(``"pkg.*"`` already covers every module of subpackage ``pkg``). If it must import something
from a higher layer, it belongs in that layer or higher -- or the shared code should move down.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "maskgit_lib"
MAX_LINES = 450
CLI = "cli"

LAYERS = [  # lowest first
    ("foundations", ["__init__", "errors", "paths", "config", "runtime", "outputs", "checkpoint"]),
    ("data", ["data", "masks", "views", "sources", "data_prep", "lab_files", "pil_io"]),
    ("algorithms", ["attention", "quantizer", "discriminator", "masking", "prefill", "blend"]),
    ("models", ["transformer", "vqgan", "decoding", "viz"]),
    ("api", ["inpaint", "folders", "widgets", "paint"]),
    ("training", ["training", "training.*"]),
    ("evaluation", ["evaluation", "evaluation.*"]),
    ("cli", ["cli", "cli.*"]),
]


@dataclasses.dataclass(frozen=True)
class Import:
    target: str  # module name relative to the package, e.g. "errors" or "training.loop"
    lineno: int
    local: bool  # inside a def/class body


@dataclasses.dataclass
class Module:
    name: str
    path: str  # for messages, e.g. "maskgit_lib/training/loop.py"
    n_lines: int
    imports: list[Import]
    prints: list[int]  # line numbers of print( calls


def _dotted(parts) -> str:
    return ".".join(parts) or "__init__"


SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _targets(node, package: str, pkg_name: str, names: dict) -> list[str]:
    """Package modules an import statement names (``package``: the importer's package)."""
    if isinstance(node, ast.Import):
        return [_dotted(a.name.split(".")[1:]) for a in node.names
                if a.name == pkg_name or a.name.startswith(pkg_name + ".")]
    module = node.module.split(".") if node.module else []
    if node.level:
        pkg_parts = package.split(".") if package else []
        if node.level - 1 > len(pkg_parts):
            return []  # beyond the package: not ours
        base = pkg_parts[: len(pkg_parts) - (node.level - 1)] + module
    elif module[:1] == [pkg_name]:
        base = module[1:]
    else:
        return []
    # `from .x import y`: y is a submodule if x/y.py (or x/y/) exists, else an attribute of x
    wanted = [_dotted(base + [a.name]) for a in node.names]
    return sorted({w if w in names else _dotted(base) for w in wanted})


def module_files(root: Path) -> dict[str, Path]:
    """Every module under ``root`` (a package directory), keyed by its dotted name."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names[_dotted(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def scan_package(root: Path) -> dict[str, Module]:
    names, modules = module_files(root), {}
    for name, path in names.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        local = {id(n) for scope in ast.walk(tree) if isinstance(scope, SCOPES) for n in ast.walk(scope)}
        nodes = sorted((n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))),
                       key=lambda n: n.lineno)
        prints = sorted(n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                        and isinstance(n.func, ast.Name) and n.func.id == "print")
        is_pkg = path.name == "__init__.py"
        package = ("" if name == "__init__" else name) if is_pkg else name.rpartition(".")[0]
        imports = [Import(t, node.lineno, id(node) in local) for node in nodes
                   for t in _targets(node, package, root.name, names)]
        modules[name] = Module(name, f"{root.name}/{path.relative_to(root).as_posix()}",
                               len(text.splitlines()), imports, prints)
    return modules


def collect_imports(root: Path) -> dict[str, list[Import]]:
    return {name: m.imports for name, m in scan_package(root).items()}


def layer_of(name: str, layers) -> int | None:
    for index, (_, entries) in enumerate(layers):
        for entry in entries:
            if entry == name or (entry.endswith(".*") and name.startswith(entry[:-1])):
                return index
    return None


def _in_cli(name: str) -> bool:
    return name == CLI or name.startswith(CLI + ".")


def _cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module, sorted."""
    graph = {n: {i.target for i in m.imports if i.target in modules} for n, m in modules.items()}
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            new = graph[todo.pop()] - seen
            seen |= new
            todo += sorted(new)
        reach[start] = seen
    components = {tuple(sorted(w for w in reach[v] if v in reach[w])) for v in graph}
    return sorted(list(c) for c in components if len(c) > 1)


def _loop(start: str, component: list[str], modules: dict[str, Module]) -> str:
    """One concrete import loop from ``start`` back to it inside ``component``, with lines."""
    paths = {start: []}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for imp in modules[v].imports:
            step = f"{modules[v].path}:{imp.lineno} imports {imp.target}"
            if imp.target == start:
                return "; ".join(paths[v] + [step])
            if imp.target in component and imp.target not in paths:
                paths[imp.target] = paths[v] + [step]
                queue.append(imp.target)
    return ""


def layering_problems(root: Path, layers=LAYERS, max_lines: int = MAX_LINES) -> list[str]:
    modules = scan_package(root)
    problems = []
    for name, m in sorted(modules.items()):
        own = layer_of(name, layers)
        if own is None:
            problems.append(f"{m.path}: module '{name}' is in no layer: add it to the list of the "
                            f"layer it belongs to in LAYERS (tests/test_layering.py), "
                            f"e.g. the lowest one holding everything it imports")
        for imp in m.imports:
            target = layer_of(imp.target, layers)
            if own is not None and target is not None and target > own:
                problems.append(f"{m.path}:{imp.lineno}: upward import: '{name}' ({layers[own][0]}) "
                                f"imports '{imp.target}' ({layers[target][0]}): move the shared code down")
            if imp.local and not _in_cli(name):
                problems.append(f"{m.path}:{imp.lineno}: function-local import of '{imp.target}' "
                                f"outside cli: import it at the top of the module")
        if not _in_cli(name):
            problems += [f"{m.path}:{line}: print( outside cli: log or return instead" for line in m.prints]
        if m.n_lines > max_lines:
            problems.append(f"{m.path}: {m.n_lines} lines, over {max_lines}: split the module")
    for component in _cycles(modules):
        problems.append(f"import cycle among {', '.join(component)}: "
                        f"{_loop(component[0], component, modules)}")
    return problems


def layer_map_problems(layers, names=()) -> list[str]:
    """Entries listed twice, and modules (of ``names``) that two layers' entries match."""
    entries = [entry for _, layer_entries in layers for entry in layer_entries]
    problems = [f"'{e}' is listed twice in LAYERS" for e in sorted(set(entries)) if entries.count(e) > 1]
    for name in names:
        matching = [layer for layer, entries in layers if layer_of(name, [(layer, entries)]) is not None]
        if len(matching) > 1:
            problems.append(f"module '{name}' is matched by several layers: {', '.join(matching)}")
    return problems


# --- the real library -------------------------------------------------------------------

def test_the_library_is_layered():
    problems = layering_problems(LIBRARY)
    if problems:
        pytest.fail(f"{len(problems)} layering problem(s) (rules: tests/test_layering.py docstring):\n"
                    + "\n".join(problems), pytrace=False)


def test_layer_map_is_consistent():
    assert layer_map_problems(LAYERS, module_files(LIBRARY)) == []
    assert layer_map_problems([("a", ["x", "p.q"]), ("b", ["y", "x", "p.*"])], ["p.q"]) == [
        "'x' is listed twice in LAYERS", "module 'p.q' is matched by several layers: a, b"]


# --- self-tests on temporary packages ---------------------------------------------------

def make_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "maskgit_lib"
    for rel, text in {"__init__.py": "__version__ = '0'\n", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent != root and not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text("")
        path.write_text(text)
    return root


CLEAN = {
    "errors.py": "class MaskgitError(Exception):\n    pass\n",
    "inpaint.py": "from __future__ import annotations\nimport torch\nfrom . import __version__\n"
                  "from .errors import MaskgitError\ndef f():\n    import os\n    return os\n",
    "training/__init__.py": "from .loop import Trainer\n",
    "training/loop.py": "from ..errors import MaskgitError\nimport maskgit_lib.inpaint\n"
                        "from maskgit_lib.training import hooks\nclass Trainer:\n    pass\n",
    "training/hooks.py": "from .. import errors\n",
    "cli/main.py": "def main():\n    from ..training import Trainer\n    print('hi')\n",
}


def test_a_clean_package_passes_and_imports_resolve(tmp_path):
    root = make_package(tmp_path, CLEAN)
    assert layering_problems(root) == []
    targets = {n: sorted({i.target for i in imps}) for n, imps in collect_imports(root).items()}
    assert targets["inpaint"] == ["__init__", "errors"]
    assert targets["training"] == ["training.loop"]
    assert targets["training.loop"] == ["errors", "inpaint", "training.hooks"]
    assert targets["training.hooks"] == ["errors"]
    assert targets["cli.main"] == ["training"]


@pytest.mark.parametrize("module, source, target", [
    ("errors.py", "from .inpaint import X\n", "inpaint"),
    ("errors.py", "from . import inpaint\n", "inpaint"),
    ("errors.py", "import maskgit_lib.inpaint\n", "inpaint"),
    ("training/loop.py", "from ..cli.main import main\n", "cli.main"),
    ("training/loop.py", "from maskgit_lib.cli import main\n", "cli.main"),
])
def test_an_upward_import_is_caught(tmp_path, module, source, target):
    root = make_package(tmp_path, {**CLEAN, module: source})
    problems = layering_problems(root)  # the fixture's downward imports close a cycle, too
    upward = [p for p in problems if "upward import" in p]
    assert len(upward) == 1 and f"imports '{target}'" in upward[0], problems
    assert all(p in upward or p.startswith("import cycle") for p in problems), problems


@pytest.mark.parametrize("a, b, a_source, b_source, b_line", [
    ("masks", "views", "from .views import a\n", "from .masks import b\n", 1),
    ("cli.a", "cli.b", "from .b import x\n", "def f():\n    from . import a\n", 2),  # via a local import
])
def test_a_cycle_is_caught(tmp_path, a, b, a_source, b_source, b_line):
    to_file = lambda name: name.replace(".", "/") + ".py"  # noqa: E731
    root = make_package(tmp_path, {**CLEAN, to_file(a): a_source, to_file(b): b_source})
    assert layering_problems(root) == [f"import cycle among {a}, {b}: maskgit_lib/{to_file(a)}:1 imports {b}; "
                                       f"maskgit_lib/{to_file(b)}:{b_line} imports {a}"]


def test_a_function_local_import_is_caught_outside_cli_only(tmp_path):
    local = "def f():\n    from .errors import MaskgitError\n"
    assert layering_problems(make_package(tmp_path / "ok", {**CLEAN, "cli/x.py": local.replace(".errors", "..errors")})) == []
    assert layering_problems(make_package(tmp_path / "bad", {**CLEAN, "masking.py": local})) == [
        "maskgit_lib/masking.py:2: function-local import of 'errors' outside cli: import it at the top of the module"]


def test_a_print_is_caught_outside_cli_only(tmp_path):
    assert layering_problems(make_package(tmp_path / "ok", {**CLEAN, "cli/x.py": "print('ok')\n"})) == []
    source = "def f(log):\n    log.print('fine')\n    print('no')\n"
    assert layering_problems(make_package(tmp_path / "bad", {**CLEAN, "views.py": source})) == [
        "maskgit_lib/views.py:3: print( outside cli: log or return instead"]


def test_an_unlisted_module_is_caught(tmp_path):
    problems = layering_problems(make_package(tmp_path, {**CLEAN, "speed.py": "", "evaluation/fid.py": ""}))
    assert len(problems) == 1 and "module 'speed' is in no layer" in problems[0] and "LAYERS" in problems[0]


def test_a_too_long_module_is_caught(tmp_path):
    assert layering_problems(make_package(tmp_path / "ok", {**CLEAN, "paths.py": "x = 1\n" * 450})) == []
    assert layering_problems(make_package(tmp_path / "bad", {**CLEAN, "paths.py": "x = 1\n" * 451})) == [
        "maskgit_lib/paths.py: 451 lines, over 450: split the module"]
