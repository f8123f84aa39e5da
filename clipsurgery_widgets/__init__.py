"""clipsurgery-widgets: see what a CLIP model looks at, interactively, in JupyterLab."""
from .engine import *  # noqa: F401,F403  (the engine's public API)
from .engine import __all__ as _engine_all

__version__ = "0.1.0"
__all__ = list(_engine_all)
