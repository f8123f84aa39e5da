"""What every segmentation dataset reader shares: samples, label mapping, layout checks, errors.

A reader lists its samples in a fixed order (the split file's order, else sorted file names),
maps the stored labels to class indices with a lookup table (docs/algorithms.md#evaluation-protocol:
ignore = 255) and checks its folder layout before any model is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ...engine.errors import ClipSurgeryError

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_INVALID = -1  # lookup-table value of a stored label that names no class


class DatasetLayoutError(ClipSurgeryError, ValueError):
    """The dataset folder is missing, incomplete or laid out differently from what the reader expects."""


class MaskError(ClipSurgeryError, ValueError):
    """One mask cannot be used: unreadable, not an index image, or labels outside the class list."""


@dataclass(frozen=True)
class Sample:
    """One evaluation image: its id (unique, stable), image file and mask file (None: no mask found)."""

    id: str
    image: Path
    mask: Path | None


def label_table(pairs: Iterable[tuple[int, int]], size: int = 256) -> np.ndarray:
    """Lookup table stored label -> class index (or 255); labels not given map to 'invalid'."""
    table = np.full(size, _INVALID, dtype=np.int64)
    for stored, mapped in pairs:
        table[stored] = mapped
    return table


def identity_table(num_classes: int) -> np.ndarray:
    """0..C-1 as is, 255 ignored, anything else outside the class list."""
    return label_table([(c, c) for c in range(num_classes)] + [(IGNORE_INDEX, IGNORE_INDEX)],
                       size=max(256, num_classes))


def shifted_table(num_classes: int) -> np.ndarray:
    """label - 1 with 0 -> 255 (PASCAL Context 59, ADE20K, VOC20): 1..C -> 0..C-1, 255 stays 255."""
    return label_table([(0, IGNORE_INDEX), (IGNORE_INDEX, IGNORE_INDEX)] + [(c + 1, c) for c in range(num_classes)])


def read_index_mask(path: Path) -> np.ndarray:
    """A mask PNG -> its stored indices, int64 [H, W] (palette PNGs give palette indices, not colours)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                raise MaskError(f"mask {path.name} is a {image.mode} image, not an index image (one class index "
                                f"per pixel, palette or grey)")
            array = np.array(image)
    except MaskError:
        raise
    except Exception as exc:  # PIL raises many types for damaged files
        raise MaskError(f"unreadable mask {path.name}: {exc}") from None
    if array.ndim != 2:
        raise MaskError(f"mask {path.name} has shape {array.shape}, not [H, W]")
    return array.astype(np.int64)


def apply_table(raw: np.ndarray, table: np.ndarray, name: str) -> np.ndarray:
    """Stored labels -> class indices; MaskError naming the stored labels no class accepts."""
    if raw.size and (raw.min() < 0 or raw.max() >= len(table)):
        bad = np.unique(raw[(raw < 0) | (raw >= len(table))])
    else:
        mapped = table[raw]
        bad = np.unique(raw[mapped == _INVALID]) if (mapped == _INVALID).any() else None
        if bad is None:
            return mapped
    shown = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
    raise MaskError(f"mask {name} has labels outside the class list: {shown}")


