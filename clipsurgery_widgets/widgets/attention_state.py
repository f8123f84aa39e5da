"""The AttentionExplorer's public settings, declared once as traits with the engine's rules.

Each setting accepts what the engine accepts and nothing else: an invalid value raises
InvalidStateError naming the setting, the value and what is allowed, and changes nothing. Values
are never clamped; the only rewrites are the engine's own readings (layer -1 is the last layer,
a query [3, 4] is the cell (3, 4)).
"""
from __future__ import annotations

import numpy as np
import traitlets

from ..engine.attention import AttentionInputError, Query, check_query
from ..engine.images import check_input_size
from ..engine.method_rows import METHOD_KINDS, is_capture_kind
from ..figures.style import DEFAULT_CMAP, DEFAULT_OPACITY
from .state import (ColourMap, InputSize, Integer, InvalidStateError, Number, invalid)


class AttentionSettings(traitlets.HasTraits):
    """query, layer, head, size, radius, cmap, opacity, kinds, with their checks (mixed into the explorer).

    The explorer sets ``explainer`` (its model gives the patch size), ``_layer_names`` and
    ``_num_heads`` (from ``engine.attention.attention_layout``) before it assigns any setting;
    ``_rgb`` is the current image or None.
    """

    query = traitlets.Any(None, allow_none=True, help="The query: (row, col) of a patch, or 'global'.")
    layer = Integer(0, help="Layer index 0..L-1; negative values count from the end.")
    head = traitlets.Any(None, allow_none=True, help="The head shown, or None for the mean of the heads' rows.")
    size = InputSize(224, help="Model input size: S or (S_h, S_w), multiples of the patch size.")
    radius = Number(1.0, low=0.0, help="Radius in cells (Chebyshev) of the 'mass within the radius' statistic.")
    cmap = ColourMap(DEFAULT_CMAP, help="Colour map of the attention maps (a matplotlib name).")
    opacity = Number(DEFAULT_OPACITY, low=0.0, high=1.0, help="Weight of the maps over the image.")
    kinds = traitlets.Any(("qk", "vv"), help="The attention kinds of the map panels (engine.method_rows.METHOD_KINDS).")

    @traitlets.validate("kinds")
    def _valid_kinds(self, proposal: dict) -> tuple[str, ...]:
        value = proposal["value"]
        values = tuple(value) if isinstance(value, (tuple, list)) else None
        if not values or any(not isinstance(v, str) or v not in METHOD_KINDS for v in values) \
                or len(set(values)) != len(values):
            raise invalid(self, "kinds", value, "a tuple of one or more distinct kinds from "
                                                + ", ".join(map(repr, METHOD_KINDS)))
        if self.explainer.model.family != "vit" and not all(is_capture_kind(v) for v in values):
            raise invalid(self, "kinds", value, "'qk' and/or 'vv': the dense methods' attention needs a ViT "
                                                "image tower (load one such as ViT-B-16)")
        return values

    @traitlets.validate("layer")
    def _valid_layer(self, proposal: dict) -> int:
        value, count = proposal["value"], len(self._layer_names)
        if not -count <= value < count:
            allowed = ("0, its attention pool (this model's one attention layer)" if count == 1 else
                       f"a layer from 0 to {count - 1} (or -{count} to -1 counting from the end)")
            raise invalid(self, "layer", value, allowed)
        return value % count  # the engine's reading of a negative index

    @traitlets.validate("head")
    def _valid_head(self, proposal: dict) -> int | None:
        value = proposal["value"]
        if value is None:
            return None
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                or not 0 <= value < self._num_heads:
            raise invalid(self, "head", value, f"a head from 0 to {self._num_heads - 1} (this model has "
                                               f"{self._num_heads} heads), or None for the mean of the heads")
        return int(value)


    @traitlets.validate("query")
    def _valid_query(self, proposal: dict) -> Query | None:
        value = proposal["value"]
        if value is None and self._rgb is None:
            return None  # no image yet: the centre cell is chosen when its attention arrives
        try:
            return check_query(value, self._grid())[0]
        except AttentionInputError as exc:
            raise InvalidStateError(f"{type(self).__name__}.query = {value!r} is not valid: {exc}") from None


    def _grid(self) -> tuple[int, int]:
        """(gh, gw): the patch grid at the current input size."""
        patch = self.explainer.model.patch_size
        height, width = check_input_size(self.size, patch)
        return height // patch, width // patch

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The attention layers' names ("block 0", ...; "attention pool" for a ResNet)."""
        return self._layer_names

    @property
    def num_heads(self) -> int:
        """Heads per attention layer."""
        return self._num_heads
