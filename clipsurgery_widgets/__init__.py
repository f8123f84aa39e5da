"""clipsurgery-widgets: see what a CLIP model looks at, interactively, in JupyterLab.

The engine's names are imported eagerly; the widgets (ipywidgets, plotly) only when first used,
so the command line and scripts stay light.
"""
from .engine import *  # noqa: F401,F403  (the engine's public API)
from .engine import __all__ as _engine_all

__version__ = "0.1.0"

_WIDGETS = ("HeatmapExplorer", "TokenExplorer", "AttentionExplorer", "SideBySide", "SamWidget",
            "DecompositionExplorer")
__all__ = list(_engine_all) + list(_WIDGETS)


def __getattr__(name: str):
    if name in _WIDGETS:
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'clipsurgery_widgets' has no attribute {name!r}")
