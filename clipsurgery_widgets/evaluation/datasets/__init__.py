"""Readers of the segmentation benchmarks in the layouts users already have on disk.

``get_dataset(name, root, split=None)`` returns a :class:`SegDataset`: ``samples()`` in a fixed
order, ``load_mask(sample)`` with the benchmark's label mapping (ignore = 255), ``check()``
raising :class:`DatasetLayoutError` before any model is loaded.
See docs/algorithms.md#evaluation-protocol for the label mappings.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from .base import IGNORE_INDEX, DatasetLayoutError, MaskError, Sample, SegDataset
from .coco import CocoObject, CocoStuff164k
from .others import ADE20K, Cityscapes, GenericDataset
from .pascal import VOC20, VOC21, Context59, Context60

DATASETS: dict[str, type[SegDataset]] = {
    "voc21": VOC21, "voc20": VOC20, "context60": Context60, "context59": Context59,
    "coco_stuff164k": CocoStuff164k, "coco_object": CocoObject, "cityscapes": Cityscapes, "ade20k": ADE20K,
    "generic": GenericDataset,
}


def get_dataset(name: str, root: str | Path, split: str | None = None, classes: Any = None) -> SegDataset:
    """The reader of dataset ``name`` over the folder ``root``.

    Args:
        name: voc21, voc20, context60, context59, coco_stuff164k, coco_object, cityscapes, ade20k
            or generic.
        root: the folder users already have (e.g. VOCdevkit, or VOC2012 itself).
        split: default the benchmark's validation split.
        classes: class names to use instead of the shipped list (a class file or a list); the
            generic layout reads ``ROOT/classes.txt`` without it.
    """
    if name not in DATASETS:
        close = difflib.get_close_matches(str(name), DATASETS, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown dataset {name!r}.{hint} Choose one of {', '.join(DATASETS)}.")
    if root is None:
        raise DatasetLayoutError(f"{name}: no dataset folder given; pass root= (--root DIR), the folder that holds it")
    if classes is not None and name != "generic":
        from ...engine.segmentation import parse_class_names, read_class_file

        classes = read_class_file(classes) if isinstance(classes, (str, Path)) and Path(classes).is_file() \
            else parse_class_names(classes)
    return DATASETS[name](root, split, classes)


__all__ = ["get_dataset", "DATASETS", "SegDataset", "Sample", "DatasetLayoutError", "MaskError", "IGNORE_INDEX"]
