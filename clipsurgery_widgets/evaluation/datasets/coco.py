"""COCO-Stuff 164k (171 classes) and COCO-Object (81 classes, derived from COCO-Stuff) readers.

Folder (mmseg's ``coco_stuff164k`` layout): ``images/val2017/<stem>.jpg`` and
``annotations/val2017/`` holding, per image, one of (first found wins, per dataset):
- ``<stem>_labelTrainIds.png``: mmseg's converted masks, 0-170 (171 classes), 255 ignore;
- ``<stem>.png``: COCO-Stuff's ``stuffthingmaps`` PNGs, ids 0-181 (COCO's 1-based ids minus 1,
  with the 11 unused thing ids), 255 unlabeled; mapped to the 171 classes in id order (what
  mmseg's conversion does; unused ids -> 255);
- COCO-Object only: ``<stem>_instanceTrainIds.png``, masks already converted to 0-80.
COCO-Object (docs/algorithms.md#evaluation-protocol): the 80 thing classes become 1..80 in
order; every stuff label and 255 become 0 (background); no ignore label.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, SegDataset, identity_table, label_table, paired_samples

# COCO's unused thing ids (street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door,
# blender, hair brush), 0-based as in the stuffthingmaps PNGs.
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
USED_IDS = tuple(i for i in range(182) if i not in UNUSED_IDS)  # 171 ids; the first 80 are things
NUM_THINGS = 80


def stuff_id_to_class() -> dict[int, int]:
    """COCO-Stuff id (0-181) -> class index 0-170 (the 171 used ids in order)."""
    return {stored: index for index, stored in enumerate(USED_IDS)}


class _CocoBase(SegDataset):
    default_split = "val2017"
    suffixes: tuple[str, ...] = ("_labelTrainIds.png", ".png")

    def __init__(self, root, split=None, classes=None):
        split = {"val": "val2017", "train": "train2017"}.get(split, split)
        super().__init__(root, split, classes)
        self.mask_kind: str | None = None

    def expected(self) -> str:
        kinds = " or ".join(f"<stem>{s}" for s in self.suffixes)
        return (f"expected the coco_stuff164k folder holding images/{self.split}/*.jpg and "
                f"annotations/{self.split}/ with {kinds} masks")

    def _list(self):
        root = self.given_root
        if not (root / "images").is_dir() and (root / "coco_stuff164k" / "images").is_dir():
            root = root / "coco_stuff164k"
        self.root = root.resolve()
        mask_dir = root / "annotations" / self.split
        self.mask_kind = self._mask_kind(mask_dir)
        suffix = self.mask_kind
        return paired_samples(self, root / "images" / self.split, mask_dir,
                              lambda relative: relative.with_name(relative.stem + suffix),
                              image_suffixes=(".jpg", ".jpeg", ".png"))

    def _mask_kind(self, mask_dir: Path) -> str:
        if mask_dir.is_dir():
            for suffix in self.suffixes[:-1]:
                if next(mask_dir.glob(f"*{suffix}"), None) is not None:
                    return suffix
        return self.suffixes[-1]

    def _raw_table(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def table(self) -> np.ndarray:
        if self.mask_kind is None:
            self.samples()
        if self.mask_kind == ".png":
            return self._raw_table()
        return self._train_id_table()

    def _train_id_table(self) -> np.ndarray:
        raise NotImplementedError


class CocoStuff164k(_CocoBase):
    """COCO-Stuff 164k: 171 classes (80 things, then 91 stuff), 255 ignored."""

    name = "coco_stuff164k"

    def _raw_table(self) -> np.ndarray:
        pairs = list(stuff_id_to_class().items()) + [(i, IGNORE_INDEX) for i in UNUSED_IDS]
        return label_table(pairs + [(IGNORE_INDEX, IGNORE_INDEX)])

    def _train_id_table(self) -> np.ndarray:
        return identity_table(171)


class CocoObject(_CocoBase):
    """COCO-Object: background (0) plus the 80 COCO thing classes (1..80); no ignore label."""

    name = "coco_object"
    suffixes = ("_instanceTrainIds.png", "_labelTrainIds.png", ".png")

    def _raw_table(self) -> np.ndarray:
        classes = stuff_id_to_class()
        pairs = [(stored, index + 1 if index < NUM_THINGS else 0) for stored, index in classes.items()]
        return label_table(pairs + [(i, 0) for i in UNUSED_IDS] + [(IGNORE_INDEX, 0)])

    def _train_id_table(self) -> np.ndarray:
        if self.mask_kind == "_instanceTrainIds.png":  # already COCO-Object labels
            return identity_table(81)
        pairs = [(t, t + 1 if t < NUM_THINGS else 0) for t in range(171)]
        return label_table(pairs + [(IGNORE_INDEX, 0)])
