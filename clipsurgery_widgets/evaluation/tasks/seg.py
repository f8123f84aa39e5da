"""Open-vocabulary semantic segmentation evaluation: mIoU, per-class IoU, pixel accuracy per method.

Each image is segmented with :func:`segment` under each method's published per-dataset settings
(engine/segmentation/protocols.py; overridable), and one confusion matrix per method is
accumulated over the dataset (docs/algorithms.md#evaluation-protocol). The class text features
are computed once per model and shared by every method and image.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...engine.errors import ImageInputError
from ...engine.images import load_image
from ...engine.segmentation import BENCHMARKS, class_features, segment
from ...engine.segmentation.inputs import check_settings
from ...engine.segmentation.protocols import (class_display_names, protocol_for, protocol_settings)
from ...engine.towers.dense_params import METHODS
from ..datasets import MaskError, get_dataset
from ..metrics import confusion_entries, dense_confusion, segmentation_scores
from ..published import published_miou
from .base import ItemStats, SkipItem, Task

# Settings a user may override for every method (keyword = segment()'s keyword).
SEG_SETTINGS = ("short_side", "crop", "stride", "logit_scale", "prob_thd", "area_thd", "pamr_steps")
# Defaults for the generic layout (no published configs): SCLIP's protocol without thresholds.
GENERIC_SETTINGS = {"crop": 224, "stride": 112, "short_side": 336, "logit_scale": 40.0, "prob_thd": 0.0,
                    "area_thd": None, "pamr_steps": 0}


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """"raw,sclip" or ["raw", "sclip"] -> checked, de-duplicated method names in the given order."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m).strip() for m in methods]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise ValueError(f"No method given; pass one or more of {', '.join(METHODS)} (e.g. 'raw,sclip').")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}.")
    return names


def method_settings(dataset: str, method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """segment() keywords for one method: its protocol's settings for the dataset, then the overrides."""
    base = dict(protocol_settings(dataset, protocol_for(method))) if dataset in BENCHMARKS else dict(GENERIC_SETTINGS)
    base.update(overrides)
    if not base.get("crop"):
        base["crop"], base["stride"] = 0, None
    return base


class SegTask(Task):
    """Segmentation evaluation of several dense methods on one dataset.

    Args:
        dataset, root, split: see :func:`get_dataset`.
        methods: dense method names (list or comma-separated string).
        classes: class names instead of the shipped list (generic: default ROOT/classes.txt).
        templates: prompt templates (default the 80 OpenAI ImageNet templates).
        windows_batch: windows per forward pass (speed only; results do not depend on it).
        **overrides: any of short_side, crop, stride, logit_scale, prob_thd, area_thd, pamr_steps
            (``pamr`` is accepted for pamr_steps), applied to every method.
    """

    name = "seg"

    def __init__(self, dataset: str, root: Any, methods: str | Sequence[str] = ("sclip",), split: str | None = None,
                 classes: Any = None, templates: Sequence[str] | None = None, windows_batch: int = 8,
                 **overrides: Any):
        if "pamr" in overrides:
            overrides["pamr_steps"] = overrides.pop("pamr")
        unknown = sorted(set(overrides) - set(SEG_SETTINGS))
        if unknown:
            raise ValueError(f"Unknown segmentation setting {unknown[0]!r}; settings: {', '.join(SEG_SETTINGS)}.")
        self.dataset = get_dataset(dataset, root, split, classes)
        self.methods = parse_methods(methods)
        self.overrides = {k: v for k, v in overrides.items() if k in SEG_SETTINGS}
        self.templates = [templates] if isinstance(templates, str) else (list(templates) if templates else None)
        self.windows_batch = windows_batch
        self.method_settings = {m: method_settings(dataset, m, self.overrides) for m in self.methods}
        for method, values in self.method_settings.items():  # bad values fail before any model loads
            try:
                check_settings(1, values["crop"], values["stride"], values["short_side"], None, values["logit_scale"],
                               values["prob_thd"], values["area_thd"], values["pamr_steps"], (8, 16), windows_batch)
            except ValueError as exc:
                raise ValueError(f"{method}: {exc}") from None
        self._samples: dict[str, Any] | None = None
        self._model = None
        self._features = None

    # --- Task API ------------------------------------------------------------------------------

    def check(self) -> None:
        self.dataset.check()

    def items(self) -> list[str]:
        return [sample.id for sample in self._sample_map().values()]

    def prepare(self, model: Any) -> None:
        self._model = model
        self._features = class_features(model, self.dataset.classes, templates=self.templates)

    def run_item(self, item_id: str) -> ItemStats:
        if self._features is None:
            raise RuntimeError("SegTask.prepare(model) must run before run_item.")
        sample = self._sample_map()[item_id]
        try:
            target = self.dataset.load_mask(sample)
        except MaskError as exc:
            raise SkipItem(str(exc)) from None
        try:
            rgb = load_image(sample.image)
        except (ImageInputError, OSError) as exc:
            raise SkipItem(f"unreadable image {sample.image.name}: {exc}") from None
        if rgb.shape[:2] != target.shape:
            raise SkipItem(f"image {sample.image.name} is {rgb.shape[1]}x{rgb.shape[0]} but its mask is "
                           f"{target.shape[1]}x{target.shape[0]}")
        stats: ItemStats = {}
        for method in self.methods:
            labels = self.segment_image(rgb, method)
            index, count = confusion_entries(target, labels, self.num_classes, self.dataset.ignore_index)
            stats[method] = {"confusion_index": index, "confusion_count": count}
        return stats

    def segment_image(self, rgb: np.ndarray, method: str) -> np.ndarray:
        """Class per pixel [H, W] of one image with one method under this task's settings."""
        result = segment(self._model, rgb, self.dataset.classes, method=method, text_features=self._features,
                         windows_batch=self.windows_batch, **self.method_settings[method])
        return result.labels.numpy()

    def merge(self, stats: list[ItemStats]) -> dict[str, dict]:
        merged = {}
        for method in self.methods:
            entries = [(s[method]["confusion_index"], s[method]["confusion_count"]) for s in stats]
            confusion = dense_confusion(entries, self.num_classes)
            merged[method] = {**segmentation_scores(confusion), "images": len(stats),
                              "settings": self.method_settings[method], "confusion": confusion.tolist()}
        return merged

    def settings(self) -> dict:
        return {"dataset": self.dataset.name, "root": str(self.dataset.root), "split": self.dataset.split,
                "methods": list(self.methods), "classes": self.dataset.classes, "templates": self.templates,
                "method_settings": self.method_settings}

    def extras(self) -> dict:
        return {"class_names": self.class_names, "ignore_index": self.dataset.ignore_index,
                "overrides": dict(self.overrides)}

    def published(self) -> dict:
        """method -> {"miou": [{"value": percent, "source": text}]}, the papers' numbers for this dataset."""
        found = {m: {"miou": published_miou(self.dataset.name, m)} for m in self.methods}
        return {m: v for m, v in found.items() if v["miou"]}

    # --- helpers -------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def class_names(self) -> list[str]:
        return class_display_names(self.dataset.classes, self.dataset.name)

    def item_iou(self, stats: ItemStats, method: str) -> float | None:
        """mIoU of one item's stats (for best/worst image views)."""
        one = dense_confusion([(stats[method]["confusion_index"], stats[method]["confusion_count"])],
                              self.num_classes)
        return segmentation_scores(one)["miou"]

    def _sample_map(self) -> dict[str, Any]:
        if self._samples is None:
            self._samples = {s.id: s for s in self.dataset.samples()}
        return self._samples
