"""Colours, sizes and figure frames shared by the static figures and the live widgets, so both look alike."""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.text import Text

from .output import register_notebook_display

OUTLINE_COLOR = "white"
MARKER_COLOR = "#ff2bd6"  # the clicked patch / query / selected head, in every view
QK_COLOR, VV_COLOR = "#d62728", "#1f77b4"
KIND_COLORS = {"qk": QK_COLOR, "vv": VV_COLOR}  # one colour per attention kind, live and static
TOP_COLORS = ("#ff2020", "#ffd500", "#00e5ff")  # the paper's top-three marking: red, yellow, cyan
UNMARKED_COLOR = "#eeeeee"  # chips and words outside the top-three marking, live and static
POSITIVE_COLOR, NEGATIVE_COLOR = "#ff8c00", "#1f6fff"  # SAM points: orange positives, blue negatives
MASK_COLOR, BOX_COLOR = "#22c55e", "#ffd400"
ABLATED_COLOR = "#444444"
DEFAULT_CMAP, DEFAULT_OPACITY = "jet", 0.6  # the authors' overlay: 0.4 image + 0.6 heat


def label_colors(count: int) -> np.ndarray:
    """float [count, 3] distinct RGB colours in [0, 1]: tab10, then tab20's light shades, then hues."""
    base = [to_rgb(c) for c in colormaps["tab10"].colors] + [to_rgb(c) for c in colormaps["tab20"].colors[1::2]]
    extra = max(0, count - len(base))
    hues = colormaps["hsv"](np.linspace(0, 1, extra, endpoint=False))[:, :3] * 0.85 if extra else np.zeros((0, 3))
    return np.concatenate([np.asarray(base), hues])[:count]


class PlainTextFigure(Figure):
    """A Figure that draws every text as written: labels, captions and titles are user text, so
    "$x^$" must not reach matplotlib's mathtext parser (it would raise) and "$\\alpha$" must not
    become a Greek letter. Before each draw (show, savefig, PNG for notebooks), every Text in
    the figure is set to ``parse_math=False`` and ``usetex=False``; ``get_text()`` stays the user's string.
    """

    def draw(self, renderer) -> None:
        plain_text(self)
        super().draw(renderer)


def plain_text(fig: Figure) -> Figure:
    """Turn off mathtext and TeX for every Text already in ``fig`` (titles, legends, labels); returns ``fig``."""
    for text in fig.findobj(Text):
        text.set_parse_math(False)
        text.set_usetex(False)
    return fig


def plain_figure(**kwargs) -> PlainTextFigure:
    """A :class:`PlainTextFigure` (kwargs as for matplotlib's Figure), shown inline in notebooks."""
    register_notebook_display()
    return PlainTextFigure(**kwargs)


def new_figure(nrows: int, ncols: int, shape: tuple[int, ...], panel_inches: float, pad: tuple[float, float] = (1.0, 0.6)) -> Figure:
    """A constrained-layout figure for a nrows x ncols grid of panels of image ``shape`` (H, W, ...); ``pad`` = extra (width, height) inches.

    Its texts are drawn as written (:class:`PlainTextFigure`).
    """
    aspect = shape[0] / shape[1]
    return plain_figure(figsize=(ncols * panel_inches + pad[0], nrows * panel_inches * aspect + pad[1]),
                        layout="constrained")

def inset_colorbar(ax, cmap: str, label: str, limits: tuple[float, float] = (0.0, 1.0)):
    """A colour bar of ``cmap`` over ``limits`` just right of ``ax``, as a child of ``ax``.

    Being a child, it does not add an entry to ``fig.axes`` (panel counts stay panel counts), and
    constrained layout still makes room for it. Put it on the right-most panel of a row.
    """
    if cmap not in colormaps:
        raise ValueError(f"Unknown colormap {cmap!r}; use a matplotlib name such as 'jet' or 'viridis'.")
    cax = ax.inset_axes([1.04, 0.0, 0.06, 1.0])
    bar = ax.get_figure(root=False).colorbar(ScalarMappable(norm=Normalize(*limits), cmap=colormaps[cmap]), cax=cax)
    bar.set_label(label, fontsize=8)
    bar.set_ticks(list(limits))  # the two ends only: small panels leave no room for more
    bar.ax.tick_params(labelsize=7)
    return bar


def grid_colorbar(fig, axes: np.ndarray, cmap: str) -> None:
    """One "normalised score" colour bar of ``cmap`` (0 to 1) beside a whole grid of map panels ``axes``."""
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colormaps[cmap]), ax=list(axes.flat),
                       shrink=0.8 if axes.shape[0] > 1 else 0.9, pad=0.02)
    bar.set_label("normalised score", fontsize=9)


# Display names of the dense methods (docs/algorithms.md#dense-methods), for titles, legends and selectors.
METHOD_NAMES = {"raw": "raw CLIP", "clip_surgery": "CLIP Surgery", "maskclip": "MaskCLIP", "sclip": "SCLIP",
                "clearclip": "ClearCLIP", "naclip": "NACLIP", "gem": "GEM"}


def method_name(method: str) -> str:
    """"sclip" -> "SCLIP"; "surgery" is CLIP Surgery; unknown names are shown as given."""
    return METHOD_NAMES.get({"surgery": "clip_surgery"}.get(method, method), method)


def checked_rgb(rgb, size: tuple[int, int], what: str = "the explanation"):
    """``rgb`` as a uint8 [H, W, 3] array of the size ``what`` was computed for, or a ValueError naming the fix."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"Images must be uint8 [H, W, 3] arrays, got {rgb.dtype} {rgb.shape}; "
                         f"use Explainer.prepare_image or load_image to read them.")
    if tuple(rgb.shape[:2]) != tuple(size):
        raise ValueError(f"The image is {rgb.shape[0]}x{rgb.shape[1]} but {what} was computed for "
                         f"{size[0]}x{size[1]}; pass the same image.")
    return rgb
