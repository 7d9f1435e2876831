"""The layers, read from the imports: deciding never reaches the system, adapters never decide.

plan/ may import only the model, tags, times, errors and messages (and other planners); the adapters in
system/ import nothing above them; only the CLI imports the commands.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "snaptastic_boot"
CORE = {"model", "tags", "times", "errors", "messages"}
# What each layer may import from the package, by first component after `snaptastic_boot.`.
ALLOWED = {
    "plan": CORE | {"plan"},
    "system": CORE | {"system"},
    "config": CORE | {"config", "snapshotter", "__version__"},
    "apply": CORE | {"apply", "plan", "system", "tunables"},
    "commands": CORE | {"apply", "plan", "system", "config", "commands", "snapshotter", "tunables", "metrics"},
    **{core: CORE for core in CORE},
    "tunables": CORE | {"system"},
    "snapshotter": CORE,
    "metrics": set(),  # what a run observed, and the text format: pure, and fed by the commands
}


def _package_imports(path: Path) -> set[str]:
    """`snaptastic_boot.X...` imports of a module, as X (names imported from the package itself count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != "snaptastic_boot":
                continue
            if len(parts) > 1:
                out.add(parts[1])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("snaptastic_boot."))
    return out


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _third_party(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        out.update(n.split(".")[0] for n in names if n and n.split(".")[0] not in sys.stdlib_module_names)
    return out - {"snaptastic_boot"}


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) in ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_layer_imports_only_what_is_below_it(path: Path) -> None:
    layer = _layer(path)
    wrong = _package_imports(path) - ALLOWED[layer] - {"__version__"}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


@pytest.mark.parametrize("path", [p for p in MODULES if _layer(p) in ("plan", *CORE)], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_planners_use_no_third_party_library(path: Path) -> None:
    assert not _third_party(path), f"{path.relative_to(PACKAGE)} imports {sorted(_third_party(path))}"


def test_every_module_belongs_to_a_layer() -> None:
    top = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert top - set(ALLOWED) == {"__init__", "__main__", "cli", "schemas"}


def test_a_planner_importing_an_adapter_fails(tmp_path: Path) -> None:
    bad = tmp_path / "restore.py"
    bad.write_text("from snaptastic_boot.system.devices import Devices\nfrom snaptastic_boot import tags\n")
    assert _package_imports(bad) - ALLOWED["plan"] == {"system"}
