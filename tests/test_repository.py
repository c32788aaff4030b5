"""The test suite's layout: shared test code is in ``tests/helpers``, ``conftest.py`` holds only fixtures and
hooks, and no test module imports ``conftest`` or another test module (nor names a class in one by class path)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers.paths import TESTS

TEST_MODULES = sorted(TESTS.glob("test_*.py"))
HELPER_MODULES = sorted((TESTS / "helpers").glob("*.py"))
#: a class path into a test module, as a config names a callback: ``test_resume.DrawsGlobalRandom``
TEST_CLASS_PATH = re.compile(r"\b(conftest|test_\w+)\.([A-Z]\w*)")


def imported_top_level_modules(path: Path) -> set[str]:
    """The top-level modules a source file imports, at the top or inside functions (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_modules_import_neither_conftest_nor_each_other():
    assert len(TEST_MODULES) > 10 and HELPER_MODULES
    offenders = {
        path.relative_to(TESTS).as_posix(): sorted(bad)
        for path in TEST_MODULES + HELPER_MODULES
        if (
            bad := {
                name
                for name in imported_top_level_modules(path)
                if name == "conftest" or name.startswith("test_")
            }
        )
    }
    assert not offenders, f"import shared test code from tests/helpers instead: {offenders}"


def test_configs_in_tests_name_no_class_of_another_test_module():
    """Callbacks a test config names (``helpers.callbacks.X``) import in subprocesses and SLURM jobs too."""
    offenders = {}
    for path in TEST_MODULES + HELPER_MODULES:
        strings = [
            node.value
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
        named = {
            f"{module}.{name}"
            for text in strings
            for module, name in TEST_CLASS_PATH.findall(text)
            if module != path.stem
        }
        if named:
            offenders[path.relative_to(TESTS).as_posix()] = sorted(named)
    assert not offenders, f"move these classes to tests/helpers (e.g. helpers.callbacks): {offenders}"


def test_conftest_holds_only_fixtures_and_hooks():
    tree = ast.parse((TESTS / "conftest.py").read_text())
    functions = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert functions
    for node in functions:
        fixture = any(
            "fixture" in ast.unparse(decorator) for decorator in getattr(node, "decorator_list", [])
        )
        assert fixture or node.name.startswith("pytest_"), (
            f"conftest.py: {node.name} is no fixture or hook; shared code goes to tests/helpers"
        )
