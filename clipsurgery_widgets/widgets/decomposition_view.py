"""DecompositionView: what DecompositionExplorer shows, as plotly figures and HTML.

A layer x head grid of direct contributions (ablated heads crossed out, ablated attention layers
hatched across their row, an MLP column whose ablated cells are greyed and crossed, the selected
head outlined), a per-layer bar chart (attention and MLP, ablated ones greyed), two map panels
(all heads, the selected head), the zero-shot readout and the selected head's TEXTSPAN texts. The
controller hands over numbers computed by the engine session; this view only draws them. Tests
read :meth:`DecompositionView.describe` and click through :meth:`DecompositionView.click_cell`.
"""
from __future__ import annotations

import html
from typing import Callable, Sequence

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..engine.decomposition.ablation import Ablation
from ..figures.decomposition import ABLATED_BAR_COLOR, ATTN_COLOR, MLP_COLOR
from ..figures.style import ABLATED_COLOR, MARKER_COLOR
from .live_figure import LiveFigure
from .plotting import (FIGURE_CONFIG, HEAT_TRACE, MODEBAR_ROOM, PanelFigure, compact, plotly_colorscale,
                       plotly_text)

FULL_PANEL, HEAD_PANEL = 0, 1
_HEAT, _ABLATED, _SELECTED, _LAYERS, _MLP_CELLS, _MLP_ABLATED = range(6)  # grid traces
MLP_CELL_COLOR = "#ffd9b3"  # a light MLP_COLOR: the MLP column's cells, so that a cross on them shows
MLP_GAP = 0.6  # the MLP column sits this far right of the last head's column (in head units)
TITLE_TOP = 30  # px from the figure's top to its title: below the plotly toolbar, which never covers it
_ATTN_BARS, _MLP_BARS = 0, 1  # bar traces carrying data; the others are legend entries


