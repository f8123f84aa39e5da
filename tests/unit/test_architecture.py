"""The package's import rules (docs/architecture.md), its size limits, and that public names resolve.

- the engine imports no UI library (checked in the source and at run time);
- widgets/ and figures/ import neither torch nor open_clip: they draw arrays the engine computed;
- nothing imports upward: engine < figures < widgets, and cli uses the engine and figures only.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import clipsurgery_widgets
import clipsurgery_widgets.engine as engine

PACKAGE = Path(clipsurgery_widgets.__file__).parent
UI_LIBRARIES = {"ipywidgets", "plotly", "anywidget"}
MODEL_LIBRARIES = {"torch", "open_clip", "torchvision", "segment_anything"}
# What each part may import from the package itself (its own part always allowed).
ALLOWED_PARTS = {
    "engine": {"engine", "data"},
    "evaluation": {"engine", "evaluation", "data"},
    "figures": {"engine", "figures", "data"},
    "widgets": {"engine", "figures", "widgets", "data"},
    "cli": {"engine", "figures", "evaluation", "cli", "data"},
}
MAX_MODULE_LINES, MAX_CLASS_LINES = 450, 300


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute dotted module, line) of every import in the file, function-level ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(("clipsurgery_widgets",) + path.relative_to(PACKAGE).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
    return found


def _violations(rule) -> list[str]:
    bad = []
    for path in _modules():
        for module, line in _imports(path):
            reason = rule(_part(path), module)
            if reason:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {module} ({reason})")
    return bad


def test_engine_source_imports_no_ui_library():
    def rule(part, module):
        return "engine is UI-free" if part == "engine" and module.split(".")[0] in UI_LIBRARIES else None
    assert _violations(rule) == []


def test_widgets_and_figures_import_no_model_library():
    def rule(part, module):
        if part in ("widgets", "figures") and module.split(".")[0] in MODEL_LIBRARIES:
            return "widgets and figures draw arrays; the engine computes"
        return None
    assert _violations(rule) == []


def test_nothing_imports_upward():
    def rule(part, module):
        names = module.split(".")
        if names[0] != "clipsurgery_widgets" or len(names) < 2 or part not in ALLOWED_PARTS:
            return None
        target = names[1]
        return None if target in ALLOWED_PARTS[part] else f"{part} may not import {target}"
    assert _violations(rule) == []


def test_the_rules_catch_a_violation(tmp_path, monkeypatch):
    """The checker itself: a figure module importing torch and the engine importing a widget are found."""
    fake = tmp_path / "clipsurgery_widgets"
    (fake / "figures").mkdir(parents=True)
    (fake / "engine").mkdir()
    (fake / "figures" / "bad.py").write_text("def f():\n    import torch\n")
    (fake / "engine" / "bad.py").write_text("from ..widgets import base\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _violations(lambda part, m: "model" if part == "figures" and m.startswith("torch") else None)
    assert _violations(lambda part, m: "up" if part == "engine" and m.startswith("clipsurgery_widgets.widgets")
                       else None)


def test_engine_imports_no_ui_library_at_run_time():
    modules = [m.name for m in pkgutil.walk_packages(engine.__path__, prefix="clipsurgery_widgets.engine.")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "bad = sorted(m for m in ('ipywidgets', 'plotly', 'anywidget') if m in sys.modules)\n"
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"the engine pulled in UI libraries: {result.stdout.strip()}"
    assert len(modules) > 20


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_classes_stay_small(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{len(lines)} lines: split the module by job"
    tree = ast.parse("\n".join(lines))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"class {node.name} has {size} lines"


def test_every_public_name_resolves():
    for name in clipsurgery_widgets.__all__:
        assert getattr(clipsurgery_widgets, name) is not None, name
    for name in engine.__all__:
        assert hasattr(importlib.import_module("clipsurgery_widgets.engine"), name), name
