"""The authors' per-dataset segmentation settings (ViT-B/16), so a benchmark run matches their configs.

``protocol_settings(benchmark, protocol)`` gives the keyword arguments of :func:`segment` that
SCLIP's, NACLIP's or ClearCLIP's configs use for one set (docs/algorithms.md#segmentation-inference).
Methods without configs of their own (raw, clip_surgery, maskclip, gem) are run under SCLIP's,
the protocol the later papers share. ClearCLIP's fp16 and zero padding of partial crops are not
reproduced (the toolkit computes in float32 and drops partial patches).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from ..errors import TextInputError
from .classes import BENCHMARKS

PROTOCOLS = ("sclip", "naclip", "clearclip")
_WINDOWS = {"crop": 224, "stride": 112}

# (short side, logit scale, prob_thd, area_thd) per set under SCLIP's configs.
_SCLIP = {
    "voc21": (336, 65.0, 0.1, 0.1), "voc20": (336, 40.0, 0.0, None), "context60": (336, 50.0, 0.1, None),
    "context59": (336, 40.0, 0.0, None), "coco_object": (336, 50.0, 0.1, None),
    "coco_stuff164k": (448, 40.0, 0.0, None), "cityscapes": (560, 40.0, 0.0, None), "ade20k": (336, 40.0, 0.0, None),
}
# (short side, prob_thd, whole image?) per set under NACLIP's configs; logit scale 40, PAMR 10 steps.
_NACLIP = {
    "voc21": (336, 0.1, True), "voc20": (336, 0.0, True), "context60": (336, 0.1, False),
    "context59": (336, 0.0, False), "coco_object": (336, 0.1, False), "coco_stuff164k": (336, 0.0, False),
    "cityscapes": (560, 0.0, False), "ade20k": (336, 0.0, False),
}
_CLEARCLIP_PROB = {"voc21": 0.5, "context60": 0.15, "coco_object": 0.4}


def protocol_for(method: str) -> str:
    """The protocol a method is evaluated under: its own configs where it has them, else SCLIP's."""
    return method if method in PROTOCOLS else "sclip"


def protocol_settings(benchmark: str, protocol: str = "sclip") -> Mapping[str, Any]:
    """Keyword arguments of :func:`segment` for ``benchmark`` under ``protocol`` (read-only mapping)."""
    if benchmark not in BENCHMARKS:
        raise TextInputError(f"No published settings for {benchmark!r}; benchmarks: {', '.join(BENCHMARKS)}.")
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}.")
    if protocol == "sclip":
        side, scale, prob, area = _SCLIP[benchmark]
        out = dict(_WINDOWS, short_side=side, logit_scale=scale, prob_thd=prob, area_thd=area, pamr_steps=0)
    elif protocol == "naclip":
        side, prob, whole = _NACLIP[benchmark]
        windows = {"crop": 0, "stride": None} if whole else _WINDOWS
        out = dict(windows, short_side=side, logit_scale=40.0, prob_thd=prob, area_thd=None, pamr_steps=10)
    else:
        crop = 224 if benchmark == "cityscapes" else 448
        out = dict(crop=crop, stride=224, short_side=448, logit_scale=50.0,
                   prob_thd=_CLEARCLIP_PROB.get(benchmark, 0.0), area_thd=None, pamr_steps=0)
    return MappingProxyType(out)


def class_display_names(classes: list[list[str]], benchmark: str | None = None) -> list[str]:
    """One short name per class for legends: its first name; "background" for a synonym-list class 0."""
    names = [entry[0] if entry else f"class {i}" for i, entry in enumerate(classes)]
    if benchmark in ("voc21", "coco_object", "context60") and classes:
        names[0] = "background"
    return names
