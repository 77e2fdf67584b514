"""Benchmarks stand apart from the tests: nothing under bench/ imports the test suite (what both
need lives in tools/)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports_tests(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(name == "tests" or name.startswith("tests.") for name in names):
            lines.append(node.lineno)
    return lines


def test_the_check_sees_both_forms_of_import() -> None:
    source = "import tests.support.ports\nfrom tests import support\nimport testsuite\n"
    assert _imports_tests(ast.parse(source)) == [1, 2]


def test_no_benchmark_imports_the_test_suite() -> None:
    files = sorted((ROOT / "bench").rglob("*.py"))
    assert files
    offences = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in files
        for line in _imports_tests(ast.parse(path.read_text(), str(path)))
    ]
    assert offences == []
