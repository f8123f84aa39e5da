"""DecompositionView: what DecompositionExplorer shows, as plotly figures and HTML.

A layer x head grid of direct contributions (with ablated heads crossed out and the selected head
outlined), a per-layer bar chart (attention and MLP, ablated ones greyed), two map panels (all
heads, the selected head), the zero-shot readout and the selected head's TEXTSPAN texts. The
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
from ..figures.style import MARKER_COLOR
from .live_figure import LiveFigure
from .plotting import HEAT_TRACE, PanelFigure, compact, plotly_colorscale, plotly_text

FULL_PANEL, HEAD_PANEL = 0, 1
_HEAT, _ABLATED, _SELECTED = 0, 1, 2  # grid traces
_ATTN_BARS, _MLP_BARS = 0, 1  # bar traces carrying data; the others are legend entries


class DecompositionView:
    """The plotly figures and HTML panes of the explorer.

    ``on_cell(layer, head)`` is called when a grid cell is clicked (by the mouse or :meth:`click_cell`).
    """

    def __init__(self, num_layers: int, num_heads: int, on_cell: Callable[[int, int], None]):
        self.num_layers, self.num_heads = num_layers, num_heads
        self._on_cell = on_cell
        self.grid = self._grid_figure()
        self.bars = self._bar_figure()
        self.maps = PanelFigure(2)
        self.maps.arrange(2, 2, 330)
        self.readout = widgets.HTML().add_class("csw-readout")
        self.texts = widgets.HTML(value=texts_placeholder()).add_class("csw-head-texts")
        self._readout: dict | None = None
        self._texts: dict = {"head": None, "texts": [], "busy": False}
        texts_box = widgets.VBox([self.texts], layout=widgets.Layout(width="340px", overflow="auto"))
        self.grid_box = widgets.HBox([widgets.Box([self.grid]).add_class("csw-grid"), texts_box],
                                     layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        self.bars_box = widgets.Box([self.bars]).add_class("csw-layer-bars")
        self.maps_box = widgets.Box([self.maps.fig]).add_class("csw-maps")

    # --- what is shown -------------------------------------------------------------------------

    def show_contributions(self, label: str, heads: np.ndarray, layers: np.ndarray, mlps: np.ndarray) -> None:
        """heads: [L, H], layers and mlps: [L] direct contributions to ``label``."""
        with self.grid.batch_update():
            self.grid.data[_HEAT].z = compact(heads, 5).tolist()
            self.grid.layout.title.text = plotly_text(f"Direct contribution of each head to '{label}'")
        with self.bars.batch_update():
            x = list(range(self.num_layers))
            self.bars.data[_ATTN_BARS].update(x=x, y=compact(layers, 5).tolist())
            self.bars.data[_MLP_BARS].update(x=x, y=compact(mlps, 5).tolist())
            self.bars.layout.title.text = plotly_text(f"Per-layer contribution to '{label}'")

    def show_ablation(self, ablation: Ablation) -> None:
        """Cross out ablated heads; grey the bars of ablated attention layers and MLPs."""
        heads = sorted(ablation.heads)
        self.grid.data[_ABLATED].update(x=[h for _, h in heads], y=[l for l, _ in heads])
        with self.bars.batch_update():
            layers = range(self.num_layers)
            self.bars.data[_ATTN_BARS].marker.color = [ABLATED_BAR_COLOR if l in ablation.attn_layers else ATTN_COLOR
                                                       for l in layers]
            self.bars.data[_MLP_BARS].marker.color = [ABLATED_BAR_COLOR if l in ablation.mlps else MLP_COLOR
                                                      for l in layers]

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

        grid: title, values ([L][H] as drawn), ablated heads, selected head.
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
                       hovertemplate="layer %{y}, head %{x}<br>contribution %{z:.4f}<extra></extra>"),
            go.Scatter(x=[], y=[], mode="markers", name="ablated", hoverinfo="skip",
                       marker=dict(symbol="x-thin", size=14, line=dict(width=3, color="#333"))),
            go.Scatter(x=[], y=[], mode="markers", name="selected", hoverinfo="skip",
                       marker=dict(symbol="square-open", size=22, color=MARKER_COLOR, line=dict(width=3))),
        ])
        fig.update_layout(height=max(260, 26 * layers + 90), width=max(320, 40 * heads + 200), showlegend=False,
                          margin=dict(l=50, r=10, t=36, b=40), dragmode=False, title=dict(text="", font=dict(size=13)),
                          xaxis=dict(title=dict(text="head"), dtick=1, range=[-0.5, heads - 0.5]),
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
        fig.update_layout(height=240, margin=dict(l=50, r=10, t=36, b=40), barmode="group",
                          title=dict(text="", font=dict(size=13)), xaxis=dict(title=dict(text="layer"), dtick=1),
                          yaxis=dict(title=dict(text="contribution")),
                          legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
        return fig


# --- HTML ----------------------------------------------------------------------------------------

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
        body = f"<ol style='margin:4px 0;padding-left:22px'>{rows}</ol>"
    return (f"<div><b>Layer {head[0]}, head {head[1]}</b> · TEXTSPAN over {count} image{'s' * (count != 1)} "
            f"<span style='color:#888'>(share of the head's variance)</span>{body}</div>")


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
