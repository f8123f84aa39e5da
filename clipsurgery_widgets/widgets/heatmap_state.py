"""The HeatmapExplorer's public settings, declared once as traits with the engine's rules.

Each setting accepts what the engine accepts and nothing else: an invalid value raises
InvalidStateError naming the setting, the value and what is allowed, and changes nothing. Values
are never clamped; the only rewrites are the engine's own readings (a comma-separated label string
is read as a list, "surgery" is CLIP Surgery's short name "clip_surgery").
"""
from __future__ import annotations

from typing import Any

import traitlets

from ..engine.explainer import REDUNDANCY_MODES
from ..figures.style import method_name
from .heatmap_plan import METHOD_CHOICES, RESNET_CHOICES, VIEWS
from .state import (Choice, ColourMap, InputSize, Integer, LabelList, Number, OneOf, OptionalNumber, invalid)


class HeatmapSettings(traitlets.HasTraits):
    """The explorer's settings with their checks (mixed into HeatmapExplorer).

    The explorer sets ``explainer`` (its model gives the patch size and the image tower) and
    ``_max_depth`` (the number of blocks, None for a ResNet) before it assigns any setting.
    """

    labels = LabelList(targets=True, help="The labels: a list, or one comma-separated string (read back as a list); "
                                "'a+b' combines targets.")
    label = OneOf("labels", help="The label of the one-label and raw-vs-surgery views; one of the labels.")
    view = Choice(tuple(VIEWS), help='"overlay" (one label), "grid" (every label), "compare" (raw CLIP vs CLIP '
                                     'Surgery), "methods" (labels x compared methods) or "segmentation".')
    method = Choice(METHOD_CHOICES, default="clip_surgery",
                    help="The dense method of the overlay, grid and segmentation views (docs/algorithms.md"
                         "#dense-methods); a ResNet has raw and clip_surgery only.")
    compared = traitlets.Any(help="The methods of the 'methods' view, its columns left to right (a tuple of "
                                  "method names, each once).")
    feature_surgery = Choice((None, True, False), default=None,
                             help="None: as the papers use them (on for clip_surgery only); True/False: on/off "
                                  "for every method (docs/algorithms.md#feature-surgery).")
    redundancy = Choice(REDUNDANCY_MODES, help='Feature-surgery mode where it is on: "auto", "labels", "empty" '
                                               'or "none".')
    size = InputSize(224, help="Model input size: an int S or (H, W), multiples of the patch size.")
    depth = Integer(6, help="Surgery depth: how many final blocks get the v-v path (ViT), 1..number of blocks.")
    cmap = ColourMap("jet", help="Colour map of the heat maps: a matplotlib name.")
    opacity = Number(0.6, low=0.0, high=1.0, help="Weight of the heat map over the image.")
    threshold = OptionalNumber(None, low=0.0, high=1.0, help="Outline where the map >= threshold, in (0, 1]; "
                                                             "None: no outline.")
    heat_side = Integer(200, low=16, help="The segmentation view is sent at about this many pixels on its long "
                                          "side (heat maps travel as their patch grid).")
    # Segmentation (docs/algorithms.md#segmentation-inference): the labels are the classes, label 0 first.
    prob_thd = Number(0.0, low=0.0, high=1.0, help="Background threshold: pixels whose best class probability "
                                                   "is below it get class 0 (the first label).")
    area_thd = OptionalNumber(None, low=0.0, high=1.0, help="Area rule: classes >= 1 winning at most this fraction "
                                                            "of the pixels outside class 0 are dropped; None: off.")
    pamr_steps = Integer(0, low=0, help="PAMR refinement steps of the segmentation (0: off).")
    logit_scale = Number(40.0, low=0.0, help="Multiplies the cosines before the softmax over the classes (> 0).")

    # --- checks that depend on the model or the labels ----------------------------------------



    @traitlets.validate("method")
    def _valid_method(self, proposal: dict) -> str:
        value = proposal["value"]
        if value not in self.method_choices:
            raise invalid(self, "method", value, f"{' or '.join(map(repr, self.method_choices))}: this model's image "
                                                 f"tower is a {self.explainer.model.family}, and the other methods "
                                                 f"change transformer blocks (load a ViT such as ViT-B-16)")
        return value

    @traitlets.validate("compared")
    def _valid_compared(self, proposal: dict) -> tuple[str, ...]:
        value, allowed = proposal["value"], self.method_choices
        names = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
        try:
            names = [{"surgery": "clip_surgery"}.get(m, m) for m in names]
        except TypeError:
            names = None
        what = f"a tuple of method names from {', '.join(allowed)}, each once" + (
            "" if allowed == METHOD_CHOICES else f" (this model's image tower is a {self.explainer.model.family}; "
                                                 f"the other methods need a ViT)")
        if not names or any(not isinstance(m, str) or m not in allowed for m in names) or \
                len(set(names)) != len(names):
            raise invalid(self, "compared", value, what)
        return tuple(names)


    @traitlets.validate("depth")
    def _valid_depth(self, proposal: dict) -> int:
        value, top = proposal["value"], self._max_depth
        if value < 1 or (top is not None and value > top):  # the range depends on the model
            raise invalid(self, "depth", value, "a whole number >= 1 (the ResNet ignores it)" if top is None
                          else f"a whole number from 1 to {top} (this model has {top} blocks)")
        return value


    @traitlets.validate("threshold")
    def _valid_threshold(self, proposal: dict) -> float | None:
        if proposal["value"] == 0:
            raise invalid(self, "threshold", proposal["value"], "a number in (0, 1], or None for no outline")
        return proposal["value"]

    @traitlets.validate("logit_scale")
    def _valid_logit_scale(self, proposal: dict) -> float:
        if proposal["value"] <= 0:
            raise invalid(self, "logit_scale", proposal["value"], "a number > 0, e.g. 40 (NACLIP) or 65 (SCLIP on VOC)")
        return proposal["value"]

    # --- what the model offers ----------------------------------------------------------------

    @property
    def method_choices(self) -> tuple[str, ...]:
        """The methods this model's image tower has: all on a ViT, raw and clip_surgery on a ResNet."""
        return METHOD_CHOICES if self.explainer.model.family == "vit" else RESNET_CHOICES

    def method_options(self) -> list[tuple[str, Any]]:
        """(display name, method) of every method this model has, for menus."""
        return [(method_name(m), m) for m in self.method_choices]
