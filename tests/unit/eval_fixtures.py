"""Writers of tiny evaluation datasets in each real on-disk layout (shared by the evaluation tests).

Every writer takes a folder, writes ``n`` small images with masks of blocky random labels drawn from
the stored values that layout uses (plus some 255 where the layout has an ignore label), and returns
the folder to pass as ``root``. ``write_dataset(name, tmp_path)`` picks the writer by dataset name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

SIZE = (64, 80)  # (height, width) of the written images


def random_rgb(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth-ish random RGB uint8 [H, W, 3] (blocks plus noise, so windows see some structure)."""
    height, width = size
    blocks = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3))
    image = np.kron(blocks, np.ones((16, 16, 1)))[:height, :width]
    return np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)


def random_labels(size: tuple[int, int], values: Sequence[int], rng: np.random.Generator,
                  ignore: int | None = 255, block: int = 8) -> np.ndarray:
    """Blocky labels [H, W] drawn from ``values``, with a few ``ignore`` pixels (int64)."""
    height, width = size
    grid = rng.choice(np.asarray(values), size=(height // block + 1, width // block + 1))
    labels = np.kron(grid, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.int64)
    if ignore is not None:
        labels[rng.random(size) < 0.05] = ignore
    return labels


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(rgb).save(path)


def write_mask(path: Path, labels: np.ndarray, palette: bool = False) -> None:
    """Index mask PNG: 8-bit grey, or palette mode (VOC) whose pixel values are palette indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))  # mode "L"
    if palette:
        image = image.copy()
        image.putpalette(np.random.default_rng(1).integers(0, 256, 768).astype(np.uint8).tolist())  # -> mode "P"
    image.save(path)


def _stems(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i:06d}" for i in range(n)]


def write_voc(root: Path, n: int = 3, size=SIZE, seed: int = 0, split: str = "val") -> Path:
    """VOCdevkit/VOC2012: JPEGImages, SegmentationClass (palette 0-20, 255), ImageSets/Segmentation/val.txt."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "VOCdevkit" / "VOC2012"
    ids = _stems("2007", n)
    for i in ids:
        write_rgb(folder / "JPEGImages" / f"{i}.jpg", random_rgb(size, rng))
        write_mask(folder / "SegmentationClass" / f"{i}.png", random_labels(size, range(21), rng), palette=True)
    (folder / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (folder / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return Path(root) / "VOCdevkit"


def write_context(root: Path, n: int = 3, size=SIZE, seed: int = 0) -> Path:
    """VOCdevkit/VOC2010: JPEGImages, SegmentationClassContext (0-59), ImageSets/SegmentationContext/val.txt."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "VOCdevkit" / "VOC2010"
    ids = _stems("2008", n)
    for i in ids:
        write_rgb(folder / "JPEGImages" / f"{i}.jpg", random_rgb(size, rng))
        write_mask(folder / "SegmentationClassContext" / f"{i}.png", random_labels(size, range(60), rng, ignore=None))
    (folder / "ImageSets" / "SegmentationContext").mkdir(parents=True, exist_ok=True)
    (folder / "ImageSets" / "SegmentationContext" / "val.txt").write_text("\n".join(ids) + "\n")
    return Path(root) / "VOCdevkit"


def write_coco_stuff(root: Path, n: int = 3, size=SIZE, seed: int = 0, kind: str = "labelTrainIds") -> Path:
    """coco_stuff164k: images/val2017/*.jpg, annotations/val2017/ masks of one kind:
    "labelTrainIds" (0-170, 255), "raw" (<stem>.png, ids 0-181 without the unused ones, 255) or
    "instanceTrainIds" (COCO-Object 0-80)."""
    from clipsurgery_widgets.evaluation.datasets.coco import USED_IDS

    rng = np.random.default_rng(seed)
    folder = Path(root) / "coco_stuff164k"
    values, suffix, ignore = {"labelTrainIds": (range(171), "_labelTrainIds.png", 255),
                              "raw": (USED_IDS, ".png", 255),
                              "instanceTrainIds": (range(81), "_instanceTrainIds.png", None)}[kind]
    for stem in [f"{i:012d}" for i in range(1, n + 1)]:
        write_rgb(folder / "images" / "val2017" / f"{stem}.jpg", random_rgb(size, rng))
        write_mask(folder / "annotations" / "val2017" / f"{stem}{suffix}", random_labels(size, values, rng, ignore))
    return folder


def write_cityscapes(root: Path, n: int = 3, size=SIZE, seed: int = 0) -> Path:
    """cityscapes: leftImg8bit/val/<city>/*_leftImg8bit.png, gtFine/val/<city>/*_gtFine_labelTrainIds.png (0-18, 255)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cityscapes"
    for i in range(n):
        city = ("frankfurt", "lindau")[i % 2]
        stem = f"{city}_{i:06d}_000019"
        write_rgb(folder / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", random_rgb(size, rng))
        write_mask(folder / "gtFine" / "val" / city / f"{stem}_gtFine_labelTrainIds.png",
                   random_labels(size, range(19), rng))
    return folder


def write_ade20k(root: Path, n: int = 3, size=SIZE, seed: int = 0) -> Path:
    """ADEChallengeData2016: images/validation/*.jpg, annotations/validation/*.png (0 = other, 1-150)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "ADEChallengeData2016"
    for stem in [f"ADE_val_{i:08d}" for i in range(1, n + 1)]:
        write_rgb(folder / "images" / "validation" / f"{stem}.jpg", random_rgb(size, rng))
        write_mask(folder / "annotations" / "validation" / f"{stem}.png", random_labels(size, range(151), rng, None))
    return folder


def write_generic(root: Path, n: int = 3, size=SIZE, seed: int = 0,
                  classes: Sequence[str] = ("background", "cat", "dog, puppy")) -> Path:
    """generic: images/*.png, masks/<stem>.png (class indices, 255 ignore), classes.txt."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "generic"
    for stem in [f"img{i}" for i in range(n)]:
        write_rgb(folder / "images" / f"{stem}.png", random_rgb(size, rng))
        write_mask(folder / "masks" / f"{stem}.png", random_labels(size, range(len(classes)), rng))
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return folder


WRITERS = {
    "voc21": write_voc, "voc20": write_voc, "context60": write_context, "context59": write_context,
    "coco_stuff164k": write_coco_stuff, "coco_object": write_coco_stuff, "cityscapes": write_cityscapes,
    "ade20k": write_ade20k, "generic": write_generic,
}


def write_dataset(name: str, root: Path, n: int = 3, size=SIZE, seed: int = 0, **options) -> Path:
    """Write a tiny dataset of the given name's layout under ``root``; returns the folder to evaluate."""
    return WRITERS[name](Path(root), n=n, size=size, seed=seed, **options)


# One short prompt keeps the text features of the tiny models fast in tests.
FAST_TEMPLATES = ("a photo of a {}.",)
