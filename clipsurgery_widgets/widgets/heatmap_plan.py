"""What each HeatmapExplorer view shows: a :class:`Plan` of image panels, and how they are drawn (:class:`Style`).

The controller turns its settings into a plan with :func:`panel_plan`; :mod:`.heatmap_view` draws
it. A new view is one entry in :data:`VIEWS` and one branch in :func:`panel_plan`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..engine.towers.dense_params import METHODS as DENSE_METHODS
from ..engine.towers.dense_params import RESNET_METHODS
from ..figures.style import method_name

#: view name -> its button text.
VIEWS: dict[str, str] = {"overlay": "one label", "grid": "all labels", "compare": "raw vs surgery",
                         "methods": "methods", "segmentation": "segmentation"}
#: the maps the "compare" view puts side by side, left to right.
COMPARED_METHODS: tuple[str, ...] = ("raw", "clip_surgery")
#: every dense method the explorer offers (docs/algorithms.md#dense-methods), in menu order.
METHOD_CHOICES: tuple[str, ...] = tuple(DENSE_METHODS)
#: the methods a ResNet image tower has (the others change transformer blocks).
RESNET_CHOICES: tuple[str, ...] = tuple(RESNET_METHODS)
#: the default columns of the "methods" view on a ViT, and on a ResNet.
DEFAULT_COMPARED: tuple[str, ...] = ("raw", "clip_surgery", "sclip", "naclip")
DEFAULT_COMPARED_RESNET: tuple[str, ...] = ("raw", "clip_surgery")


@dataclass(frozen=True)
class Panel:
    """One image panel: ``method``'s map of ``label``, or (segmentation) ``method``'s class map."""

    method: str
    label: str = ""
    segmentation: bool = False

    def title(self, short: bool) -> str:
        if self.segmentation:
            return f"{method_name(self.method)}: segmentation"
        if short:
            return self.label
        return f"{method_name(self.method)}: {self.label}"


@dataclass(frozen=True)
class Plan:
    """The panels of a view: ``panels`` fill a grid of ``ncols`` columns row by row.

    compact: many small panels (smaller images sent); short_titles: titles are the label only.
    method: the chosen method; compared: the methods of the "methods" view (its columns).
    """

    view: str
    panels: tuple[Panel, ...]
    ncols: int
    compact: bool = False
    short_titles: bool = False
    method: str = "clip_surgery"
    compared: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the panel grid."""
        return -(-len(self.panels) // self.ncols), self.ncols

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods whose maps the panels show, each once, in order."""
        return tuple(dict.fromkeys(p.method for p in self.panels))


@dataclass(frozen=True)
class Style:
    """How heat maps are drawn: colour map, opacity over the image, outline level (None: no outline),
    and the long side in pixels at which the segmentation view is sent."""

    cmap: str
    opacity: float
    threshold: float | None
    heat_side: int = 200


def panel_plan(view: str, labels: Sequence[str], label: str | None, method: str = "clip_surgery",
               compared: Sequence[str] = DEFAULT_COMPARED) -> Plan:
    """The panels of ``view`` for ``labels``; ``label`` is the one-label choice, ``method`` the chosen
    method, ``compared`` the columns of the "methods" view (labels are its rows)."""
    label = label if label in labels else (labels[0] if labels else "")
    compared = tuple(compared)
    common: dict[str, Any] = dict(method=method, compared=compared)
    if view == "grid":
        panels = tuple(Panel(method, t) for t in labels) or (Panel(method, ""),)
        return Plan(view, panels, balanced_columns(len(panels)), compact=True, short_titles=True, **common)
    if view == "compare":
        return Plan(view, tuple(Panel(m, label) for m in COMPARED_METHODS), len(COMPARED_METHODS), **common)
    if view == "methods":
        panels = tuple(Panel(m, t) for t in (labels or [""]) for m in compared)
        return Plan(view, panels, len(compared), compact=len(panels) > len(compared), **common)
    if view == "segmentation":
        return Plan(view, (Panel(method, segmentation=True),), 1, **common)
    if view == "overlay":
        return Plan(view, (Panel(method, label),), 1, **common)
    raise ValueError(f"Unknown view {view!r}; use one of {', '.join(VIEWS)}.")


def balanced_columns(n: int, max_columns: int = 6) -> int:
    """Columns of a balanced grid of ``n`` panels: about as many rows as columns (4 -> 2x2, 3 -> 1x3,
    7 -> 4+3, 59 -> 6 columns), at most ``max_columns``; the fewest empty cells, then the fewest rows."""
    low = min(max_columns, max(1, math.ceil(math.sqrt(n))))
    candidates = range(low, min(max_columns, low + 1) + 1)
    return min(candidates, key=lambda c: (-n % c, -(-n // c)))


def methods_needed(view: str, method: str, compared: Sequence[str]) -> list[str]:
    """The methods an explanation must hold for ``view``: the chosen one first, raw CLIP and CLIP
    Surgery (one pass gives both) when one of them is chosen or compared, and the compared ones."""
    names = [method]
    if method in COMPARED_METHODS or view == "compare":
        names += list(COMPARED_METHODS)
    if view == "methods":
        names += list(compared)
    return list(dict.fromkeys(names))
