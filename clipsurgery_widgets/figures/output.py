"""Figure output: encode a matplotlib Figure as bytes, save it, and show pyplot-free figures in notebooks."""
from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")


def figure_bytes(fig: Figure, format: str = "png", dpi: int = 100) -> bytes:
    """Encode a figure as PNG/SVG/PDF/JPEG bytes at ``dpi``."""
    format = _check_format(format)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=format, dpi=dpi, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150, format: str | None = None) -> Path:
    """Write a figure to ``path``; the format comes from ``format`` or the file suffix (png/svg/pdf/jpg)."""
    path = Path(path).expanduser()
    format = _check_format(format or path.suffix.lstrip(".") or "png")
    if not path.parent.exists():
        raise FileNotFoundError(f"Folder {path.parent} does not exist; create it first.")
    path.write_bytes(figure_bytes(fig, format, dpi))
    return path


def register_notebook_display() -> None:
    """In IPython, let a pyplot-free Figure show as a PNG when it is a cell's value.

    matplotlib's inline backend registers this only once pyplot is imported; figures made here
    never touch pyplot (no global figure list to leak into).
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    formatter = shell.display_formatter.formatters["image/png"]
    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        formatter.for_type(Figure, lambda fig: figure_bytes(fig, "png", dpi=100))


def _check_format(format: str) -> str:
    format = format.lower().lstrip(".")
    if format not in FORMATS:
        raise ValueError(f"Unsupported figure format {format!r}; use one of {', '.join(FORMATS)}.")
    return "jpeg" if format == "jpg" else format
