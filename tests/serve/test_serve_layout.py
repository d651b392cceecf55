"""The layout's import rules, read from the source with `ast` (nothing is imported):

- no import cycle inside serve/ (as a whole and in each subpackage), extract/ or egovlp/. In the
  applications imports inside functions count too, because a lazy import back is still a cycle in
  the design (the app factory importing the CLI that imports it was one). In egovlp/ only the
  import-time ones count: the library defers heavy pieces on purpose (`EgoVLP.save_pretrained`
  imports egovlp.checkpoint, which builds models), and those deferred imports close no cycle while
  Python imports the modules;
- serve/cli.py imports serve/app.py, never the reverse;
- egovlp/client.py, a user library piece, imports nothing from serve (nor any other application).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> whether imports inside functions count
PACKAGES = {
    "serve": True,
    "serve.api": True,
    "serve.decode": True,
    "serve.index": True,
    "extract": True,
    "egovlp": False,
}
APPLICATIONS = ("serve", "extract", "pretrain", "finetune", "heads")


def module_files(package: str) -> dict[str, Path]:
    """Every module of `package` (subpackages included), by dotted name."""
    folder = ROOT / package.replace(".", "/")
    out = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, lazy: bool = True):
    """Every Import / ImportFrom except those under `if TYPE_CHECKING:`; with `lazy=False` only those
    that run when the module is imported (not inside a function or class body)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if not lazy and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(module: str, path: Path, known: set[str], lazy: bool = True) -> set[str]:
    """The modules of `known` that `module` imports. `from a import b` names the module a.b when
    that is one, else a itself; a parent package is not an edge (Python runs it first anyway)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _import_nodes(tree, lazy):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in known)
            continue
        base = node.module or ""
        if node.level:  # relative: from the module's own package upwards
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if full in known:
                out.add(full)
            elif base in known:
                out.add(base)
    out.discard(module)
    return out


def import_graph(package: str, lazy: bool = True) -> dict[str, set[str]]:
    files = module_files(package)
    known = set(files)
    return {name: imports_of(name, path, known, lazy) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_imports_of_reads_relative_lazy_and_type_checking_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom .sub import b\nif TYPE_CHECKING:\n    from pkg import c\n"
    )
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import thing\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    graph = import_graph("pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    assert import_graph("pkg", lazy=False)["pkg.sub.b"] == set()  # its import runs only when f does


@pytest.mark.parametrize("package", list(PACKAGES))
def test_no_import_cycle(package):
    graph = import_graph(package, lazy=PACKAGES[package])
    assert len(graph) > 1, f"{package}: no modules found"
    cycle = find_cycle(graph)
    assert cycle is None, f"{package}: import cycle {' -> '.join(cycle or [])}"


def test_cli_imports_the_app_factory_never_the_reverse():
    graph = import_graph("serve")
    assert "serve.app" in graph["serve.cli"]
    reachable, todo = set(), ["serve.app"]
    while todo:
        for dep in graph[todo.pop()] - reachable:
            reachable.add(dep)
            todo.append(dep)
    assert "serve.cli" not in reachable and "serve.index.cli" not in reachable


def test_client_imports_no_application():
    path = ROOT / "egovlp" / "client.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [alias.name for n in _import_nodes(tree) if isinstance(n, ast.Import) for alias in n.names]
    names += [n.module or "" for n in _import_nodes(tree) if isinstance(n, ast.ImportFrom)]
    assert names, "egovlp/client.py: no imports read"
    bad = [name for name in names if name.split(".")[0] in APPLICATIONS]
    assert not bad, f"egovlp/client.py imports {bad}"
