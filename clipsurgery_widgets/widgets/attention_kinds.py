"""The AttentionExplorer's map panels beyond q-k and v-v: the attention each dense method uses.

q-k and v-v come from the explorer's capture (any layer). The methods' kinds (q-q, k-k, q-q + k-k,
k-k with the Gaussian prior, GEM's self-self; docs/algorithms.md#dense-methods) come from
``engine.method_rows``: one ``method_attention`` call per kind, image and size, at the last block,
in the named background job "kinds" and cached. This mixin also draws the static maps figures,
which show the same panels.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..engine.attention import KIND_LABELS, KINDS, AttentionRows, Query
from ..engine.cache import LRUCache, content_hash
from ..engine.errors import ClipSurgeryError
from ..engine.method_rows import (KIND_METHODS, METHOD_KINDS, KindAttention, KindRow, image_kind_attention,
                                  is_capture_kind)
from ..figures import attention as figures_attention
from ..figures.style import method_name


class KindPanels:
    """Rows of every map panel, the "kinds" job and the static maps figures (mixed into AttentionExplorer).

    Uses the explorer's explainer, kinds, size, layer, head, query, cmap, opacity, ``_rgb`` /
    ``_rgb_hash``, ``_key``, ``_capture_for``, ``rows``, ``submit`` and ``_redraw``.
    """

    def _init_kind_panels(self, max_cached_images: int) -> None:
        # (image hash, size, model, kind) -> KindAttention; room for every method kind of each image.
        self._kind_attention = LRUCache(max_cached_images * (len(METHOD_KINDS) - len(KINDS)))

    @property
    def kind_rows(self) -> dict[str, KindRow | None] | None:
        """{kind: KindRow} of the map panels on screen (None for a kind still computing), or None.

        q-k and v-v are at the current layer; the methods' kinds at the last block (where the
        single-block methods change the attention), for the current query and head.
        """
        rows = self.rows
        return None if rows is None else self._panel_rows(rows)

    def _panel_rows(self, rows: AttentionRows) -> dict[str, KindRow | None]:
        panels: dict[str, KindRow | None] = {}
        for kind in self.kinds:
            if is_capture_kind(kind):
                panels[kind] = KindRow.from_rows(rows, kind)
            else:
                attention = self._kind_attention.get(self._key(self._rgb_hash, self.size) + (kind,))
                panels[kind] = None if attention is None else attention.rows(rows.query, rows.head)
        return panels

    def _kind_attention_for(self, rgb: np.ndarray, size: int | tuple[int, int], kind: str,
                            image_hash: str | None = None) -> KindAttention:
        """The attention of a method's kind for (image, size): one forward pass, then cached."""
        key = self._key(image_hash or content_hash(rgb), size) + (kind,)
        attention = self._kind_attention.get(key)
        if attention is None:
            attention = image_kind_attention(self.explainer.model, rgb, size, kind)
            self._kind_attention.put(key, attention)
        return attention

    def _request_kinds(self) -> None:
        """Job "kinds": the attention of every methods' kind shown that is not cached yet."""
        if self._rgb is None:
            return
        rgb, size, image_hash = self._rgb, self.size, self._rgb_hash
        key = self._key(image_hash, size)
        missing = [kind for kind in self.kinds if not is_capture_kind(kind) and key + (kind,) not in self._kind_attention]
        if not missing:
            return

        def work(job) -> int:
            for done, kind in enumerate(missing):
                if job.stopped.is_set():
                    break
                job.progress(f"{_kind_text(kind)} attention at the last block ({done + 1} of {len(missing)})…")
                self._kind_attention_for(rgb, size, kind, image_hash)
            return len(missing)

        self.submit("kinds", work, lambda count: self._redraw(), busy_text=f"{_kind_text(missing[0])} attention…",
                    doing="computing the methods' attention",
                    done_text=lambda count, seconds: f"The methods' attention at the last block · {seconds:.2f} s")

    # --- static figures ----------------------------------------------------------------------

    def _render_figure(self, view: str = "maps"):
        capture = self.capture
        if capture is None or self.query is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image and wait for the attention capture.")
        if view == "layers":
            return figures_attention.layers_figure(self._rgb, capture.all_layers(self.query, self.head),
                                                   self._layer_names, self.cmap, self.opacity)
        if view == "stats":
            return figures_attention.stats_figure(self.query_stats, self.all_stats, self._layer_names, self.layer)
        return self._maps_figure([self._rgb], [self.query], current=True)

    def _paper_figure(self, images: Sequence[Any] | None, queries: Query | Sequence[Query] | None):
        rgbs = [self._rgb] if images is None else [self.explainer.prepare_image(i) for i in images]
        if not rgbs or rgbs[0] is None:
            raise ClipSurgeryError("Nothing to draw yet: set an image (or pass images=[...]).")
        if queries is None:
            if self.query is None:
                raise ClipSurgeryError("No query yet: click a patch or pass queries=...")
            queries = [self.query] * len(rgbs)
        elif _is_single_query(queries):
            queries = [queries] * len(rgbs)
        queries = list(queries)
        if len(queries) != len(rgbs):
            raise ValueError(f"Got {len(queries)} queries for {len(rgbs)} images: pass one query, or one per image.")
        return self._maps_figure(rgbs, queries)

    def _maps_figure(self, rgbs: Sequence[np.ndarray], queries: Sequence[Query], current: bool = False):
        """The map panels of each (image, query): q-k and v-v at the current layer, the methods' at the last
        block (computed here if their job has not). current: the one image is the explorer's own."""
        panels = []
        for rgb, query in zip(rgbs, queries):
            image_hash = self._rgb_hash if current else content_hash(rgb)
            capture = self.capture if current else self._capture_for(rgb, self.size, self._key(image_hash, self.size))
            rows = capture.rows(self.layer, query, self.head)
            kinds = {kind: KindRow.from_rows(rows, kind) if is_capture_kind(kind) else
                     self._kind_attention_for(rgb, self.size, kind, image_hash).rows(query, self.head)
                     for kind in self.kinds}
            panels.append((rgb, kinds))
        return figures_attention.qk_vv_figure(panels, self._layer_names[self.layer], self.cmap, self.opacity,
                                              kinds=self.kinds)


def _kind_text(kind: str) -> str:
    """"ClearCLIP's q-q": the method and its kind, for status lines."""
    return f"{method_name(KIND_METHODS[kind][0])}'s {KIND_LABELS[kind]}"


def _is_single_query(queries: Any) -> bool:
    """True for one query ("global" or (row, col)) rather than a list of them."""
    if isinstance(queries, str):
        return True
    items = list(queries)
    return len(items) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items)
