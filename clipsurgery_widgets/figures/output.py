"""Figure output: encode a matplotlib Figure as bytes, save it, and show pyplot-free figures in notebooks.

Vector files (SVG, PDF) keep the images raster, embedded once per panel, and everything else
vector: text stays text (SVG ``<text>`` elements, PDF TrueType fonts that journals accept and
editors can change), lines and markers stay paths. An image is embedded at its own pixels when
the page shows it larger than that (nothing is upsampled into the file), else resampled at ``dpi``.
"""
from __future__ import annotations

import io
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import matplotlib
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from .layout import Layout, apply_layout

FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")
VECTOR_FORMATS = ("svg", "pdf")
#: notebooks show a static PNG at this many CSS pixels per figure inch, whatever its resolution.
DISPLAY_DPI = 72
#: pixels per CSS pixel of the PNGs shown in notebooks: sharp on high-density (2x) screens.
DISPLAY_DENSITY = 2
_PAD_INCHES = 0.02  # around the cropped content: a preset's width stays the printed width
_VECTOR_RC = {"svg.fonttype": "none", "pdf.fonttype": 42, "ps.fonttype": 42, "svg.image_inline": True}


def figure_bytes(fig: Figure, format: str = "png", dpi: int = 100, layout: Layout = None) -> bytes:
    """Encode a figure as PNG/SVG/PDF/JPEG bytes at ``dpi``, sized by ``layout`` first when given.

    layout: "column" (3.5 in wide), "page" (7 in), a width in inches or (width, height); see
    :func:`clipsurgery_widgets.figures.layout.apply_layout`. For SVG/PDF, ``dpi`` is the resolution of
    the embedded images.
    """
    format = _check_format(format)
    apply_layout(fig, layout)
    # A figure sized for print is written at exactly that size (its layout is already tight);
    # otherwise the margins around the content are cropped.
    crop = dict(bbox_inches="tight", pad_inches=_PAD_INCHES) if layout is None else {}
    buffer = io.BytesIO()
    if format in VECTOR_FORMATS:
        with matplotlib.rc_context(_VECTOR_RC), _images_at_native_size(fig, dpi):
            fig.savefig(buffer, format=format, dpi=dpi, facecolor="white", **crop)
    else:
        fig.savefig(buffer, format=format, dpi=dpi, facecolor="white", **crop)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150, format: str | None = None,
                layout: Layout = None) -> Path:
    """Write a figure to ``path``; the format comes from ``format`` or the file suffix (png/svg/pdf/jpg).

    layout: size it for print first ("column", "page", inches or (width, height); None keeps its size).
    """
    path = Path(path).expanduser()
    format = _check_format(format or path.suffix.lstrip(".") or "png")
    if not path.parent.exists():
        raise FileNotFoundError(f"Folder {path.parent} does not exist; create it first.")
    path.write_bytes(figure_bytes(fig, format, dpi, layout))
    return path


def static_png(fig: Figure, dpi: int = DISPLAY_DPI * DISPLAY_DENSITY,
               display_dpi: float = DISPLAY_DPI) -> tuple[bytes, dict]:
    """(PNG bytes at ``dpi``, its notebook display metadata ``{"width": ..., "height": ...}`` at ``display_dpi``)."""
    png = figure_bytes(fig, "png", dpi=dpi)
    return png, static_png_metadata(png, display_dpi)


def static_png_metadata(png: bytes, display_dpi: float = DISPLAY_DPI) -> dict:
    """Display size for a PNG made here: ``{"width": w, "height": h}`` in CSS pixels at ``display_dpi``.

    A PNG rendered at 144 dpi has twice the pixels of one at 72 dpi; shown at the 72 dpi size it
    stays sharp on 2x screens. Jupyter (JupyterLab, Notebook 7, nbconvert HTML) reads this from
    the output's metadata: ``_repr_mimebundle_`` returns ``(data, {"image/png": static_png_metadata(png)})``.
    The resolution is read from the PNG's pHYs chunk (matplotlib writes it); without one the PNG is
    shown at one CSS pixel per pixel.
    """
    width, height, dpi = _png_size_and_dpi(png)
    scale = display_dpi / dpi if dpi else 1.0
    return {"width": max(1, round(width * scale)), "height": max(1, round(height * scale))}


def register_notebook_display() -> None:
    """In IPython, let a pyplot-free Figure show as a (2x, high-density) PNG when it is a cell's value.

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
        formatter.for_type(Figure, lambda fig: static_png(fig, dpi=100 * DISPLAY_DENSITY, display_dpi=100))


# --- helpers -------------------------------------------------------------------------------------

@contextmanager
def _images_at_native_size(fig: Figure, dpi: float) -> Iterator[None]:
    """While saving a vector file, embed each image that is shown larger than its pixels unresampled."""
    changed = []
    fig.draw_without_rendering()
    for image in fig.findobj(AxesImage):
        rows, cols = image.get_array().shape[:2]
        box = image.get_window_extent()
        shown = max(box.width, box.height) * dpi / fig.dpi
        if image.get_interpolation() in ("nearest", "none", "antialiased", "auto") and shown >= max(rows, cols):
            changed.append((image, image.get_interpolation()))
            image.set_interpolation("none")
    try:
        yield
    finally:
        for image, interpolation in changed:
            image.set_interpolation(interpolation)


def _png_size_and_dpi(png: bytes) -> tuple[int, int, float | None]:
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("Not PNG bytes: pass the output of figure_bytes(fig, 'png').")
    width, height = struct.unpack(">II", png[16:24])
    offset, dpi = 8, None
    while offset + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        if kind == b"pHYs":
            x_per_metre, _, unit = struct.unpack(">IIB", png[offset + 8:offset + 17])
            dpi = x_per_metre * 0.0254 if unit == 1 else None
            if dpi is not None and abs(dpi - round(dpi)) < 0.05:
                dpi = float(round(dpi))  # pHYs stores whole pixels per metre: 144 dpi reads as 143.99
            break
        if kind == b"IDAT":
            break
        offset += 12 + length
    return width, height, dpi


def _check_format(format: str) -> str:
    format = format.lower().lstrip(".")
    if format not in FORMATS:
        raise ValueError(f"Unsupported figure format {format!r}; use one of {', '.join(FORMATS)}.")
    return "jpeg" if format == "jpg" else format
