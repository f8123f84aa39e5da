"""DecompositionExplorer: which attention heads carry a label, what they encode, and what ablating them does."""
from __future__ import annotations

import html
import math
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..engine.cache import LRUCache
from ..engine.decomposition.ablation import (
    IMAGE_SUFFIXES,
    Ablation,
    ablated_embeddings,
    mean_terms,
    zero_shot_probs,
)
from ..engine.decomposition.dataset_pass import decompose_images
from ..engine.decomposition.terms import (
    Decomposition,
    decompose,
    spatial_maps,
    vision_tower,
)
from ..engine.decomposition.textspan import encode_text_pool, text_pool, text_span
from ..engine.errors import ClipSurgeryError, ImageInputError, TextInputError
from ..engine.images import preprocess
from ..engine.regions import display_step
from ..engine.text.encoding import TEMPLATES
from ..figures import decomposition as figures_decomposition
from .base import ExplorerWidget
from .plotting import PanelFigure, plotly_colorscale

CLICK_MODES = (("inspect head", "inspect"), ("ablate head", "ablate"))
FULL_PANEL, HEAD_PANEL = 0, 1
ATTN_COLOR, MLP_COLOR, ABLATED_COLOR = "#1f77b4", "#ff7f0e", "#bbbbbb"
_WIDE = {"description_width": "initial"}
_TOGGLE = widgets.Layout(width="46px", padding="0px")