class DecompositionView:
    """The plotly figures and HTML panes of the explorer.

    ``on_cell(layer, head)`` is called when a grid cell is clicked (by the mouse or :meth:`click_cell`).
    """

    def __init__(self, num_layers: int, num_heads: int, on_cell: Callable[[int, int], None]):
        self.num_layers, self.num_heads = num_layers, num_heads
        self._on_cell = on_cell
        self._mlp_values: list[float] | None = None  # [L] the MLPs' contributions, for their cells' hover
        self._ablation_shown = Ablation()
        self.grid = self._grid_figure()
        self.bars = self._bar_figure()
        self.maps = PanelFigure(2, top_margin=MODEBAR_ROOM)  # the panel titles clear of plotly's toolbar
        self.maps.arrange(2, 2, 330)
        self.readout = widgets.HTML().add_class("csw-readout")
        self.texts = widgets.HTML(value=texts_placeholder()).add_class("csw-head-texts")
        self._readout: dict | None = None
        self._texts: dict = {"head": None, "texts": [], "busy": False}
        # Widths follow the cell: the grid and the texts share a row when there is room (the grid
        # capped where its cells would only get wider), and the texts wrap under the grid otherwise.
        # Each figure sits in a VBox, which stretches it to the box's width for plotly's autosize.
        grid_cap = f"{max(420, 44 * (num_heads + 1) + 220)}px"
        texts_box = widgets.VBox([self.texts], layout=widgets.Layout(flex="1 1 280px", max_width="560px",
                                                                      min_width="0", overflow="auto"))
        grid_fill = widgets.VBox([self.grid], layout=widgets.Layout(flex="1 1 380px", max_width=grid_cap,
                                                                    min_width="0")).add_class("csw-grid")
        self.grid_box = widgets.HBox([grid_fill, texts_box.add_class("csw-texts-box")],
                                     layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.bars_box = widgets.VBox([self.bars]).add_class("csw-layer-bars")
        self.maps_box = widgets.VBox([self.maps.fig]).add_class("csw-maps")

    # --- what is shown -------------------------------------------------------------------------

    def show_contributions(self, label: str, heads: np.ndarray, layers: np.ndarray, mlps: np.ndarray) -> None:
        """heads: [L, H], layers and mlps: [L] direct contributions to ``label``."""
        self._mlp_values = compact(mlps, 5).tolist()
        with self.grid.batch_update():
            self.grid.data[_HEAT].z = compact(heads, 5).tolist()
            self._mlp_notes(None)
            self.grid.layout.title.text = plotly_text(f"Direct contribution of each head to '{label}'")
        with self.bars.batch_update():
            x = list(range(self.num_layers))
            self.bars.data[_ATTN_BARS].update(x=x, y=compact(layers, 5).tolist())
            self.bars.data[_MLP_BARS].update(x=x, y=compact(mlps, 5).tolist())
            self.bars.layout.title.text = plotly_text(f"Per-layer contribution to '{label}'")

    def show_ablation(self, ablation: Ablation) -> None:
        """Mark what is ablated on the grid (heads crossed out, attention layers hatched across their
        row, MLP cells greyed and crossed) and grey the bars of ablated attention layers and MLPs."""
        heads, layers, mlps = sorted(ablation.heads), sorted(ablation.attn_layers), sorted(ablation.mlps)
        right, mlp_x = self.num_heads - 0.5, self.num_heads + MLP_GAP
        rows = [(l, [-0.5, right, right, -0.5, -0.5], [l - 0.5, l - 0.5, l + 0.5, l + 0.5, l - 0.5]) for l in layers]
        with self.grid.batch_update():
            self.grid.data[_ABLATED].update(x=[h for _, h in heads], y=[l for l, _ in heads])
            self.grid.data[_LAYERS].update(x=[v for _, xs, _ in rows for v in xs + [None]],
                                           y=[v for _, _, ys in rows for v in ys + [None]],
                                           customdata=[l for l, xs, _ in rows for _ in xs + [None]])
            self.grid.data[_MLP_CELLS].z = [[0.0 if l in ablation.mlps else 1.0] for l in range(self.num_layers)]
            self.grid.data[_MLP_ABLATED].update(x=[mlp_x] * len(mlps), y=mlps)
            self.grid.data[_HEAT].text = [[_ablated_note(ablation, l, h) for h in range(self.num_heads)]
                                          for l in range(self.num_layers)]
            self._mlp_notes(ablation)
        with self.bars.batch_update():
            layers = range(self.num_layers)
            self.bars.data[_ATTN_BARS].marker.color = [ABLATED_BAR_COLOR if l in ablation.attn_layers else ATTN_COLOR
                                                       for l in layers]
            self.bars.data[_MLP_BARS].marker.color = [ABLATED_BAR_COLOR if l in ablation.mlps else MLP_COLOR
                                                      for l in layers]

    def _mlp_notes(self, ablation: Ablation | None) -> None:
        """Hover text of the MLP cells: contribution, and whether mean-ablated (None: as last shown)."""
        self._ablation_shown = ablation = self._ablation_shown if ablation is None else ablation
        values = self._mlp_values or [None] * self.num_layers
        self.grid.data[_MLP_CELLS].text = [
            [f"MLP of layer {l}" + ("" if v is None else f"<br>contribution {v:.4f}")
             + ("<br>mean-ablated" if l in ablation.mlps else "")] for l, v in enumerate(values)]

    def show_selected(self, head: tuple[int, int] | None) -> None:
        self.grid.data[_SELECTED].update(x=[head[1]] if head else [], y=[head[0]] if head else [])

    def show_texts(self, head: tuple[int, int] | None, texts: Sequence[tuple[str, float]] | None,
                   image_count: int) -> None:
        """The selected head's TEXTSPAN texts; ``texts`` None while they are being found."""
        self._texts = {"head": head, "texts": [t for t, _ in texts or ()], "busy": head is not None and texts is None}
        if head is None:
            self.texts.value = texts_placeholder()
        elif texts is None:
            self.texts.value = texts_placeholder(head, busy=True)
        else:
            self.texts.value = texts_table(head, texts, image_count)

    def show_maps(self, index: int, rgb: np.ndarray, labels: Sequence[str], label: str, full: np.ndarray,
                  head: np.ndarray | None, selected: tuple[int, int] | None, step: int, cmap: str,
                  opacity: float) -> None:
        """Image ``index`` (``rgb``) with ``label``'s maps among ``labels``: ``full`` from all heads,
        ``head`` from the ``selected`` one; each [h, w] in [0, 1] at every ``step``-th pixel."""
        panels = [(FULL_PANEL, full, f"all heads: {label}")]
        if selected is not None and head is not None:
            panels.append((HEAD_PANEL, head, f"layer {selected[0]}, head {selected[1]}: {label}"))
        titles = [title for _, _, title in panels] + ([] if len(panels) > 1 else ["click a head in the grid"])
        scale = plotly_colorscale(cmap)
        with self.maps.fig.batch_update():
            self.maps.set_titles([plotly_text(t) for t in titles])
            for panel in (FULL_PANEL, HEAD_PANEL):
                self.maps.set_image(panel, rgb, key=index)
            for panel, heat, _ in panels:
                self.maps.set_heat(panel, (index, tuple(labels), label, selected if panel else None, step), heat, step)
                self.maps.set_style(panel, scale, opacity, showscale=panel == HEAD_PANEL or len(panels) == 1)
            if len(panels) == 1:
                self.maps.clear_panel(HEAD_PANEL)

    def show_prediction(self, labels: Sequence[str] | None, before: np.ndarray | None = None,
                        after: np.ndarray | None = None, ablation: Ablation | None = None) -> None:
        """The zero-shot readout; ``labels`` None while the image set is being decomposed."""
        if labels is None:
            self._readout = None
            self.readout.value = ("<div style='font-size:0.92em;color:#777'><i>The zero-shot readout appears once "
                                  "the image set is decomposed.</i></div>")
            return
        what = ablation_text(ablation)
        top_b, top_a = labels[int(np.argmax(before))], labels[int(np.argmax(after))]
        self._readout = {"labels": list(labels), "top_before": top_b, "top_after": top_a, "ablated": what}
        self.readout.value = readout_html(labels, before, after, what)

    # --- clicks and description ----------------------------------------------------------------

    def click_cell(self, layer: int, head: int) -> None:
        """Act as a click on grid cell (layer, head): the same route as a real click."""
        self._on_cell(int(layer), int(head))

    def describe(self) -> dict:
        """What a person sees, as plain values.

        grid: title, values ([L][H] as drawn), ablated heads, ablated_layers (rows hatched),
              ablated_mlps (MLP cells crossed), selected head.
        bars: title, attention / mlp values, ablated_layers / ablated_mlps (greyed bars).
        maps: the map panels (see PanelFigure.describe) plus heat_max per shown panel.
        readout: labels, top_before, top_after, ablated (text), or None while missing.
        texts: the head whose texts are shown, the texts, busy (still being found).
        """
        grid, bars = self.grid.data, self.bars.data
        ablated = zip(grid[_ABLATED].x or (), grid[_ABLATED].y or ())
        maps = self.maps.describe()
        maps["heat_max"] = [_max(self.maps.trace(p, HEAT_TRACE).z) for p in range(self.maps.n_panels)]
        return {
            "grid": {"title": html.unescape(self.grid.layout.title.text or ""),
                     "values": [list(row) for row in grid[_HEAT].z] if grid[_HEAT].z is not None else [],
                     "ablated": sorted((int(y), int(x)) for x, y in ablated),
                     "ablated_layers": sorted({int(l) for l in grid[_LAYERS].customdata or () if l is not None}),
                     "ablated_mlps": sorted(int(l) for l in grid[_MLP_ABLATED].y or ()),
                     "selected": (int(grid[_SELECTED].y[0]), int(grid[_SELECTED].x[0])) if grid[_SELECTED].x else None},
            "bars": {"title": html.unescape(self.bars.layout.title.text or ""),
                     "attention": list(bars[_ATTN_BARS].y or ()), "mlp": list(bars[_MLP_BARS].y or ()),
                     "ablated_layers": _greyed(bars[_ATTN_BARS].marker.color),
                     "ablated_mlps": _greyed(bars[_MLP_BARS].marker.color)},
            "maps": maps,
            "readout": None if self._readout is None else dict(self._readout),
            "texts": dict(self._texts),
        }

    # --- building --------------------------------------------------------------------------------

    def _grid_figure(self) -> go.FigureWidget:
        layers, heads = self.num_layers, self.num_heads
        fig = LiveFigure([
            go.Heatmap(z=np.zeros((layers, heads)).tolist(), x=list(range(heads)), y=list(range(layers)),
                       colorscale="RdBu", reversescale=True, zmid=0.0, xgap=1, ygap=1, name="heads",
                       colorbar=dict(title=dict(text="contribution", side="right"), thickness=12),
                       hovertemplate="layer %{y}, head %{x}<br>contribution %{z:.4f}%{text}<extra></extra>",
                       text=[[""] * heads] * layers),
            go.Scatter(x=[], y=[], mode="markers", name="ablated", hoverinfo="skip",
                       marker=dict(symbol="x-thin", size=14, line=dict(width=3, color="#333"))),
            go.Scatter(x=[], y=[], mode="markers", name="selected", hoverinfo="skip",
                       marker=dict(symbol="square-open", size=22, color=MARKER_COLOR, line=dict(width=3))),
            # An ablated attention layer: its whole row hatched (as in the static figure) and framed.
            go.Scatter(x=[], y=[], customdata=[], mode="lines", fill="toself", name="ablated layers",
                       hoverinfo="skip", hoveron="points", line=dict(width=2, color=ABLATED_COLOR),
                       fillcolor="rgba(255,255,255,0.35)",
                       fillpattern=dict(shape="/", fgcolor=ABLATED_COLOR, size=9, solidity=0.2)),
            # The MLP of each block, one cell per layer right of the heads; an ablated one greyed and crossed.
            # (placed by x0 and dx: with a one-element x array it was drawn at x = 0 after a page reload)
            go.Heatmap(z=[[1.0]] * layers, x0=heads + MLP_GAP, dx=1, y=list(range(layers)), zmin=0, zmax=1,
                       colorscale=[[0, ABLATED_BAR_COLOR], [1, MLP_CELL_COLOR]], showscale=False, ygap=1,
                       name="MLPs", text=[[""]] * layers, hovertemplate="%{text}<extra></extra>"),
            go.Scatter(x=[], y=[], mode="markers", name="ablated MLPs", hoverinfo="skip",
                       marker=dict(symbol="x-thin", size=14, line=dict(width=3, color="#333"))),
        ])
        fig._config = dict(FIGURE_CONFIG)
        # autosize: plotly sizes the figure to its box at every redraw (the first draw may happen
        # before the box is on the page, at plotly's default 700 px).
        height = max(260, 26 * layers + 110)
        fig.update_layout(height=height, autosize=True, showlegend=False, dragmode=False,
                          margin=dict(l=50, r=10, t=TITLE_TOP + 28, b=40), title=_title_below_toolbar(height),
                          xaxis=dict(title=dict(text="head"), range=[-0.5, heads + MLP_GAP + 0.5],
                                     tickvals=list(range(heads)) + [heads + MLP_GAP],
                                     ticktext=[str(h) for h in range(heads)] + ["MLP"]),
                          yaxis=dict(title=dict(text="layer"), dtick=1, autorange="reversed"))
        fig.data[_HEAT].on_click(self._on_plotly_click)
        return fig

    def _on_plotly_click(self, trace, points, state) -> None:
        if points.point_inds:
            self.click_cell(int(round(points.ys[0])), int(round(points.xs[0])))

    @staticmethod
    def _bar_figure() -> go.FigureWidget:
        # Bars 0-1 carry the data (ablated layers greyed); 2-4 are legend entries with fixed colours.
        fig = LiveFigure([go.Bar(x=[], y=[], name="attention", marker=dict(color=ATTN_COLOR), showlegend=False),
                               go.Bar(x=[], y=[], name="MLP", marker=dict(color=MLP_COLOR), showlegend=False)]
                              + [go.Bar(x=[None], y=[None], name=name, marker=dict(color=colour), hoverinfo="skip")
                                 for name, colour in (("attention", ATTN_COLOR), ("MLP", MLP_COLOR),
                                                      ("mean-ablated", ABLATED_BAR_COLOR))])
        fig._config = dict(FIGURE_CONFIG)
        # The legend goes under the plot: above it, it would meet the title or the plotly toolbar.
        fig.update_layout(height=280, autosize=True, margin=dict(l=50, r=10, t=TITLE_TOP + 28, b=70),
                          barmode="group", title=_title_below_toolbar(280),
                          xaxis=dict(title=dict(text="layer"), dtick=1), yaxis=dict(title=dict(text="contribution")),
                          legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0.5,
                                      xanchor="center"))
        return fig


