"""The papers' published segmentation mIoU (percent, ViT-B/16), to print beside measured numbers.

Sources and protocols (docs/algorithms.md#published-numbers): the SCLIP, NACLIP and ClearCLIP
READMEs under each one's own configs; ClearCLIP's README table running raw CLIP, MaskCLIP, SCLIP
and GEM under ClearCLIP's protocol; the CLIP Surgery paper under its own protocol (PASCAL
Context with 59 classes, COCO-Stuff, Cityscapes).
"""
from __future__ import annotations

_SETS = ("voc21", "context60", "coco_object", "voc20", "cityscapes", "context59", "ade20k", "coco_stuff164k")
_CLEARCLIP_SETS = ("voc20", "context59", "coco_stuff164k", "cityscapes", "ade20k")
_SURGERY_SETS = ("context59", "coco_stuff164k", "cityscapes")

_OWN = {  # method: (source, values in the order of _SETS, None = not published)
    "sclip": ("SCLIP README, its configs, no PAMR", (59.63, 31.74, 33.52, 81.54, 32.34, 34.46, 16.45, 22.77)),
    "naclip": ("NACLIP README, its configs, PAMR 10 steps", (64.07, 34.99, 36.19, 83.03, 38.27, 38.35, 19.05, 25.69)),
    "clearclip": ("ClearCLIP README, its configs", (None, None, None, 80.9, 30.0, 35.9, 16.7, 23.9)),
}
_UNDER_CLEARCLIP = {  # values in the order of _CLEARCLIP_SETS
    "raw": (41.8, 9.2, 4.4, 5.5, 2.1),
    "maskclip": (74.9, 26.4, 16.4, 12.6, 9.8),
    "sclip": (78.2, 33.0, 21.1, 29.1, 14.6),
    "gem": (79.9, 35.9, 23.7, 30.8, 15.7),
}
_UNDER_SURGERY = {"clip_surgery": (29.3, 21.9, 31.4), "maskclip": (22.4, 15.3, 22.7)}  # order of _SURGERY_SETS


def published_miou(dataset: str, method: str) -> list[dict]:
    """Published mIoU entries for one method on one dataset: [{"value": percent, "source": text}]."""
    found = []
    if method in _OWN:
        source, values = _OWN[method]
        value = dict(zip(_SETS, values)).get(dataset)
        if value is not None:
            found.append({"value": value, "source": source})
    if method in _UNDER_CLEARCLIP and dataset in _CLEARCLIP_SETS:
        value = dict(zip(_CLEARCLIP_SETS, _UNDER_CLEARCLIP[method]))[dataset]
        found.append({"value": value, "source": "ClearCLIP README, ClearCLIP's protocol"})
    if method in _UNDER_SURGERY and dataset in _SURGERY_SETS:
        value = dict(zip(_SURGERY_SETS, _UNDER_SURGERY[method]))[dataset]
        found.append({"value": value, "source": "CLIP Surgery paper, its own protocol"})
    return found
