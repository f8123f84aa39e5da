"""The engine stays free of UI libraries; the package's public names all resolve."""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import clipsurgery_widgets
import clipsurgery_widgets.engine as engine


def test_engine_imports_no_ui_library():
    modules = [f"clipsurgery_widgets.engine.{m.name}" for m in pkgutil.iter_modules(engine.__path__)]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "bad = sorted(m for m in ('ipywidgets', 'plotly', 'anywidget') if m in sys.modules)\n"
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"the engine pulled in UI libraries: {result.stdout.strip()}"
    assert len(modules) > 10


def test_every_public_name_resolves():
    for name in clipsurgery_widgets.__all__:
        assert getattr(clipsurgery_widgets, name) is not None, name
    for name in engine.__all__:
        assert hasattr(importlib.import_module("clipsurgery_widgets.engine"), name), name
