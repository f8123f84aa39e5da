"""Multi-label recognition mAP with and without feature surgery (docs/algorithms.md#evaluation-protocol).

The score of label t on an image is its global-token score: the cosine of CLIP's image embedding
(token 0) with the label's prompt-ensembled text feature ("cosine"), or the multi-label feature
surgery of docs/algorithms.md#feature-surgery on token 0 over all T labels ("feature_surgery").
Both come from one forward pass, so one run gives the paper's comparison (CLIP RN50 on NUS-Wide:
35.58 -> 39.99). mAP = macro mean over labels of average precision, labels without a positive
skipped; scores and targets are kept per image so that the merge is exact.

Label sources (``dataset``):
- "csv" (NUS-Wide style): ``root`` is a CSV with header ``image,<label 1>,...,<label T>``, image
  paths relative to the CSV, entries 0/1 (-1 = left out), or a folder holding exactly one CSV.
- "voc": PASCAL VOC 2012 (``VOCdevkit``, ``VOC2012``): ``ImageSets/Main/<class>_<split>.txt`` (1
  present, -1 absent, 0 "difficult" = left out); without ImageSets/Main, the classes present in the
  segmentation masks of ``ImageSets/Segmentation/<split>.txt``.
- "coco": ``root`` holds ``annotations/instances_<split>2017.json`` and ``<split>2017/`` images;
  every image with at least one object annotation, the 80 categories in id order.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...engine.images import preprocess
from ...engine.segmentation import benchmark_classes
from ...engine.segmentation.protocols import class_display_names
from ...engine.surgery import feature_surgery
from ...engine.text.encoding import TEMPLATES
from ..datasets import DatasetLayoutError, get_dataset
from ..datasets.base import MaskError
from ..ranking import mean_average_precision
from .base import Task
from .common import (check_unused, explainer_for, given_methods, native_size, read_rgb, stack_items)

SCORES = ("cosine", "feature_surgery")
SOURCES = ("csv", "voc", "coco")
# The file names of VOC's ImageSets/Main lists, in the class order of the voc20 class file.
VOC_FILE_NAMES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                  "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
                  "tvmonitor")


class MultiLabelTask(Task):
    """Multi-label mAP of the global token's label scores, plain cosine and with feature surgery.

    Args:
        dataset: "csv" (also "nuswide"), "voc" or "coco"; root: see the module docstring.
        split: "val" (voc, coco; ignored for csv).
        methods: which score rows to report: "cosine", "feature_surgery" (default both; the runner's
            default: both).
        size: model input size (default: the model's native size); templates: prompt templates.
    """

    name = "multilabel"

    def __init__(self, dataset: str = "csv", root: Any = None, split: str | None = None,
                 methods: Sequence[str] | str | None = None, size: int | Sequence[int] | None = None,
                 templates: Sequence[str] | None = None, **unused: Any):
        check_unused(self.name, unused)
        dataset = "csv" if dataset == "nuswide" else dataset
        if dataset not in SOURCES:
            raise ValueError(f"Unknown multi-label dataset {dataset!r}; choose csv (NUS-Wide style), voc or coco.")
        if root is None:
            raise DatasetLayoutError(f"{dataset}: no dataset given; pass root= (--root PATH)")
        self.source, self.root, self.split = dataset, Path(root).expanduser(), split or "val"
        self.methods = list(dict.fromkeys(given_methods(methods) or SCORES))
        unknown = [m for m in self.methods if m not in SCORES]
        if unknown:
            raise ValueError(f"Multi-label scores come from the global token: methods are {' and '.join(SCORES)}, "
                             f"not {unknown[0]!r}.")
        self.size = size
        self.templates = list(templates) if templates is not None else None
        self._table: tuple[list[str], dict[str, tuple[Path, np.ndarray]]] | None = None
        self._explainer = None

    # --- the contract ----------------------------------------------------------------------------

    def check(self) -> None:
        self._read()

    def items(self) -> list[str]:
        return list(self._read()[1])

    @property
    def label_names(self) -> list[str]:
        return self._read()[0]

    def prepare(self, model: Any) -> None:
        self._explainer = explainer_for(model)
        self._input_size = native_size(self._explainer, self.size)
        self._features = self._explainer.label_features(self.label_names, self.templates or TEMPLATES)  # [T, D]

    def run_item(self, item_id: str) -> dict[str, dict[str, np.ndarray]]:
        if self._explainer is None:
            raise RuntimeError("Call prepare(model) before run_item().")
        path, targets = self._read()[1][item_id]
        rgb = read_rgb(path)
        loaded = self._explainer.model
        pixels = preprocess(rgb, self._input_size, loaded.mean, loaded.std, loaded.patch_size).to(loaded.device)
        with self._explainer.model_lock, torch.no_grad():
            embedding = loaded.model.encode_image(pixels).float().cpu()  # [1, D]: token 0
        token = F.normalize(embedding, dim=-1)[:, None, :]  # [1, 1, D]
        rows = {"cosine": feature_surgery(token, self._features, mode="none")[0, 0],
                "feature_surgery": feature_surgery(token, self._features, mode="labels")[0, 0]}
        return {m: {"scores": rows[m].numpy().astype(np.float32), "targets": targets} for m in self.methods}

    def merge(self, stats: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict]:
        out = {}
        for method in self.methods:
            rows = [s[method] for s in stats]
            if not rows:
                out[method] = {"map": None, "per_label_ap": dict.fromkeys(self.label_names), "images": 0}
                continue
            result = mean_average_precision(stack_items(rows, "scores"), stack_items(rows, "targets"),
                                            self.label_names)
            out[method] = dict(result, images=len(rows))
        return out

    def settings(self) -> dict:
        size = list(self.size) if isinstance(self.size, (tuple, list)) else self.size
        return {"task": self.name, "dataset": self.source, "root": str(self.root.resolve()), "split": self.split,
                "methods": self.methods, "size": size, "templates": self.templates, "labels": self.label_names}

    def extras(self) -> dict:
        return {"class_names": self.label_names}

    def published(self) -> dict:
        """The CLIP Surgery paper's NUS-Wide mAP (CLIP RN50, percent), beside a NUS-Wide style run."""
        if self.source != "csv":
            return {}
        source = "CLIP Surgery paper, NUS-Wide, CLIP RN50"
        return {"cosine": {"map": [{"value": 35.58, "source": source}]},
                "feature_surgery": {"map": [{"value": 39.99, "source": source}]}}

    # --- label sources ----------------------------------------------------------------------------

    def _read(self) -> tuple[list[str], dict[str, tuple[Path, np.ndarray]]]:
        if self._table is None:
            reader = {"csv": read_label_csv, "voc": read_voc_labels, "coco": read_coco_labels}[self.source]
            self._table = reader(self.root, self.split)
        return self._table


def read_label_csv(root: Path, split: str | None = None) -> tuple[list[str], dict[str, tuple[Path, np.ndarray]]]:
    """(labels, {image path as written: (file, int8 targets [T])}) of a NUS-Wide style CSV."""
    path = root
    if root.is_dir():
        found = sorted(root.glob("*.csv"))
        if len(found) != 1:
            raise DatasetLayoutError(f"csv: expected ROOT to be a label CSV or a folder with exactly one; "
                                     f"{root} holds {len(found)} .csv files")
        path = found[0]
    if not path.is_file():
        raise DatasetLayoutError(f"csv: expected a label CSV (header image,<label 1>,...); missing file {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or len(rows[0]) < 3 or rows[0][0].strip().lower() != "image":
        raise DatasetLayoutError(f"csv: {path.name} must start with the header image,<label 1>,...,<label T> "
                                 f"(T >= 2 labels)")
    labels = [name.strip() for name in rows[0][1:]]
    table: dict[str, tuple[Path, np.ndarray]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        values = [v.strip() for v in row[1:]]
        if len(values) != len(labels) or any(v not in ("0", "1", "-1") for v in values):
            raise DatasetLayoutError(f"csv: {path.name} line {line} must hold an image and {len(labels)} entries "
                                     f"of 0 or 1 (-1 = left out)")
        table[row[0].strip()] = (path.parent / row[0].strip(), np.asarray(values, dtype=np.int8))
    return labels, _require_images(table, "csv", f"images listed in {path.name}")


def read_voc_labels(root: Path, split: str = "val") -> tuple[list[str], dict[str, tuple[Path, np.ndarray]]]:
    """VOC 2012 image-level labels from ImageSets/Main, or else from the segmentation masks."""
    from ..datasets.pascal import find_year_folder

    folder = find_year_folder(root, "VOC2012", "JPEGImages")
    if folder is None:
        raise DatasetLayoutError(f"voc: expected VOCdevkit/VOC2012 (or VOC2012 itself) holding JPEGImages/; "
                                 f"none under {root}")
    names = class_display_names(benchmark_classes("voc20"), "voc20")
    main = folder / "ImageSets" / "Main"
    if not main.is_dir():
        return names, _labels_from_masks(folder, split)
    columns = []
    for name in VOC_FILE_NAMES:
        path = main / f"{name}_{split}.txt"
        if not path.is_file():
            have = len(list(main.glob(f"*_{split}.txt")))
            raise DatasetLayoutError(f"voc: expected ImageSets/Main/<class>_{split}.txt for the 20 classes; "
                                     f"missing file {path} (found {have})")
        columns.append(dict(line.split()[:2] for line in path.read_text().splitlines() if line.strip()))
    ids = list(columns[0])
    table = {}
    for i in ids:
        marks = [int(col.get(i, "-1")) for col in columns]
        targets = np.asarray([1 if m == 1 else (-1 if m == 0 else 0) for m in marks], dtype=np.int8)
        table[i] = (folder / "JPEGImages" / f"{i}.jpg", targets)
    return names, _require_images(table, "voc", "images listed in ImageSets/Main")


def _labels_from_masks(folder: Path, split: str) -> dict[str, tuple[Path, np.ndarray]]:
    dataset = get_dataset("voc20", folder, split)
    table = {}
    for sample in dataset.samples():
        if sample.mask is None:
            continue
        try:
            mask = dataset.load_mask(sample)
        except MaskError:
            continue  # the segmentation task reports such masks; here the image has no labels to give
        targets = np.zeros(20, dtype=np.int8)
        targets[[c for c in np.unique(mask) if c < 20]] = 1
        table[sample.id] = (sample.image, targets)
    return table


def read_coco_labels(root: Path, split: str = "val") -> tuple[list[str], dict[str, tuple[Path, np.ndarray]]]:
    """COCO image-level labels from instances_<split>2017.json (80 categories in id order)."""
    path = root / "annotations" / f"instances_{split}2017.json"
    if not path.is_file():
        raise DatasetLayoutError(f"coco: expected ROOT/annotations/instances_{split}2017.json and ROOT/{split}2017/; "
                                 f"missing file {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    column = {c["id"]: i for i, c in enumerate(categories)}
    files = {im["id"]: im["file_name"] for im in data.get("images", [])}
    present: dict[int, set[int]] = {}
    for ann in data.get("annotations", []):
        if ann.get("image_id") in files and ann.get("category_id") in column:
            present.setdefault(ann["image_id"], set()).add(column[ann["category_id"]])
    table = {}
    for image_id in sorted(present):
        targets = np.zeros(len(categories), dtype=np.int8)
        targets[sorted(present[image_id])] = 1
        table[files[image_id]] = (root / f"{split}2017" / files[image_id], targets)
    return [c["name"] for c in categories], _require_images(table, "coco", f"annotated images in {path.name}")


def _require_images(table: dict[str, tuple[Path, np.ndarray]], source: str, what: str) -> dict:
    if not table:
        raise DatasetLayoutError(f"{source}: no {what}")
    missing = [path for path, _ in table.values() if not path.is_file()]
    if missing:
        raise DatasetLayoutError(f"{source}: {len(missing)} of {len(table)} {what} are missing (first missing: "
                                 f"{missing[0]}; found {len(table) - len(missing)})")
    return table
