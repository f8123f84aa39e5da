"""Segmentation of one image into an Explainer's labels: one class per label, cached text features.

For interactive use (the heat-map explorer's segmentation view): each label is one class, its
prompt-ensembled text feature comes from the Explainer's label cache (so a label is encoded once
per template set, and an "a+b" target is the normalised mean of its parts, as in ``explain``), and
:func:`segment` runs under the Explainer's model lock with the settings of
docs/algorithms.md#segmentation-inference. The result holds plain numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from ..images import check_input_size
from ..text.labels import parse_labels
from .inference import SEGMENTATION_TEMPLATES, segment


@dataclass(frozen=True)
class LabelSegmentation:
    """What :func:`segment_labels` returns.

    labels:   int64 [H, W], the class (label index) of each pixel at the image size.
    probs:    float32 [C, H, W], per label its probability after the area rule.
    classes:  the C labels, class 0 first (class 0 also takes the pixels below ``prob_thd``).
    method:   the dense method used.
    settings: the settings of :func:`segment` used (short_side, crop, stride, logit_scale,
              prob_thd, area_thd, pamr_steps) and the method's parameters.
    """

    labels: np.ndarray
    probs: np.ndarray
    classes: tuple[str, ...]
    method: str
    settings: Mapping[str, Any]


def segment_labels(explainer: Any, image: Any, labels: Sequence[str] | str, method: str = "sclip", *,
                   size: int | tuple[int, int] = 224, depth: int | None = None, logit_scale: float = 40.0,
                   prob_thd: float = 0.0, area_thd: float | None = None, pamr_steps: int = 0,
                   crop: int | None = 224, stride: int | None = 112,
                   templates: Sequence[str] = SEGMENTATION_TEMPLATES, precision: str | None = None
                   ) -> LabelSegmentation:
    """Label every pixel of ``image`` with one of ``labels`` using ``method``.

    Args:
        explainer: an ``engine.Explainer`` (its model, label cache and model lock are used).
        image: anything ``Explainer.prepare_image`` accepts.
        labels: the classes, one label each (a list or a comma-separated string; "a+b" combines).
        method: a dense method ("sclip", "naclip", "clip_surgery" or "surgery", ...).
        size: the model input size S or (S_h, S_w); the image is resized (keeping its ratio) so
            its short side is the short side of ``size``, then covered by ``crop`` x ``crop``
            windows ``stride`` apart.
        depth: the depth of clip_surgery (ignored by the other methods); None for its default.
        logit_scale, prob_thd, area_thd, pamr_steps: as in :func:`segment`.
        templates: prompt templates of the text features (default the 80 ImageNet ones).
        precision: this call's precision; None: the explainer's (see ``Explainer``).
    """
    labels = parse_labels(labels)
    method = {"surgery": "clip_surgery"}.get(method, method)
    short_side = min(check_input_size(size, explainer.model.patch_size))
    params = {"depth": depth} if method == "clip_surgery" and depth is not None else {}
    rgb = explainer.prepare_image(image)
    precision = explainer.resolved_precision(precision).name
    features = explainer.target_features(labels, templates, precision)  # [C, D] unit rows, cached per label
    with explainer.model_lock:
        result = segment(explainer.model, rgb, [[label] for label in labels], method, crop=crop, stride=stride,
                         short_side=short_side, logit_scale=logit_scale, prob_thd=prob_thd, area_thd=area_thd,
                         pamr_steps=pamr_steps, text_features=features, templates=templates, precision=precision,
                         **params)
    settings = dict(short_side=short_side, crop=crop, stride=stride, logit_scale=float(logit_scale),
                    prob_thd=float(prob_thd), area_thd=None if area_thd is None else float(area_thd),
                    pamr_steps=int(pamr_steps), **params)
    return LabelSegmentation(labels=result.labels.numpy(), probs=result.probs.numpy(), classes=tuple(labels),
                             method=method, settings=MappingProxyType(settings))
