"""The package declares what it imports, and carries what it reads (the precision check's photos)."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_of_the_library_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The Ray engine's own extra: only `--engine ray` imports it (tests/unit/test_ray_plan.py holds that)
    declared = {_normal(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0])
                for d in project["dependencies"] + project["optional-dependencies"]["ray"]}
    owners = packages_distributions()
    missing = set()
    for path in (ROOT / "search").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("search", "__future__"):
                    continue
                if not {_normal(d) for d in owners.get(top, [top])} & declared:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, sorted(missing)


def test_no_library_module_builds_a_path_into_the_repository():
    for path in (ROOT / "search").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "parents[" not in source or (path.parent.name == "embedders" and "probe" in source), path
        assert '"examples"' not in source and "'examples'" not in source, path


def test_the_photos_the_precision_check_reads_are_package_data():
    from search.embedders.precision import PROBE, probe_images

    assert PROBE.is_relative_to(ROOT / "search") and len(probe_images()) == 36
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "probe/*.jpg" in data["search.embedders"]


def test_the_benchmarks_do_not_import_the_tests():
    for path in (ROOT / "bench").rglob("*.py"):
        assert "from tests" not in path.read_text(encoding="utf-8") and "import tests" not in path.read_text(), path