def _title_below_toolbar(height: int) -> dict:
    """An empty title, left-aligned, its top TITLE_TOP px under the figure's top (the toolbar's row)."""
    return dict(text="", font=dict(size=13), x=0, xref="paper", xanchor="left", yref="container",
                y=1 - TITLE_TOP / height, yanchor="top")


def _ablated_note(ablation: Ablation, layer: int, head: int) -> str:
    """The hover line of a grid cell whose head is mean-ablated (by itself or with its layer)."""
    if layer in ablation.attn_layers:
        return f"<br>mean-ablated (attention layer {layer})"
    return "<br>mean-ablated" if (layer, head) in ablation.heads else ""


# --- HTML ----------------------------------------------------------------------------------------

#: how to read the TEXTSPAN list (its shares depend on the order the texts were chosen in)
TEXTS_ORDER = ("In the order TEXTSPAN chose them (greedily, one after the other). Each share is the part of "
               "the head's variance over the image set that the text explains once the texts above it are "
               "taken out, so the shares follow this order and add up to at most 100%.")


def texts_placeholder(head: tuple[int, int] | None = None, busy: bool = False) -> str:
    if head is None:
        return "<i>Click a head in the grid to see what it encodes (its TEXTSPAN texts) and its map.</i>"
    return f"<b>Layer {head[0]}, head {head[1]}</b><br><i>{'Finding its texts…' if busy else ''}</i>"


