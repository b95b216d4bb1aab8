"""The package's layering, read from the code's own imports: data flows down and no module imports above itself.

web, cli -> service -> index, pipeline, evaluate -> sources, embedders, stores -> images -> core -> config, errors.
Modules of one package may import each other, but never in a circle; gradio, fastapi and starlette live in
search/web alone, chromadb in search/stores/chroma.py alone.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "search"
LAYER = {"config": 0, "errors": 0, "core": 1, "images": 2, "sources": 3, "embedders": 3, "stores": 3,
         "index": 4, "pipeline": 4, "evaluate": 4, "service": 5, "web": 6, "cli": 6}
ONLY = {"gradio": "web", "fastapi": "web", "starlette": "web", "chromadb": "stores/chroma.py"}


def _imports(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:  # "from a.b import c": a.b, and a.b.c where c is a module
            found += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def _modules() -> dict[str, list[str]]:
    """Each module of the package (dotted) and what it imports."""
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_a_layer_above_or_beside_its_own():
    wrong = []
    for module, imported in _modules().items():
        own = module.split(".")[1]
        if own == "__init__":  # the package's face re-exports from anywhere
            continue
        for name in imported:
            parts = name.split(".")
            if (parts[0] == "search" and len(parts) > 1 and parts[1] in LAYER and parts[1] != own
                    and LAYER[parts[1]] >= LAYER[own]):
                wrong.append(f"{module} -> {name}")
    assert not wrong, wrong


def test_third_party_frameworks_stay_in_their_layer():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        where = path.relative_to(PACKAGE).as_posix()
        for name in _imports(path):
            home = ONLY.get(name.split(".")[0])
            if home and not where.startswith(home):
                wrong.append(f"{where} imports {name}")
    assert not wrong, wrong


def test_there_is_no_import_circle():
    modules = _modules()
    graph = {m: {n for n in imported if n in modules} for m, imported in modules.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            if other.endswith("__init__") or other == "search":
                continue
            assert state.get(other) != 1, f"import circle: {' -> '.join([*path, module, other])}"
            if other not in state:
                visit(other, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
