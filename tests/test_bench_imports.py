"""The benchmarks stand on the project's code alone: nothing in bench/ imports the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every module `path` imports."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(BENCH.rglob("*.py")), ids=lambda p: str(p.relative_to(BENCH)))
def test_a_benchmark_does_not_import_the_tests(path: Path) -> None:
    assert "tests" not in imported_packages(path)


def test_the_check_sees_an_import_of_the_tests(tmp_path: Path) -> None:
    script = tmp_path / "b.py"
    script.write_text("import sys\nfrom tests.support import control_room as cr\n")
    assert imported_packages(script) == {"sys", "tests"}