def texts_table(head: tuple[int, int], texts: Sequence[tuple[str, float]], count: int) -> str:
    if not texts:
        body = "<i>This head's output does not vary over the image set.</i>"
    else:
        rows = "".join(f"<li>{html.escape(text)} <span style='color:#888'>({100 * frac:.1f}%)</span></li>"
                       for text, frac in texts)
        total = 100 * sum(frac for _, frac in texts)
        body = (f"<ol style='margin:4px 0;padding-left:22px'>{rows}</ol>"
                f"<div style='color:#777;font-size:0.9em'>Together: {total:.1f}% of the head's variance.</div>")
    return (f"<div><b>Layer {head[0]}, head {head[1]}</b> · TEXTSPAN over {count} image{'s' * (count != 1)}"
            f"<div class='csw-texts-order' style='color:#777;font-size:0.9em'>{TEXTS_ORDER}</div>{body}</div>")


def ablation_text(ablation: Ablation | None) -> str:
    """What is mean-ablated, in words ("nothing" when empty)."""
    parts = []
    if ablation is not None:
        if ablation.heads:
            parts.append(f"{len(ablation.heads)} head{'s' * (len(ablation.heads) != 1)}")
        if ablation.attn_layers:
            parts.append("attention " + ", ".join(map(str, sorted(ablation.attn_layers))))
        if ablation.mlps:
            parts.append("MLP " + ", ".join(map(str, sorted(ablation.mlps))))
        if ablation.embedding:
            parts.append("embedding")
    return "; ".join(parts) if parts else "nothing"