class SegDataset:
    """Base of the readers. Subclasses set ``name``, ``classes``, ``table`` and implement ``_list``.

    Attributes:
        name: dataset name ("voc21", ...); root: the folder the reader uses (resolved);
        split: the split read; classes: C lists of names (class 0 first); ignore_index: 255.
    """

    name: str = "dataset"
    default_split: str = "val"
    ignore_index: int = IGNORE_INDEX

    def __init__(self, root: str | Path, split: str | None = None, classes: Sequence[Sequence[str]] | None = None):
        self.given_root = Path(root).expanduser()
        self.split = split or self.default_split
        self.root = self.given_root.resolve()
        self._classes = [list(c) for c in classes] if classes is not None else None
        self._samples: list[Sample] | None = None

    # --- what subclasses provide -------------------------------------------------------------

    @property
    def classes(self) -> list[list[str]]:
        from ...engine.segmentation import benchmark_classes

        if self._classes is None:
            self._classes = benchmark_classes(self.name)
        return self._classes

    @property
    def table(self) -> np.ndarray:
        """Lookup table stored label -> class index; default: labels are class indices."""
        return identity_table(len(self.classes))

    def _list(self) -> list[Sample]:
        raise NotImplementedError

    # --- public API ----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise DatasetLayoutError (one line) if the folder layout is wrong or incomplete."""
        self.samples()

    def samples(self) -> list[Sample]:
        """The split's samples in a deterministic order (checked on first call)."""
        if self._samples is None:
            if not self.given_root.is_dir():
                raise self.layout_error(f"folder {self.given_root} does not exist")
            samples = self._list()
            if not samples:
                raise self.layout_error(f"no images found under {self.root}")
            ids = [s.id for s in samples]
            if len(set(ids)) != len(ids):
                raise self.layout_error("two images share one id; image file names must be unique")
            self._samples = samples
        return self._samples

    def load_mask(self, sample: Sample) -> np.ndarray:
        """Class index per pixel, int64 [H, W] (ignore = 255); MaskError if unusable."""
        if sample.mask is None:
            raise MaskError(f"no mask for image {sample.image.name}")
        return apply_table(read_index_mask(sample.mask), self.table, sample.mask.name)

    def describe(self) -> str:
        return f"{self.name} ({self.split}) at {self.root}"

    def layout_error(self, detail: str) -> DatasetLayoutError:
        return DatasetLayoutError(f"{self.name}: {self.expected()}; {detail}")

    def expected(self) -> str:
        """One phrase naming the folder layout the reader expects."""
        return "unexpected layout"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


# --- helpers shared by the readers ---------------------------------------------------------------

def read_split_list(dataset: SegDataset, path: Path) -> list[str]:
    """Ids in a split file (one per line, blank lines ignored), or a layout error naming the file."""
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        hint = f" (found {len(found)} split files: {', '.join(found[:5])})" if found else " (found 0 split files)"
        raise dataset.layout_error(f"missing split list {path}{hint}")
    ids = [line.strip().split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise dataset.layout_error(f"split list {path} is empty")
    return ids


def require_dir(dataset: SegDataset, path: Path, what: str) -> Path:
    if not path.is_dir():
        raise dataset.layout_error(f"missing {what} folder {path}")
    return path


def listed_samples(dataset: SegDataset, ids: list[str], image_dir: Path, image_suffix: str, mask_dir: Path,
                   mask_suffix: str, list_name: str) -> list[Sample]:
    """Samples of a split list: every listed image must exist (else a layout error); a missing mask -> None."""
    require_dir(dataset, image_dir, "image")
    require_dir(dataset, mask_dir, "mask")
    images = [image_dir / f"{i}{image_suffix}" for i in ids]
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise dataset.layout_error(
            f"{len(missing)} of {len(ids)} images listed in {list_name} are missing from {image_dir} "
            f"(first missing: {missing[0].name}; found {len(ids) - len(missing)})")
    masks = [mask_dir / f"{i}{mask_suffix}" for i in ids]
    present = [m if m.is_file() else None for m in masks]
    if not any(present):
        raise dataset.layout_error(f"none of the {len(ids)} masks listed in {list_name} is in {mask_dir} "
                                   f"(first missing: {masks[0].name}; found 0)")
    return [Sample(id=i, image=img, mask=m) for i, img, m in zip(ids, images, present)]


def paired_samples(dataset: SegDataset, image_dir: Path, mask_dir: Path, mask_name, image_suffixes=IMAGE_SUFFIXES,
                   recursive: bool = False) -> list[Sample]:
    """Samples from a folder of images (sorted) and the mask each one's name maps to (None if absent)."""
    require_dir(dataset, image_dir, "image")
    require_dir(dataset, mask_dir, "mask")
    pattern = "**/*" if recursive else "*"
    images = sorted(p for p in image_dir.glob(pattern) if p.is_file() and p.suffix.lower() in image_suffixes)
    if not images:
        raise dataset.layout_error(f"no images in {image_dir} (found 0 files ending in "
                                   f"{', '.join(image_suffixes[:4])})")
    samples = []
    for image in images:
        relative = image.relative_to(image_dir)
        mask = mask_dir / mask_name(relative)
        samples.append(Sample(id=str(relative.with_suffix("").as_posix()), image=image,
                              mask=mask if mask.is_file() else None))
    if not any(s.mask for s in samples):
        first = mask_dir / mask_name(images[0].relative_to(image_dir))
        raise dataset.layout_error(f"none of the {len(images)} images has a mask in {mask_dir} "
                                   f"(first missing: {first.relative_to(mask_dir)}; found 0)")
    return samples
