"""extract/'s layers (docs/architecture.md): reader -> stage -> writer / collector -> engines ->
dispatcher -> cli. Read from the source with `ast`, lazy imports inside functions included."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import extract
from egovlp.errors import InputError
from extract.pipeline import ENGINES, get_engine

EXTRACT_DIR = Path(extract.__file__).parent

# module -> layer; a module may import its own layer or a lower one, never a higher one
LAYERS = {
    "inputs": 0,
    "sampling": 0,
    "manifest": 0,
    "cpus": 0,
    "reader": 0,
    "options": 0,
    "stage": 1,
    "writer": 2,
    "outputs": 2,
    "collector": 2,
    "text": 2,
    "local": 3,
    "ray_engine": 3,
    "pipeline": 4,
    "cli": 5,
}
ENGINE_MODULES = {"local", "ray_engine"}


def extract_imports(path: Path) -> set[str]:
    """The extract/ modules a file imports (`extract.x`, `from extract import x`, at any depth)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "extract" and len(parts) > 1 and (EXTRACT_DIR / f"{parts[1]}.py").is_file():
                found.add(parts[1])
    return found


def import_graph() -> dict[str, set[str]]:
    modules = sorted(p for p in EXTRACT_DIR.glob("*.py") if p.stem != "__init__")
    return {p.stem: extract_imports(p) - {p.stem} for p in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_parser_sees_lazy_and_aliased_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "import extract.reader as r\n"
        "from extract import stage\n"
        "def f():\n"
        "    from extract.local import run_local\n"
        "    import os\n"
    )
    assert extract_imports(source) == {"reader", "stage", "local"}


def test_extract_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle in extract/: {' -> '.join(cycle)}"


def test_every_module_has_a_layer_and_imports_only_downwards():
    graph = import_graph()
    assert set(graph) == set(LAYERS), "place new extract/ modules in LAYERS"
    upward = [
        f"{mod} (layer {LAYERS[mod]}) imports {dep} (layer {LAYERS[dep]})"
        for mod, deps in graph.items()
        for dep in deps
        if LAYERS[dep] > LAYERS[mod]
    ]
    assert not upward, upward


def test_no_engine_imports_another_engine():
    graph = import_graph()
    for engine in ENGINE_MODULES:
        assert not graph[engine] & (ENGINE_MODULES - {engine}), f"{engine} imports another engine"
        assert "pipeline" not in graph[engine] and "cli" not in graph[engine]


def test_the_engine_table_names_functions_with_one_signature():
    assert set(ENGINES) == {"local", "ray"}
    for name, target in ENGINES.items():
        module = target.split(":")[0].removeprefix("extract.")
        assert module in ENGINE_MODULES
        params = list(inspect.signature(get_engine(name)).parameters)
        assert params == ["model", "spec", "jobs", "opts", "collector"], (name, params)
    with pytest.raises(InputError, match="--engine 'spark'"):
        get_engine("spark")
