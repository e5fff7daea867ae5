"""The dependency rule of docs/architecture.md, read from the code's own imports.

Every module of the package sits on one floor; a module imports only from its own floor or
the floors below, and floors that share a level (``pipeline`` and ``bus``) never import each
other. Lazy imports inside functions count like the others.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mmlm_stream"

# Bottom to top. A tuple is one level of siblings.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("util",),
    ("records",),
    ("rules",),
    ("config",),
    ("security",),
    ("operators",),
    ("models",),
    ("pipeline", "bus"),
    ("sinks",),
    ("service",),
    ("deployments",),
    ("deploy",),
    ("cli",),
)
LEVEL = {floor: level for level, floors in enumerate(FLOORS) for floor in floors}
# What never enters the pure floors, whatever its level would allow.
FORBIDDEN_THIRD_PARTY = {floor: {"ray"} for floor in ("operators", "records", "rules", "config")}


def _modules() -> dict[str, Path]:
    """Dotted name -> file, through the package's links to operators/ and deployments/."""
    found: dict[str, Path] = {}
    files = [
        Path(folder, name)
        for folder, _dirs, names in os.walk(PACKAGE, followlinks=True)
        for name in names
        if name.endswith(".py")
    ]
    for path in sorted(files):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("mmlm_stream", *parts))] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, nested ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [
                (node.lineno, f"{node.module}.{alias.name}")
                for alias in node.names
                if f"{node.module}.{alias.name}" in MODULES
            ]
    return found


def floor_of(module: str) -> str | None:
    """The floor of a package module; None for the package's face (``mmlm_stream``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mmlm_stream" else None


def violations(module: str, path: Path) -> list[str]:
    mine = floor_of(module)
    if mine is None:
        return []
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    for line, target in _imports(path):
        top = target.split(".")[0]
        if top in FORBIDDEN_THIRD_PARTY.get(mine, ()):
            found.append(f"{where}:{line}: {mine} imports {top}")
        theirs = floor_of(target)
        if theirs is None or theirs == mine:
            continue
        if theirs not in LEVEL:
            found.append(f"{where}:{line}: {target} is on no floor")
        elif LEVEL[theirs] >= LEVEL[mine]:
            found.append(f"{where}:{line}: {mine} imports {target} ({theirs})")
    return found


def test_every_module_sits_on_a_floor():
    floors = {floor_of(module) for module in MODULES} - {None}
    assert floors <= set(LEVEL), f"not on a floor: {sorted(floors - set(LEVEL))}"


def test_no_module_imports_from_a_floor_above_or_beside_it():
    found = [line for module, path in MODULES.items() for line in violations(module, path)]
    assert not found, "\n".join(found)


def test_import_paths_are_paths_on_disk():
    """``mmlm_stream.operators.decode`` is ``mmlm_stream/operators/decode.py``, a link away
    from the top-level ``operators/`` the product layout keeps."""
    for name in ("operators", "deployments"):
        link = PACKAGE / name
        assert link.is_symlink() and link.resolve() == ROOT / name
    assert (PACKAGE / "operators" / "decode.py").is_file()


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("mmlm_stream.operators.x", "import ray\n", "operators imports ray"),
        ("mmlm_stream.operators.x", "from mmlm_stream.pipeline import y\n", "(pipeline)"),
        ("mmlm_stream.bus.x", "from mmlm_stream.pipeline.analysis import A\n", "(pipeline)"),
        ("mmlm_stream.records.x", "def f():\n    from mmlm_stream.cli import main\n", "(cli)"),
    ],
)
def test_the_rule_catches_an_import_that_breaks_it(tmp_path, module, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source, encoding="utf-8")
    assert any(expected in line for line in violations(module, path))


def test_the_rule_lets_downward_imports_through(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("from mmlm_stream.records.schema import EventRecord\n", encoding="utf-8")
    assert violations("mmlm_stream.pipeline.x", path) == []
