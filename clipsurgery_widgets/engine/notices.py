"""Notices (warnings) that point at the user's line, not at the package's internals."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside clipsurgery_widgets.

    The call may be reached through any number of package frames (explain -> labels -> ...);
    a fixed ``stacklevel`` would blame one of them, and Python < 3.12 has no ``skip_file_prefixes``.
    """
    level, frame = 2, sys._getframe(1)  # level 2 = warn_user's caller
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def quote(text: str, limit: int = 60) -> str:
    """repr() of ``text`` cut to about ``limit`` characters ("..." marks a cut), for messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit - 3] + "...")
