"""PASCAL VOC 2012 (voc21, voc20) and PASCAL Context (context60, context59) readers.

VOC: ``VOCdevkit/VOC2012`` (or the ``VOC2012`` folder itself) with ``JPEGImages/<id>.jpg``,
``SegmentationClass/<id>.png`` (palette indices 0-20, 255 = border/ignore) and the split list
``ImageSets/Segmentation/<split>.txt``.
Context: the common converted layout (mmseg's), ``VOCdevkit/VOC2010`` with
``SegmentationClassContext/<id>.png`` (index masks 0-59, 0 = background) and
``ImageSets/SegmentationContext/<split>.txt``.
Label mappings (docs/algorithms.md#evaluation-protocol): voc21 and context60 as stored; voc20 and
context59 shift by -1 with 0 becoming 255 (ignore).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import SegDataset, listed_samples, read_split_list, shifted_table


def find_year_folder(root: Path, year_folder: str, marker: str) -> Path | None:
    """The VOC20xx folder: ROOT itself, ROOT/VOC20xx or ROOT/VOCdevkit/VOC20xx (the first holding marker)."""
    for candidate in (root, root / year_folder, root / "VOCdevkit" / year_folder):
        if (candidate / marker).is_dir():
            return candidate
    return None


class _PascalBase(SegDataset):
    year_folder = "VOC2012"
    split_dir = "ImageSets/Segmentation"
    mask_dir = "SegmentationClass"

    def expected(self) -> str:
        return (f"expected VOCdevkit/{self.year_folder} (or the {self.year_folder} folder itself) holding "
                f"JPEGImages/, {self.mask_dir}/ and {self.split_dir}/{self.split}.txt")

    def _list(self):
        folder = find_year_folder(self.given_root, self.year_folder, "JPEGImages")
        if folder is None:
            found = sorted(p.name for p in self.given_root.iterdir())[:6]
            raise self.layout_error(f"no JPEGImages/ in {self.given_root}, {self.given_root / self.year_folder} "
                                    f"or {self.given_root / 'VOCdevkit' / self.year_folder} (found: "
                                    f"{', '.join(found) or 'an empty folder'})")
        self.root = folder.resolve()
        split_file = folder / self.split_dir / f"{self.split}.txt"
        ids = read_split_list(self, split_file)
        return listed_samples(self, ids, folder / "JPEGImages", ".jpg", folder / self.mask_dir, ".png",
                              f"{self.split_dir}/{self.split}.txt")


class VOC21(_PascalBase):
    """PASCAL VOC 2012 with background: 21 classes, labels as stored, 255 ignored."""

    name = "voc21"


class VOC20(_PascalBase):
    """PASCAL VOC 2012 without background: 20 classes; background (0) and 255 ignored."""

    name = "voc20"

    @property
    def table(self) -> np.ndarray:
        return shifted_table(20)


class Context60(_PascalBase):
    """PASCAL Context with background: 60 classes, labels as stored."""

    name = "context60"
    year_folder = "VOC2010"
    split_dir = "ImageSets/SegmentationContext"
    mask_dir = "SegmentationClassContext"


class Context59(Context60):
    """PASCAL Context without background: 59 classes, label - 1 with 0 ignored."""

    name = "context59"

    @property
    def table(self) -> np.ndarray:
        return shifted_table(59)
