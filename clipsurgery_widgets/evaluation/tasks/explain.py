"""Explainability on a segmentation dataset: foreground IoU at a grid-searched threshold, and mSC
(docs/algorithms.md#evaluation-protocol).

For every image and every class present in its ground truth, the method's map for that class is
taken from one explanation over all the set's classes (so multi-label feature surgery sees the
whole class list), and compared with the class's mask. Feature surgery follows each method's
default (on for clip_surgery, off for the others) unless ``feature_surgery`` says otherwise.
Ground truth 255 is left out of every count; a class named "background" (voc21, context60,
coco_object) keeps its map among the labels but gives no pair (its "object" is everything else).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...engine.segmentation.protocols import class_display_names
from ..datasets import get_dataset
from ..datasets.base import MaskError
from ..explain_metrics import (THRESHOLDS, concat_pairs, explain_scores, pair_iou, pair_stats, stack_pairs)
from .base import SkipItem, Task
from .common import check_unused, explainer_for, method_names, native_size, read_rgb


class ExplainTask(Task):
    """Explainability metrics of dense methods' maps on a segmentation dataset.

    Args:
        dataset, root, split: the segmentation dataset (see ``get_dataset``).
        methods: map methods ("raw", "clip_surgery", "sclip", ...), computed from one pass per image.
        size: model input size (default: the model's native size).
        depth: clip_surgery's number of v-v blocks.
        feature_surgery: None = each method's default; True/False = for every method.
        skip_background: give no pair for a class named "background".
        classes: class names instead of the shipped list; templates: prompt templates (default the 85).
    """

    name = "explain"

    def __init__(self, dataset: str, root: str, split: str | None = None,
                 methods: Sequence[str] | str | None = None, size: int | Sequence[int] | None = None,
                 depth: int = 6, feature_surgery: bool | None = None, skip_background: bool = True,
                 classes: Any = None, templates: Sequence[str] | None = None, **unused: Any):
        check_unused(self.name, unused)
        self.dataset = get_dataset(dataset, root, split, classes)
        self.templates = list(templates) if templates is not None else None
        self.methods = method_names(methods, ["clip_surgery"])
        self.size, self.depth = size, int(depth)
        self.feature_surgery = feature_surgery
        self.skip_background = bool(skip_background)
        self._samples = None
        self._explainer = None
        self._thresholds: dict[str, float] = {}  # each method's chosen threshold, after merge()

    # --- the contract ------------------------------------------------------------------------------

    def check(self) -> None:
        self.dataset.check()

    def items(self) -> list[str]:
        return [s.id for s in self._sample_map().values()]

    def prepare(self, model: Any) -> None:
        self._explainer = explainer_for(model)
        self._input_size = native_size(self._explainer, self.size)

    @property
    def class_names(self) -> list[str]:
        return class_display_names(self.dataset.classes, self.dataset.name)

    def scored_classes(self, mask: np.ndarray) -> list[int]:
        """Class indices present in ``mask`` that give a pair."""
        present = [int(c) for c in np.unique(mask) if c != self.dataset.ignore_index]
        names = self.class_names
        return [c for c in present if not (self.skip_background and names[c] == "background")]

    def run_item(self, item_id: str) -> dict[str, dict[str, np.ndarray]]:
        """Per method: the stats of every (image, present class) pair (see explain_metrics.pair_stats)."""
        if self._explainer is None:
            raise RuntimeError("Call prepare(model) before run_item().")
        sample = self._sample_map()[item_id]
        try:
            mask = self.dataset.load_mask(sample)
        except MaskError as exc:
            raise SkipItem(str(exc)) from None
        rgb = read_rgb(sample.image)
        if rgb.shape[:2] != mask.shape:
            raise SkipItem(f"image {sample.image.name} is {rgb.shape[1]}x{rgb.shape[0]} but its mask is "
                           f"{mask.shape[1]}x{mask.shape[0]}")
        classes = self.scored_classes(mask)
        valid = mask != self.dataset.ignore_index
        if not classes:
            return {m: stack_pairs([], []) for m in self.methods}
        explanation = self._explainer.explain(rgb, self.class_names, method=self.methods[0], methods=self.methods,
                                              size=self._input_size, depth=self.depth,
                                              feature_surgery=self.feature_surgery,
                                              **({"templates": self.templates} if self.templates else {}))
        out = {}
        for method in self.methods:
            maps = explanation.mapset(method).maps  # [T, H, W] in [0, 1]
            out[method] = stack_pairs([pair_stats(maps[c], mask == c, valid) for c in classes], classes)
        return out

    def merge(self, stats: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict]:
        out = {}
        for method in self.methods:
            merged = concat_pairs([s[method] for s in stats])
            out[method] = dict(explain_scores(merged, self.class_names), images=len(stats))
            if out[method]["threshold"] is not None:
                self._thresholds[method] = out[method]["threshold"]
        return out

    def settings(self) -> dict:
        size = list(self.size) if isinstance(self.size, (tuple, list)) else self.size  # None = the model's own
        return {"task": self.name, "dataset": self.dataset.name, "split": self.dataset.split,
                "root": str(self.dataset.root), "methods": self.methods, "size": size, "depth": self.depth,
                "feature_surgery": self.feature_surgery, "skip_background": self.skip_background,
                "classes": self.dataset.classes, "templates": self.templates,
                "thresholds": [float(t) for t in THRESHOLDS]}

    def extras(self) -> dict:
        return {"class_names": self.class_names, "ignore_index": self.dataset.ignore_index}

    def item_iou(self, stats: dict, method: str, threshold: float | None = None) -> float | None:
        """One image's mean foreground IoU over its pairs (for best/worst image views), at ``threshold``
        (default: the one the last merge() chose for the method, else 0.5); None without pairs."""
        chosen = threshold if threshold is not None else self._thresholds.get(method, 0.5)
        index = int(np.argmin(np.abs(THRESHOLDS - chosen)))
        iou = pair_iou(stats[method])
        return float(iou[:, index].mean()) if iou.shape[0] else None

    # --- helpers -------------------------------------------------------------------------------------

    def _sample_map(self) -> dict:
        if self._samples is None:
            self._samples = {s.id: s for s in self.dataset.samples()}
        return self._samples