class DecompositionExplorer(ExplorerWidget):
    """Explore the text-based decomposition of a CLIP ViT's image embedding (Gandelsman et al.).

    The grid shows every (layer, head) coloured by its direct contribution to the chosen label on
    the current image. Click a head to see its TEXTSPAN descriptions (texts from the pool that best
    explain how that head's output varies over the image set) and its map on the image. Mean-ablate
    heads, attention layers, MLPs or the embedding (means over the image set) and watch the
    zero-shot prediction change.

    Args:
        explainer: an ``engine.Explainer`` with a ViT model.
        images: the image set (paths, arrays, PIL images, or a folder path); it gives TEXTSPAN its
            data and ablation its means. Browse it with the image menu.
        texts: TEXTSPAN text pool: None (the pool shipped with the package), a file path, or a list.
        labels: zero-shot candidate labels (list or comma-separated string).
        label: the label the grid is coloured by (default the first).
        m, rank: TEXTSPAN texts per head and projection rank.
        cache_dir: where per-image terms and the encoded pool are kept (None: the user cache dir).
    """

    def __init__(self, explainer: Any, images: Sequence[Any] | str | os.PathLike,
                 texts: Sequence[str] | str | os.PathLike | None = None,
                 labels: Sequence[str] | str = ("cat", "dog", "car", "tree", "sky"), *, label: str | None = None,
                 m: int = 10, rank: int = 80, cmap: str = "jet", opacity: float = 0.6,
                 cache_dir: str | os.PathLike | bool | None = None, heat_side: int = 200):
        super().__init__()
        self.explainer = explainer
        self._images = _image_list(images)
        self._texts = text_pool(texts)
        self.m, self.rank, self.cmap, self.opacity, self.heat_side = m, rank, cmap, opacity, heat_side
        self._cache_dir = cache_dir
        visual = vision_tower(explainer)  # refuses ResNets with a clear message
        self._num_layers = len(visual.transformer.resblocks)
        self._num_heads = visual.transformer.resblocks[0].attn.num_heads
        self._stop = threading.Event()
        self._set_terms = self._means = self._pool = None
        self._decomps = LRUCache(2)  # image index -> (rgb, Decomposition)
        self._head_texts: dict[tuple[int, int], list[tuple[str, float]]] = {}
        self._shown: dict | None = None  # image, decomposition, labels and label features on screen
        self._ablation = Ablation()
        self._selected: tuple[int, int] | None = None
        self._wanted_label = label
        self._syncing = False
        self._build(labels)
        self._wire()
        self._request()

    # --- Python API --------------------------------------------------------------------------

    @property
    def images(self) -> list[Any]:
        return list(self._images)

    @property
    def image_index(self) -> int:
        """Index of the current image in the set."""
        return self.controls["image"].value

    @image_index.setter
    def image_index(self, value: int) -> None:
        if not 0 <= int(value) < len(self._images):
            raise ValueError(f"image_index must be from 0 to {len(self._images) - 1}, not {value}.")
        self.controls["image"].value = int(value)

    @property
    def labels(self) -> list[str]:
        """Zero-shot candidate labels; set a list or a comma-separated string."""
        return list(dict.fromkeys(p.strip() for p in self.controls["labels"].value.split(",") if p.strip()))

    @labels.setter
    def labels(self, value: Sequence[str] | str) -> None:
        self.controls["labels"].value = value if isinstance(value, str) else ", ".join(value)

    @property
    def label(self) -> str | None:
        """The label the grid, bars and maps are about."""
        return self.controls["label"].value

    @label.setter
    def label(self, value: str) -> None:
        if self._shown is None and value in self.labels:
            self._wanted_label = value  # chosen before the first result: applied when it arrives
            return
        if value not in self.controls["label"].options:
            raise TextInputError(f"Label {value!r} is not one of the labels ({', '.join(self.labels)}); add it first.")
        self.controls["label"].value = value

    @property
    def ablation(self) -> Ablation:
        """What is mean-ablated now; set an Ablation to replace it."""
        return self._ablation

    @ablation.setter
    def ablation(self, value: Ablation) -> None:
        value.check(self._num_layers, self._num_heads)
        with self._lock:
            self._ablation = value
            self._sync_toggles()
            self._redraw_ablation()

    def toggle_head(self, layer: int, head: int) -> Ablation:
        heads = set(self._ablation.heads) ^ {(int(layer), int(head))}
        self.ablation = Ablation(heads=heads, attn_layers=self._ablation.attn_layers, mlps=self._ablation.mlps,
                                 embedding=self._ablation.embedding)
        return self._ablation

    def toggle_layer(self, layer: int, kind: str = "attn") -> Ablation:
        """Toggle mean-ablation of attention layer (kind "attn") or MLP (kind "mlp") ``layer``."""
        button = self._toggles[kind][int(layer)]  # its observer updates the ablation
        button.value = not button.value
        return self._ablation

    def ablate_all_but_last(self, k: int = 4) -> Ablation:
        """Mean-ablate every attention layer except the last ``k`` (the paper's check)."""
        self.ablation = Ablation(attn_layers=range(max(0, self._num_layers - k)))
        return self._ablation

    def clear_ablation(self) -> None:
        self.ablation = Ablation()

    @property
    def selected_head(self) -> tuple[int, int] | None:
        return self._selected

    def select_head(self, layer: int, head: int) -> list[tuple[str, float]]:
        """Select a head (as clicking it in "inspect" mode does); returns its TEXTSPAN texts."""
        self.wait(self.display_timeout)
        self._select(int(layer), int(head))
        self.wait(self.display_timeout)
        return self._head_texts.get(self._selected, [])

    def click_cell(self, layer: int, head: int) -> None:
        """Do what a click on grid cell (layer, head) does in the current click mode."""
        self.wait(self.display_timeout)
        self._on_grid_click(layer, head)

    def head_texts(self, layer: int, head: int) -> list[tuple[str, float]]:
        """TEXTSPAN texts of one head over the image set (computes what is missing; may take a while)."""
        self.wait(self.display_timeout)
        self._ensure_set_terms()
        self._ensure_pool()
        return self._texts_for((int(layer), int(head)))

    @property
    def prediction(self) -> dict | None:
        """Zero-shot prediction of the current image: labels, probs before/after ablation, top labels."""
        return self._prediction

    @property
    def contributions(self) -> np.ndarray | None:
        """[L, H] direct contribution of each head to the label on the current image (on screen)."""
        return self._contributions

    @property
    def set_terms(self):
        """Per-head terms of the image set (ImageSetTerms), once computed."""
        return self._set_terms

    @property
    def decomposition(self):
        """Spatial Decomposition of the current image on screen (or None)."""
        return self._shown["decomposition"] if self._shown else None

    grid_figure = property(lambda self: self._grid, doc="The layer x head grid (plotly FigureWidget).")
    bar_figure = property(lambda self: self._bars, doc="The per-layer bar chart (plotly FigureWidget).")
    map_figure = property(lambda self: self._maps.fig, doc="The two map panels (all heads, selected head).")
    readout_html = property(lambda self: self._readout.value, doc="HTML of the zero-shot readout.")
    texts_html = property(lambda self: self._texts_html.value, doc="HTML of the selected head's texts.")

    def stop(self) -> None:
        """Stop a running pass over the image set; what is done stays saved and the next update resumes."""
        self._stop.set()

    def resume(self) -> None:
        """Run again whatever is missing (after :meth:`stop` or an error)."""
        self._request()

    # --- controls ----------------------------------------------------------------------------

    def _build(self, labels) -> None:
        names = [(f"{i + 1}: {_image_name(img, i)}", i) for i, img in enumerate(self._images)]
        c = self.controls = {
            "image": widgets.Dropdown(options=names, value=0, description="Image", style=_WIDE,
                                      layout=widgets.Layout(width="260px")),
            "labels": widgets.Text(value=labels if isinstance(labels, str) else ", ".join(labels),
                                   description="Labels", continuous_update=False, style=_WIDE,
                                   placeholder="comma-separated zero-shot labels",
                                   layout=widgets.Layout(flex="1 1 300px")),
            "label": widgets.Dropdown(options=[], description="Colour by", style=_WIDE,
                                      layout=widgets.Layout(width="220px")),
            "mode": widgets.ToggleButtons(options=CLICK_MODES, value="inspect", description="Click a head to",
                                          style={**_WIDE, "button_width": "112px"}),
            "embedding": widgets.ToggleButton(value=False, description="embedding", tooltip="mean-ablate e",
                                              layout=widgets.Layout(width="108px")),
            "clear": widgets.Button(description="Clear ablations", layout=widgets.Layout(width="120px")),
            "last4": widgets.Button(description="Ablate all but last 4", layout=widgets.Layout(width="160px"),
                                    tooltip="mean-ablate every attention layer except the last four"),
            "stop": widgets.Button(description="Stop", tooltip="stop the pass over the image set (it resumes later)",
                                   layout=widgets.Layout(width="70px")),
        }
        self._toggles = {kind: [widgets.ToggleButton(value=False, description=f"{prefix}{l}", layout=_TOGGLE,
                                                     tooltip=f"mean-ablate {what} {l}")
                                for l in range(self._num_layers)]
                         for kind, prefix, what in (("attn", "A", "attention layer"), ("mlp", "M", "MLP"))}
        for name, control in c.items():
            control.add_class(f"csw-{name}")
        for kind, buttons in self._toggles.items():
            for l, button in enumerate(buttons):
                button.add_class(f"csw-{kind}-{l}")
        self._readout = widgets.HTML().add_class("csw-readout")
        self._texts_html = widgets.HTML(value=_texts_placeholder()).add_class("csw-head-texts")
        self._grid = self._grid_widget()
        self._bars = self._bar_widget()
        self._maps = PanelFigure(2)
        self._maps.arrange(2, 2, 330)
        self._prediction = self._contributions = None
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        small = widgets.Layout(flex_flow="row wrap", align_items="center")
        head_box = widgets.VBox([self._texts_html], layout=widgets.Layout(width="340px", overflow="auto"))
        self.children = [
            widgets.HBox([c["image"], c["labels"], c["label"]], layout=wrap),
            widgets.HBox([c["mode"], c["clear"], c["last4"], c["embedding"], c["stop"]], layout=wrap),
            widgets.HBox([widgets.Label("Attention:")] + self._toggles["attn"], layout=small),
            widgets.HBox([widgets.Label("MLPs:")] + self._toggles["mlp"], layout=small),
            self._status_html, self._error_html, self._readout,
            widgets.HBox([widgets.Box([self._grid]).add_class("csw-grid"), head_box], layout=wrap),
            widgets.Box([self._bars]).add_class("csw-layer-bars"), widgets.Box([self._maps.fig]).add_class("csw-maps"),
        ]

    def _grid_widget(self) -> go.FigureWidget:
        layers, heads = self._num_layers, self._num_heads
        fig = go.FigureWidget([
            go.Heatmap(z=np.zeros((layers, heads)).tolist(), x=list(range(heads)), y=list(range(layers)),
                       colorscale="RdBu", reversescale=True, zmid=0.0, xgap=1, ygap=1, name="heads",
                       colorbar=dict(title=dict(text="contribution", side="right"), thickness=12),
                       hovertemplate="layer %{y}, head %{x}<br>contribution %{z:.4f}<extra></extra>"),
            go.Scatter(x=[], y=[], mode="markers", name="ablated", hoverinfo="skip",
                       marker=dict(symbol="x-thin", size=14, line=dict(width=3, color="#333"))),
            go.Scatter(x=[], y=[], mode="markers", name="selected", hoverinfo="skip",
                       marker=dict(symbol="square-open", size=22, color="#ff2bd6", line=dict(width=3))),
        ])
        fig.update_layout(height=max(260, 26 * layers + 90), width=max(320, 40 * heads + 200), showlegend=False,
                          margin=dict(l=50, r=10, t=36, b=40), dragmode=False, title=dict(text="", font=dict(size=13)),
                          xaxis=dict(title=dict(text="head"), dtick=1, range=[-0.5, heads - 0.5]),
                          yaxis=dict(title=dict(text="layer"), dtick=1, autorange="reversed"))
        fig.data[0].on_click(self._guarded(self._on_heatmap_click, "reading the clicked head"))
        return fig

    def _bar_widget(self) -> go.FigureWidget:
        # Bars 0-1 carry the data (ablated layers greyed); 2-3 are legend entries with fixed colours.
        fig = go.FigureWidget([go.Bar(x=[], y=[], name="attention", marker=dict(color=ATTN_COLOR), showlegend=False),
                               go.Bar(x=[], y=[], name="MLP", marker=dict(color=MLP_COLOR), showlegend=False)]
                              + [go.Bar(x=[None], y=[None], name=name, marker=dict(color=colour), hoverinfo="skip")
                                 for name, colour in (("attention", ATTN_COLOR), ("MLP", MLP_COLOR),
                                                      ("mean-ablated", ABLATED_COLOR))])
        fig.update_layout(height=240, margin=dict(l=50, r=10, t=36, b=40), barmode="group",
                          title=dict(text="", font=dict(size=13)), xaxis=dict(title=dict(text="layer"), dtick=1),
                          yaxis=dict(title=dict(text="contribution")), legend=dict(orientation="h", y=1.12, x=1,
                                                                                    xanchor="right"))
        return fig

    def _wire(self) -> None:
        c = self.controls
        request = self._guarded(lambda change: self._request(), "reading the settings")
        c["image"].observe(request, names="value")
        c["labels"].observe(request, names="value")
        c["label"].observe(self._guarded(lambda ch: self._syncing or self._redraw(), "drawing"), names="value")
        c["embedding"].observe(self._guarded(self._on_toggle, "changing the ablation"), names="value")
        for buttons in self._toggles.values():
            for button in buttons:
                button.observe(self._guarded(self._on_toggle, "changing the ablation"), names="value")
        c["clear"].on_click(self._guarded(lambda b: self.clear_ablation(), "clearing the ablation"))
        c["last4"].on_click(self._guarded(lambda b: self.ablate_all_but_last(4), "changing the ablation"))
        c["stop"].on_click(self._guarded(lambda b: self.stop(), "stopping"))

    def _on_toggle(self, change: dict) -> None:
        if self._syncing:
            return
        attn = {l for l, b in enumerate(self._toggles["attn"]) if b.value}
        mlps = {l for l, b in enumerate(self._toggles["mlp"]) if b.value}
        with self._lock:
            self._ablation = Ablation(heads=self._ablation.heads, attn_layers=attn, mlps=mlps,
                                      embedding=self.controls["embedding"].value)
            self._redraw_ablation()

    def _sync_toggles(self) -> None:
        self._syncing = True
        try:
            for kind, chosen in (("attn", self._ablation.attn_layers), ("mlp", self._ablation.mlps)):
                for l, button in enumerate(self._toggles[kind]):
                    button.value = l in chosen
            self.controls["embedding"].value = self._ablation.embedding
        finally:
            self._syncing = False

    def _on_heatmap_click(self, trace, points, state) -> None:
        if points.point_inds:
            self._on_grid_click(int(round(points.ys[0])), int(round(points.xs[0])))

    def _on_grid_click(self, layer: int, head: int) -> None:
        if not (0 <= layer < self._num_layers and 0 <= head < self._num_heads):
            raise ValueError(f"There is no head ({layer}, {head}): layers 0..{self._num_layers - 1}, "
                             f"heads 0..{self._num_heads - 1}.")
        if self.controls["mode"].value == "ablate":
            self.toggle_head(layer, head)
        else:
            self._select(layer, head)

    # --- background work ---------------------------------------------------------------------

    def _request(self) -> None:
        labels = self.labels
        if not labels:
            raise TextInputError("Type at least one label, e.g. 'cat, dog' (separate labels with commas).")
        index, selected = self.image_index, self._selected
        self._stop.clear()
        self._submit(work=lambda: self._compute(index, labels, selected), apply=self._apply,
                     busy_text="Preparing the decomposition…", doing="decomposing the images",
                     done_text=lambda r, s: f"{len(self._images)} images decomposed · {len(labels)} labels · "
                                            f"{s:.2f} s")

    def _compute(self, index: int, labels: list[str], selected: tuple[int, int] | None) -> dict:
        self._ensure_set_terms()
        cached = self._decomps.get(index)
        if cached is None:
            self._set_status(f"Decomposing image {index + 1} (every layer, head and position)…", busy=True)
            rgb = self.explainer.prepare_image(self._images[index])
            model = self.explainer.model
            pixels = preprocess(rgb, tuple(model.image_size), model.mean, model.std, model.patch_size)
            cached = (rgb, _to_cpu(decompose(model, pixels.to(model.device), spatial=True)))
            self._decomps.put(index, cached)
        self._set_status(f"Encoding {len(labels)} labels…", busy=True)
        features = self.explainer.label_features(labels, TEMPLATES)
        if selected is not None:
            self._ensure_pool()
            self._texts_for(selected)
        return dict(index=index, rgb=cached[0], decomposition=cached[1], labels=labels, features=features)

    def _ensure_set_terms(self) -> None:
        if self._set_terms is not None:
            return
        total = len(self._images)

        def progress(done: int, _total: int | None) -> None:
            self._set_status(f"Decomposing the image set: {done}/{total} images (saved as they finish)…", busy=True)

        self._set_status(f"Decomposing the image set: 0/{total} images…", busy=True)
        terms = decompose_images(self.explainer, self._images, cache_dir=self._cache_dir, progress=False,
                                 stop=self._stop, on_image=progress)
        self._set_terms, self._means = terms, mean_terms(terms)

    def _ensure_pool(self) -> None:
        if self._pool is None:
            self._set_status(f"Encoding the {len(self._texts)} pool texts (once per model)…", busy=True)
            self._pool = encode_text_pool(self.explainer, self._texts, progress=False, cache_dir=self._cache_dir)

    def _texts_for(self, head: tuple[int, int]) -> list[tuple[str, float]]:
        if head not in self._head_texts:
            per_head = self._set_terms.attn[:, head[0], head[1]]
            self._head_texts[head] = text_span(per_head, self._pool, self._texts, m=self.m, rank=self.rank)
        return self._head_texts[head]

    def _select(self, layer: int, head: int) -> None:
        with self._lock:
            self._selected = (layer, head)
            if self._pool is None or self._shown is None:
                self._texts_html.value = _texts_placeholder(self._selected, busy=True)
                self._request()  # encodes the pool in the background, then draws
                return
            self._texts_for(self._selected)
            self._redraw()

    def _apply(self, result: dict) -> None:
        self._shown = result
        dropdown = self.controls["label"]
        keep = self._wanted_label if self._wanted_label in result["labels"] else dropdown.value
        self._syncing = True
        try:
            dropdown.options = list(result["labels"])
            dropdown.value = keep if keep in result["labels"] else result["labels"][0]
        finally:
            self._syncing = False
        self._wanted_label = None
        self._redraw()

    # --- drawing -----------------------------------------------------------------------------

    def _redraw(self) -> None:
        with self._lock:
            if self._shown is None:
                return
            shown, label = self._shown, self.label
            t = shown["labels"].index(label)
            feature = shown["features"][t]
            d = shown["decomposition"]
            self._contributions = (d.head_terms()[0] @ feature).numpy()
            with self._grid.batch_update():
                self._grid.data[0].z = np.round(self._contributions, 5).tolist()
                self._grid.layout.title.text = html.escape(f"Direct contribution of each head to '{label}'")
            with self._bars.batch_update():
                layers = list(range(self._num_layers))
                self._bars.data[0].update(x=layers, y=np.round((d.layer_terms()[0] @ feature).numpy(), 5).tolist())
                self._bars.data[1].update(x=layers, y=np.round((d.mlp[0, 1:] @ feature).numpy(), 5).tolist())
                self._bars.layout.title.text = html.escape(f"Per-layer contribution to '{label}'")
            self._draw_maps(shown, t, label)
            self._draw_selected()
            self._redraw_ablation()

    def _draw_maps(self, shown: dict, t: int, label: str) -> None:
        rgb, d = shown["rgb"], shown["decomposition"]
        step = display_step(rgb.shape[:2], self.heat_side)
        size = (math.ceil(rgb.shape[0] / step), math.ceil(rgb.shape[1] / step))
        panels = [(FULL_PANEL, None, f"all heads: {label}")]
        if self._selected is not None:
            panels.append((HEAD_PANEL, [self._selected], f"layer {self._selected[0]}, head {self._selected[1]}: "
                                                         f"{label}"))
        titles = [title for _, _, title in panels] + ([] if self._selected else ["click a head in the grid"])
        with self._maps.fig.batch_update():
            self._maps.set_titles([html.escape(s) for s in titles])
            for panel in (FULL_PANEL, HEAD_PANEL):
                self._maps.set_image(panel, rgb, key=shown["index"])
            for panel, heads, _ in panels:
                heat = spatial_maps(d, shown["features"], heads=heads, size=size)[0, t].numpy()
                self._maps.set_heat(panel, (shown["index"], tuple(shown["labels"]), t, heads, step), heat, step)
                self._maps.set_style(panel, plotly_colorscale(self.cmap), self.opacity,
                                     showscale=panel == HEAD_PANEL or self._selected is None)
            if self._selected is None:
                self._maps.clear_panel(HEAD_PANEL)

    def _draw_selected(self) -> None:
        selected = self._selected
        self._grid.data[2].update(x=[selected[1]] if selected else [], y=[selected[0]] if selected else [])
        if selected is None:
            self._texts_html.value = _texts_placeholder()
        elif selected in self._head_texts:
            self._texts_html.value = _texts_table(selected, self._head_texts[selected], len(self._images))
        else:
            self._texts_html.value = _texts_placeholder(selected, busy=True)

    def _redraw_ablation(self) -> None:
        """Ablation markers and bar colours, and the zero-shot readout before/after ablation."""
        a = self._ablation
        heads = sorted(a.heads)
        self._grid.data[1].update(x=[h for _, h in heads], y=[l for l, _ in heads])
        with self._bars.batch_update():
            self._bars.data[0].marker.color = [ABLATED_COLOR if l in a.attn_layers else ATTN_COLOR
                                               for l in range(self._num_layers)]
            self._bars.data[1].marker.color = [ABLATED_COLOR if l in a.mlps else MLP_COLOR
                                               for l in range(self._num_layers)]
        if self._shown is None or self._means is None:
            return
        d, features = self._shown["decomposition"], self._shown["features"]
        scale = float(self.explainer.model.model.logit_scale.detach().exp()) \
            if hasattr(self.explainer.model.model, "logit_scale") else 100.0
        before = zero_shot_probs(d.total(), features, scale)[0].numpy()
        after = zero_shot_probs(ablated_embeddings(d, self._means, a), features, scale)[0].numpy()
        labels = list(self._shown["labels"])
        self._prediction = dict(labels=labels, before=before, after=after, top_before=labels[int(before.argmax())],
                                top_after=labels[int(after.argmax())], ablation=a)
        self._readout.value = _readout_html(labels, before, after, a)

    # --- static figure -----------------------------------------------------------------------

    def _render_figure(self):
        if self._shown is None:
            raise ClipSurgeryError("Nothing to draw yet: wait for the image set to be decomposed.")
        shown, label = self._shown, self.label
        t = shown["labels"].index(label)
        d, rgb, features = shown["decomposition"], shown["rgb"], shown["features"]
        size = rgb.shape[:2]
        order = np.argsort(-np.abs(self._contributions), axis=None)
        picks = ([self._selected] if self._selected else []) + [divmod(int(i), self._num_heads) for i in order]
        heads = list(dict.fromkeys(picks))[:4]
        head_maps = [(h, spatial_maps(d, features, heads=[h], size=size)[0, t].numpy(),
                      [text for text, _ in self._head_texts.get(h, [])]) for h in heads]
        feature = features[t]
        return figures_decomposition.decomposition_figure(
            rgb, label, self._contributions, (d.layer_terms()[0] @ feature).numpy(), (d.mlp[0, 1:] @ feature).numpy(),
            spatial_maps(d, features, size=size)[0, t].numpy(), head_maps, ablated_heads=sorted(self._ablation.heads),
            ablated_layers=sorted(self._ablation.attn_layers), ablated_mlps=sorted(self._ablation.mlps),
            selected=self._selected, cmap=self.cmap, opacity=self.opacity)