def readout_html(labels: Sequence[str], before: np.ndarray, after: np.ndarray, what: str) -> str:
    top_b, top_a = int(np.argmax(before)), int(np.argmax(after))
    rows = "".join(f"<tr><td>{html.escape(label)}</td><td style='text-align:right'>{100 * b:.1f}%</td>"
                   f"<td style='text-align:right'>{100 * a:.1f}%</td></tr>"
                   for label, b, a in zip(labels, before, after))
    return ("<div style='font-size:0.92em'>"
            f"<b>Zero-shot:</b> <span class='csw-top-before'>{html.escape(labels[top_b])}</span> "
            f"({100 * before[top_b]:.1f}%) → with mean-ablation of {html.escape(what)}: "
            f"<span class='csw-top-after'>{html.escape(labels[top_a])}</span> ({100 * after[top_a]:.1f}%)"
            "<details><summary style='cursor:pointer;color:#777'>all labels</summary>"
            "<table><tr><th>label</th><th>before</th><th>after</th></tr>"
            f"{rows}</table></details></div>")


def _greyed(colours: Sequence[str] | None) -> list[int]:
    return [i for i, c in enumerate(colours or ()) if c == ABLATED_BAR_COLOR]


def _max(z: object) -> float | None:
    values = np.asarray(z if z is not None else [], dtype=float)
    return float(np.nanmax(values)) if values.size else None
