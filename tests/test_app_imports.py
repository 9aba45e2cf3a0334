"""Issue 17: visit schedules live in their own app, which randomization and dosing both use
without importing each other (and which imports neither). Read from the source, every module of
each app, functions' local imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_apps(app: str) -> dict[str, set[str]]:
    """Top-level packages each module of `app` imports, by module path."""
    found = {}
    for path in sorted((ROOT / app).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("app", "forbidden"),
    [("dosing", {"randomization"}), ("randomization", {"dosing"}), ("schedules", {"dosing", "randomization"})],
)
def test_the_apps_do_not_import_each_other(app, forbidden):
    offending = {module: sorted(names & forbidden) for module, names in imported_apps(app).items() if names & forbidden}
    assert offending == {}


def test_the_check_reads_imports():
    """The scan sees an import where there is one (dosing imports schedules)."""
    assert any("schedules" in names for names in imported_apps("dosing").values())
