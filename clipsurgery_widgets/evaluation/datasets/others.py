"""Cityscapes, ADE20K and the generic folder layout.

- cityscapes: ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` and
  ``gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png`` (19 train ids, 255 ignore; made by
  cityscapesScripts' ``createTrainIdLabelImgs``).
- ade20k: ``ADEChallengeData2016/images/validation/*.jpg`` and
  ``annotations/validation/*.png``; label - 1 with 0 becoming 255.
- generic: ``images/`` (any common image type), ``masks/<same stem>.png`` holding class indices
  (255 ignore), and a class file (default ``classes.txt`` next to the two folders; one line per
  class, synonyms separated by commas).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .base import SegDataset, paired_samples, require_dir, shifted_table

_CITY_IMAGE, _CITY_MASK = "_leftImg8bit.png", "_gtFine_labelTrainIds.png"


class Cityscapes(SegDataset):
    """Cityscapes fine annotations in train ids: 19 classes, 255 ignored."""

    name = "cityscapes"

    def expected(self) -> str:
        return (f"expected the cityscapes folder holding leftImg8bit/{self.split}/<city>/*{_CITY_IMAGE} and "
                f"gtFine/{self.split}/<city>/*{_CITY_MASK}")

    def _list(self):
        root = self.given_root
        image_dir = require_dir(self, root / "leftImg8bit" / self.split, "image")
        mask_dir = require_dir(self, root / "gtFine" / self.split, "mask")
        if next(mask_dir.glob(f"*/*{_CITY_MASK}"), None) is None and next(mask_dir.glob("*/*_labelIds.png"), None):
            raise self.layout_error(f"{mask_dir} holds *_gtFine_labelIds.png but no *{_CITY_MASK} (found 0); "
                                    f"create the train-id masks with cityscapesScripts' createTrainIdLabelImgs")
        samples = paired_samples(self, image_dir, mask_dir,
                                 lambda rel: rel.with_name(rel.name.replace(_CITY_IMAGE, _CITY_MASK)),
                                 image_suffixes=(".png",), recursive=True)
        return [replace(s, id=s.id[: -len(_CITY_IMAGE) + len(".png")]) for s in samples
                if s.image.name.endswith(_CITY_IMAGE)]


class ADE20K(SegDataset):
    """ADE20K (SceneParsing, ADEChallengeData2016): 150 classes, label - 1 with 0 ignored."""

    name = "ade20k"
    default_split = "validation"

    def __init__(self, root, split=None, classes=None):
        super().__init__(root, {"val": "validation"}.get(split, split), classes)

    def expected(self) -> str:
        return (f"expected ADEChallengeData2016 (or its parent folder) holding images/{self.split}/*.jpg and "
                f"annotations/{self.split}/*.png")

    @property
    def table(self) -> np.ndarray:
        return shifted_table(150)

    def _list(self):
        root = self.given_root
        if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        self.root = root.resolve()
        return paired_samples(self, root / "images" / self.split, root / "annotations" / self.split,
                              lambda rel: rel.with_suffix(".png"), image_suffixes=(".jpg", ".jpeg", ".png"))


class GenericDataset(SegDataset):
    """Any folder of images with index masks of the same stems and a class file; labels as stored."""

    name = "generic"
    default_split = "all"

    def __init__(self, root, split=None, classes=None):
        from ...engine.segmentation import parse_class_names, read_class_file

        root_path = Path(root).expanduser()
        if classes is None:
            classes_file = root_path / "classes.txt"
            if not classes_file.is_file():
                self.given_root = root_path
                raise self.layout_error(f"missing class file {classes_file} (found 0 class files)")
            classes = read_class_file(classes_file)
        elif isinstance(classes, (str, Path)) and Path(classes).expanduser().is_file():
            classes = read_class_file(classes)
        else:
            classes = parse_class_names(classes)
        super().__init__(root, split, classes)

    def expected(self) -> str:
        return ("expected a folder holding images/ (image files), masks/ (<same stem>.png class indices, 255 "
                "ignore) and classes.txt (one class per line)")

    def _list(self):
        return paired_samples(self, self.given_root / "images", self.given_root / "masks",
                              lambda rel: rel.with_suffix(".png"))
