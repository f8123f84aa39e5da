"""DecompositionExplorer: which attention heads carry a label, what they encode, and what ablating them does.

The controller: public state as traits, three named background jobs ("image": one image's
decomposition; "pass": the image set's terms; "texts": a head's TEXTSPAN texts), clicks. Every
number comes from an engine :class:`~..engine.decomposition.session.DecompositionSession`; what is
drawn and how lives in :mod:`.decomposition_view`, the controls in :mod:`.decomposition_controls`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import traitlets

from ..engine.decomposition.ablation import Ablation, DecompositionInputError
from ..engine.decomposition.session import DecompositionSession
from ..engine.errors import ClipSurgeryError
from ..engine.regions import display_step
from ..figures import decomposition as figures_decomposition
from .base import ExplorerWidget
from .decomposition_jobs import DecompositionJobs
from .decomposition_controls import (build_controls, control_rows, image_options, link_controls, on_click,
                                     replace_options)
from .decomposition_view import DecompositionView
from .state import (Choice, ColourMap, Integer, InvalidStateError, LabelList, Number, OneOf, invalid)


class DecompositionExplorer(DecompositionJobs, ExplorerWidget):
    """Explore the text-based decomposition of a CLIP ViT's image embedding (Gandelsman et al.).

    The grid shows every (layer, head) coloured by its direct contribution to the chosen label on
    the current image. Click a head to see its TEXTSPAN descriptions (texts from the pool that best
    explain how that head's output varies over the image set) and its map on the image. Mean-ablate
    heads, attention layers, MLPs or the embedding (means over the image set) and watch the
    zero-shot prediction change. See docs/algorithms.md#text-based-decomposition.

    Args:
        explainer: an ``engine.Explainer`` with a ViT model.
        images: the image set (paths, arrays, PIL images, or a folder path), or a mapping
            {name: image} that names them; it gives TEXTSPAN its data and ablation its means. Browse
            it with the image menu (files are named by file name, with their folder when names are
            shared; unnamed arrays "image <n>"); ``image = x`` and "Add image" add one.
        texts: TEXTSPAN text pool: None (the pool shipped with the package), a file path, or a list.
        labels, label, m, rank, cmap, opacity, heat_side: initial values of the settings below.
        cache_dir: where per-image terms and the encoded pool are kept (None: the user cache dir).

    Every setting is a trait tied to its control; a value the widget cannot take raises
    :class:`~.state.InvalidStateError` and changes nothing. ``view.describe()`` says what is shown.
    """

    image_index = Integer(0, low=0, help="Index of the image shown, in the image set.")
    labels = LabelList(help="Zero-shot candidate labels: a list, or one comma-separated string (read back "
                                "as a list).")
    label = OneOf("labels", help="The label the grid, bars and maps are about; one of the labels.")
    mode = Choice(("inspect", "ablate"), help='What a click on a grid cell does: "inspect" selects the head, '
                                              '"ablate" toggles its mean-ablation.')
    selected_head = traitlets.Any(None, help="The (layer, head) whose texts and map are shown, or None.")
    ablation = traitlets.Any(Ablation(), help="What is mean-ablated (an engine Ablation).")
    m = Integer(10, low=1, help="TEXTSPAN: texts per head.")
    rank = Integer(80, low=1, help="TEXTSPAN: rank of the projection of the texts.")
    cmap = ColourMap("jet", help="Colour map of the head maps: a matplotlib name.")
    opacity = Number(0.6, low=0.0, high=1.0, help="Weight of the maps over the image.")
    heat_side = Integer(200, low=16, help="Maps are sent at about this many pixels on their long side.")
    #: a refused input pauses the shown image's decomposition; the set's pass and a head's texts go on.
    input_jobs = ("image",)

    def __init__(self, explainer: Any, images: Sequence[Any] | Mapping[str, Any] | str | os.PathLike,
                 texts: Sequence[str] | str | os.PathLike | None = None,
                 labels: Sequence[str] | str = ("cat", "dog", "car", "tree", "sky"), *, label: str | None = None,
                 m: int = 10, rank: int = 80, cmap: str = "jet", opacity: float = 0.6,
                 cache_dir: str | os.PathLike | bool | None = None, heat_side: int = 200):
        super().__init__()
        self.explainer = explainer
        self._given_names: dict[int, str] = {}  # {index: name} for images named by the caller or an upload
        if isinstance(images, Mapping):
            self._given_names = {i: str(name) for i, name in enumerate(images)}
            images = list(images.values())
        self._upload_name: str | None = None
        # Nothing is computed here (reading the text pool aside): the jobs asked for at the end run
        # in the background, so the widget shows at once with its progress line.
        self.session = DecompositionSession(explainer, images, texts=texts, cache_dir=cache_dir)
        self._shown = None  # the engine's ImageContributions on screen
        self._prediction = None
        self.m, self.rank, self.cmap, self.opacity, self.heat_side = m, rank, cmap, opacity, heat_side
        self.labels = labels
        self.label = label if label is not None else self.labels[0]
        layers = self.session.num_layers
        self.view = DecompositionView(layers, self.session.num_heads,
                                      on_cell=self._guarded(self._on_cell, "reading the clicked head"))
        self.controls = build_controls(self.image_names, layers)
        link_controls(self, self.controls, layers)
        self.children = [*control_rows(self.controls, layers), self._status_html, self._error_html,
                         self.view.readout, self.view.grid_box, self.view.bars_box, self.view.maps_box]
        self._wire()
        self.view.show_prediction(None)
        self._request_image()
        self._request_pass()

    def _wire(self) -> None:
        c = self.controls
        on_click(c["clear"], self.clear_ablation, self._guarded, "clearing the ablation")
        on_click(c["last4"], lambda: self.ablate_all_but_last(4), self._guarded, "changing the ablation")
        on_click(c["stop"], self.stop, self._guarded, "stopping")
        c["upload"].observe(self._on_upload, names="value")
        observe = [(self._request_image, ("image_index",)), (self._on_labels, ("labels",)),
                   (self._redraw, ("label",)), (self._draw_texts, ("selected_head", "m", "rank")),
                   (self._draw_ablation, ("ablation",)), (self._draw_maps, ("cmap", "opacity", "heat_side"))]
        for handler, names in observe:
            self.observe(self._guarded(_on_change(handler), "drawing"), names=list(names))

    # --- validation: the one rule of state.py, for settings that depend on the model or the set ----

    @traitlets.validate("image_index")
    def _valid_image_index(self, proposal: dict) -> int:
        count = self.session.image_count
        if proposal["value"] >= count:
            raise invalid(self, "image_index", proposal["value"], f"a whole number from 0 to {count - 1} "
                                                                  f"(the set has {count} images)")
        return proposal["value"]



    @traitlets.validate("selected_head", "ablation")
    def _valid_model_part(self, proposal: dict) -> Any:
        name, value = proposal["trait"].name, proposal["value"]
        try:
            if name == "ablation":
                self.session.check_ablation(value)
                return value
            return None if value is None else self.session.head(value)
        except DecompositionInputError as exc:
            raise InvalidStateError(f"{type(self).__name__}.{name} = {value!r} is not valid: {exc}") from None


    # --- Python API --------------------------------------------------------------------------

    @property
    def images(self) -> list[Any]:
        """The image set (as given; added images as RGB arrays)."""
        return self.session.images

    @property
    def image_names(self) -> list[str]:
        """The name of each image in the image menu (distinct; see engine.decomposition.names)."""
        return self.session.image_names(self._given_names)

    def toggle_head(self, layer: int, head: int) -> Ablation:
        """Toggle mean-ablation of head (layer, head); returns the new ablation."""
        self.ablation = self.ablation.toggled(heads=[(layer, head)])
        return self.ablation

    def toggle_layer(self, layer: int, kind: str = "attn") -> Ablation:
        """Toggle mean-ablation of attention layer (kind "attn") or MLP (kind "mlp") ``layer``."""
        if kind not in ("attn", "mlp"):
            raise InvalidStateError(f"kind = {kind!r} is not valid: use 'attn' (attention layer) or 'mlp'.")
        self.ablation = self.ablation.toggled(**{"attn_layers" if kind == "attn" else "mlps": [layer]})
        return self.ablation

    def ablate_all_but_last(self, k: int = 4) -> Ablation:
        """Mean-ablate every attention layer except the last ``k`` (the paper's check)."""
        self.ablation = Ablation(attn_layers=range(max(0, self.session.num_layers - k)))
        return self.ablation

    def clear_ablation(self) -> None:
        self.ablation = Ablation()

    def select_head(self, layer: int, head: int) -> list[tuple[str, float]]:
        """Select a head (as clicking it in "inspect" mode does); returns its TEXTSPAN texts."""
        self.wait(self.display_timeout)
        self.selected_head = (layer, head)
        self.wait(self.display_timeout)
        return list(self.session.cached_head_texts(*self.selected_head, m=self.m, rank=self.rank) or ())

    def click_cell(self, layer: int, head: int) -> None:
        """Do what a click on grid cell (layer, head) does in the current mode (errors go to the error area)."""
        self.wait(self.display_timeout)
        self.view.click_cell(layer, head)

    def head_texts(self, layer: int, head: int) -> list[tuple[str, float]]:
        """TEXTSPAN texts of one head over the image set (computes what is missing; may take a while)."""
        return list(self.session.head_texts(layer, head, m=self.m, rank=self.rank))

    @property
    def prediction(self) -> dict | None:
        """Zero-shot prediction of the current image: labels, before/after probabilities [T], top labels, ablation."""
        p = self._prediction
        return None if p is None else dict(labels=list(p.labels), before=p.before, after=p.after,
                                           top_before=p.top_before, top_after=p.top_after, ablation=p.ablation)

    @property
    def contributions(self) -> np.ndarray | None:
        """[L, H] direct contribution of each head to the label on the current image (on screen)."""
        shown = self._shown
        return None if shown is None or self.label not in shown.labels else shown.heads[shown.row(self.label)]

    @property
    def set_terms(self):
        """Per-head terms of the image set (the engine's ImageSetTerms), once computed."""
        return self.session.set_terms

    @property
    def decomposition(self):
        """The engine's spatial Decomposition of the image on screen (None before it arrives)."""
        return None if self._shown is None else self.session.cached_decomposition(self._shown.index)

    # --- reacting to input -------------------------------------------------------------------

    def _use_image(self, rgb: np.ndarray) -> None:
        """A new image joins the set and is shown; the set's terms and means then include it."""
        with self._lock:
            index = self.session.add_image(rgb)
            if self._upload_name:
                self._given_names[index] = self._upload_name
            replace_options(self, "image_index", self.controls["image"], image_options(self.image_names), index)
            self._request_pass()

    def _on_upload(self, change: dict) -> None:
        """An uploaded file joins the set under its file name."""
        files = change["new"]
        self._upload_name = str(files[0].get("name") or "") if files else None
        try:
            super()._on_upload(change)
        finally:
            self._upload_name = None

    def _on_labels(self) -> None:
        keep = self.label if self.label in self.labels else self.labels[0]
        replace_options(self, "label", self.controls["label"], list(self.labels), keep)
        self._request_image()

    def _on_cell(self, layer: int, head: int) -> None:
        self.session.check_head(layer, head)
        if self.mode == "ablate":
            self.toggle_head(layer, head)
        else:
            self.selected_head = (layer, head)

    # --- background jobs ---------------------------------------------------------------------

    def _recompute_in_precision(self) -> None:
        """The shown image and the set's pass again in the new precision (the set itself is kept)."""
        super()._recompute_in_precision()
        self._request_image()
        self._request_pass()

    def _apply_image(self, shown) -> None:
        self._shown, self._rgb = shown, shown.rgb
        self._redraw()

    # --- drawing -----------------------------------------------------------------------------

    def _redraw(self) -> None:
        with self._lock:
            shown = self._shown
            if shown is None or self.label not in shown.labels:
                return  # the labels' result is on its way
            t = shown.row(self.label)
            self.view.show_contributions(self.label, shown.heads[t], shown.layers[t], shown.mlps[t])
            self._draw_texts()
            self._draw_ablation()

    def _draw_texts(self) -> None:
        """The selected head: its outline, its texts (found in the background) and its map."""
        with self._lock:
            head = self.selected_head
            self.view.show_selected(head)
            texts = None if head is None else self.session.cached_head_texts(*head, m=self.m, rank=self.rank)
            self.view.show_texts(head, texts, self.session.image_count)
            if head is not None and texts is None:
                self._request_texts(head)
            self._draw_maps()

    def _draw_maps(self) -> None:
        with self._lock:
            shown, head = self._shown, self.selected_head
            if shown is None or self.label not in shown.labels:
                return
            t = shown.row(self.label)
            step = display_step(shown.rgb.shape[:2], self.heat_side)
            size = (math.ceil(shown.rgb.shape[0] / step), math.ceil(shown.rgb.shape[1] / step))
            full = self.session.maps(shown.index, shown.labels, size=size)[t]
            one = None if head is None else self.session.maps(shown.index, shown.labels, heads=[head], size=size)[t]
            self.view.show_maps(shown.index, shown.rgb, shown.labels, self.label, full, one, head, step, self.cmap,
                                self.opacity)

    def _draw_ablation(self) -> None:
        """Ablation markers and bar colours, and the zero-shot readout before/after ablation."""
        with self._lock:
            self.view.show_ablation(self.ablation)
            shown = self._shown
            if shown is None or self.session.set_terms is None:
                self._prediction = None
                self.view.show_prediction(None)
                return
            self._prediction = p = self.session.prediction(shown.index, shown.labels, self.ablation)
            self.view.show_prediction(p.labels, p.before, p.after, p.ablation)

    def _render_figure(self):
        if self._shown is None or self.label not in self._shown.labels:
            raise ClipSurgeryError("Nothing to draw yet: wait for the image to be decomposed.")
        return static_figure(self.session, self._shown, self.label, self.selected_head, self.ablation,
                             (self.m, self.rank), self.cmap, self.opacity)


def _on_change(handler: Callable[[], None]) -> Callable[[dict], None]:
    def react(change: dict) -> None:
        if change["old"] != change["new"]:  # held notifications report a value set back as a change
            handler()
    return react


def static_figure(session: DecompositionSession, shown: Any, label: str, selected: tuple[int, int] | None,
                  ablation: Ablation, textspan: tuple[int, int], cmap: str, opacity: float):
    """The matplotlib figure of what the explorer shows: grid, bars, the label's map, and the maps
    and cached texts of the selected head and the heads with the largest contributions (four in all)."""
    t, size = shown.row(label), shown.rgb.shape[:2]
    order = np.argsort(-np.abs(shown.heads[t]), axis=None)
    picks = ([selected] if selected else []) + [divmod(int(i), session.num_heads) for i in order]
    heads = list(dict.fromkeys(picks))[:4]
    texts = {h: session.cached_head_texts(*h, *textspan) or () for h in heads}
    head_maps = [(h, session.maps(shown.index, shown.labels, heads=[h], size=size)[t], [text for text, _ in texts[h]])
                 for h in heads]
    return figures_decomposition.decomposition_figure(
        shown.rgb, label, shown.heads[t], shown.layers[t], shown.mlps[t],
        session.maps(shown.index, shown.labels, size=size)[t], head_maps, ablated_heads=sorted(ablation.heads),
        ablated_layers=sorted(ablation.attn_layers), ablated_mlps=sorted(ablation.mlps), selected=selected,
        cmap=cmap, opacity=opacity)