# --- helpers -------------------------------------------------------------------------------------

def _image_list(images: Any) -> list[Any]:
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        images = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif isinstance(images, (str, os.PathLike, np.ndarray)) or not hasattr(images, "__len__"):
        images = [images]
    images = list(images)
    if not images:
        raise ImageInputError("No images: pass a list of images (paths, arrays, PIL images) or a folder of images; "
                              "they are the set TEXTSPAN describes heads with and ablation takes means over.")
    return images


def _image_name(image: Any, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return Path(image).name[:30]
    return f"image {index + 1}"


def _to_cpu(d: Decomposition) -> Decomposition:
    return Decomposition(attn=d.attn.cpu(), mlp=d.mlp.cpu(), norm=d.norm.cpu(), grid=d.grid)


def _texts_placeholder(head: tuple[int, int] | None = None, busy: bool = False) -> str:
    if head is None:
        return "<i>Click a head in the grid to see what it encodes (its TEXTSPAN texts) and its map.</i>"
    return f"<b>Layer {head[0]}, head {head[1]}</b><br><i>{'Finding its texts…' if busy else ''}</i>"


def _texts_table(head: tuple[int, int], texts: list[tuple[str, float]], count: int) -> str:
    if not texts:
        body = "<i>This head's output does not vary over the image set.</i>"
    else:
        rows = "".join(f"<li>{html.escape(text)} <span style='color:#888'>({100 * frac:.1f}%)</span></li>"
                       for text, frac in texts)
        body = f"<ol style='margin:4px 0;padding-left:22px'>{rows}</ol>"
    return (f"<div><b>Layer {head[0]}, head {head[1]}</b> · TEXTSPAN over {count} image{'s' * (count != 1)} "
            f"<span style='color:#888'>(share of the head's variance)</span>{body}</div>")


def _readout_html(labels: list[str], before: np.ndarray, after: np.ndarray, ablation: Ablation) -> str:
    top_b, top_a = int(before.argmax()), int(after.argmax())
    parts = []
    if ablation.heads:
        parts.append(f"{len(ablation.heads)} head{'s' * (len(ablation.heads) != 1)}")
    if ablation.attn_layers:
        parts.append("attention " + ", ".join(map(str, sorted(ablation.attn_layers))))
    if ablation.mlps:
        parts.append("MLP " + ", ".join(map(str, sorted(ablation.mlps))))
    if ablation.embedding:
        parts.append("embedding")
    what = "; ".join(parts) if parts else "nothing"
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
