"""ImageNet-segmentation (Chefer et al.'s ``gtsegs_ijcv.mat``): pixel accuracy, mIoU and mAP of
one foreground map per image (docs/algorithms.md#evaluation-protocol).

The file is MATLAB v7.3, i.e. HDF5: ``/value/img`` [n, 1] holds references to images stored
transposed, ``/value/gt`` [n, 1] references to references to masks (read with h5py).

Which map: the model's own zero-shot prediction among the candidate labels (default the 1000
ImageNet class names) picks the label, and each method draws that label's map among all the
candidates: "decomposition" is the text-based decomposition's zero-shot segmentation
(docs/algorithms.md#text-based-decomposition), any dense method ("clip_surgery", "raw", ...) its
similarity map (feature surgery as the method's default). Maps and masks are compared at the
model input size (the image and the mask resized to it, the mask by nearest neighbour, as in the
published evaluation), or at the original size with ``at_original_size=True``.

Metrics over the two classes (background, foreground): the min-max map thresholded at its own
mean gives a mask; one confusion matrix over all pixels gives pixel accuracy and mIoU; mAP is the
average precision of the map's values against the mask, per image, averaged over images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...engine.decomposition import decompose, spatial_maps
from ...engine.decomposition.terms import vision_tower
from ...engine.images import preprocess
from ...engine.maps import similarity_maps
from ...engine.surgery import feature_surgery
from ...engine.text.encoding import TEMPLATES
from ..datasets import DatasetLayoutError
from ..metrics import segmentation_scores
from ..ranking import average_precision
from .base import SkipItem, Task
from .common import check_unused, explainer_for, method_names, native_size

FILE_NAME = "gtsegs_ijcv.mat"
DECOMPOSITION = "decomposition"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names that open_clip ships (its zero-shot metadata)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


class ImageNetSegFile:
    """Reader of ``gtsegs_ijcv.mat``; opened lazily in each process (h5py handles do not pickle)."""

    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        self.path = path / FILE_NAME if path.is_dir() else path
        self._file = None

    def check(self) -> int:
        """The number of images; DatasetLayoutError (one line) for a missing or different file."""
        if not self.path.is_file():
            raise DatasetLayoutError(f"imagenet_seg: expected the file {FILE_NAME} (or a folder holding it); "
                                     f"missing file {self.path}")
        try:
            import h5py

            with h5py.File(self.path, "r") as f:
                images, masks = f["value/img"], f["value/gt"]
                if images.shape[0] != masks.shape[0]:
                    raise DatasetLayoutError(f"imagenet_seg: {self.path.name} holds {images.shape[0]} images but "
                                             f"{masks.shape[0]} masks")
                return int(images.shape[0])
        except (OSError, KeyError) as exc:
            raise DatasetLayoutError(f"imagenet_seg: {self.path} is not the ImageNet-segmentation file (MATLAB "
                                     f"v7.3 with /value/img and /value/gt): {exc}") from None

    def _open(self):
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file

    def image(self, index: int) -> np.ndarray:
        """RGB uint8 [H, W, 3]: the stored array is W x H x 3 reversed (MATLAB order), hence the transpose."""
        f = self._open()
        array = np.asarray(f[f["value/img"][index, 0]]).T
        if array.ndim != 3 or array.shape[2] != 3:
            raise SkipItem(f"image {index} has shape {array.shape}, not [H, W, 3]")
        return np.ascontiguousarray(array.astype(np.uint8))

    def mask(self, index: int) -> np.ndarray:
        """bool [H, W] foreground: the gt entry refers to a cell whose [0, 0] refers to the mask."""
        f = self._open()
        inner = f[f["value/gt"][index, 0]][0, 0]
        return np.ascontiguousarray(np.asarray(f[inner]).T != 0)


class ImageNetSegTask(Task):
    """Pixel accuracy, mIoU and mAP of foreground maps on ImageNet-segmentation.

    Args:
        root: ``gtsegs_ijcv.mat`` or the folder holding it.
        methods: "decomposition" and/or dense map methods (default: decomposition, clip_surgery).
        labels: candidate labels (a list, or a text file with one per line); default ImageNet's 1000.
        size: model input size (default the model's own); at_original_size: compare at the image size.
        feature_surgery: None = each dense method's default; templates: prompts (default the 85).
    """

    name = "imagenet_seg"

    def __init__(self, root: Any = None, dataset: str | None = None, methods: Sequence[str] | str | None = None,
                 labels: Sequence[str] | str | Path | None = None, size: int | Sequence[int] | None = None,
                 at_original_size: bool = False, feature_surgery: bool | None = None,
                 templates: Sequence[str] | None = None, **unused: Any):
        check_unused(self.name, unused)
        if dataset not in (None, "imagenet_seg", "imagenet-seg"):
            raise ValueError(f"The imagenet_seg task reads {FILE_NAME}; dataset must be 'imagenet_seg', not {dataset!r}.")
        if root is None:
            raise DatasetLayoutError(f"imagenet_seg: no file given; pass root= (--root PATH to {FILE_NAME})")
        self.file = ImageNetSegFile(root)
        self.methods = _methods(methods)
        self.labels = _labels(labels)
        self.size, self.at_original_size, self.feature_surgery = size, bool(at_original_size), feature_surgery
        self.templates = list(templates) if templates is not None else None
        self._count: int | None = None
        self._explainer = None

    def check(self) -> None:
        self._count = self.file.check()

    def items(self) -> list[str]:
        if self._count is None:
            self.check()
        width = len(str(self._count - 1))
        return [f"{i:0{width}d}" for i in range(self._count)]

    def prepare(self, model: Any) -> None:
        self._explainer = explainer_for(model)
        if DECOMPOSITION in self.methods:
            vision_tower(self._explainer)  # a ResNet is refused here, with the reason, not on every item
        self._input_size = native_size(self._explainer, self.size)
        self._features = self._explainer.label_features(self.labels, self.templates or TEMPLATES)  # [T, D]

    def run_item(self, item_id: str) -> dict[str, dict[str, np.ndarray]]:
        if self._explainer is None:
            raise RuntimeError("Call prepare(model) before run_item().")
        index = int(item_id)
        rgb, mask = self.file.image(index), self.file.mask(index)
        if mask.shape != rgb.shape[:2]:
            raise SkipItem(f"image {index} is {rgb.shape[1]}x{rgb.shape[0]} but its mask is "
                           f"{mask.shape[1]}x{mask.shape[0]}")
        loaded = self._explainer.model
        pixels = preprocess(rgb, self._input_size, loaded.mean, loaded.std, loaded.patch_size).to(loaded.device)
        hw = tuple(pixels.shape[-2:])
        if not self.at_original_size:
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(hw[::-1], Image.NEAREST)) > 0
        out_size = mask.shape
        maps = self._maps(rgb, pixels, out_size)
        out = {}
        for method, score_map in maps.items():
            predicted = score_map > score_map.mean()  # the map thresholded at its own mean
            confusion = np.bincount(mask.ravel().astype(np.int64) * 2 + predicted.ravel(), minlength=4)
            ap = average_precision(score_map, mask.astype(np.int64))
            out[method] = {"confusion": confusion.astype(np.int64), "ap": np.float64(np.nan if ap is None else ap)}
        return out

    def _maps(self, rgb: np.ndarray, pixels: torch.Tensor, out_size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Each method's float32 [h, w] map in [0, 1] of the predicted label."""
        explainer, loaded = self._explainer, self._explainer.model
        with explainer.model_lock, torch.no_grad():
            embedding = F.normalize(loaded.model.encode_image(pixels).float().cpu(), dim=-1)
        label = int((embedding @ self._features.T).argmax())  # the model's own zero-shot prediction
        maps = {}
        if DECOMPOSITION in self.methods:
            with explainer.model_lock:
                terms = decompose(loaded, pixels, spatial=True)
            grid_map = spatial_maps(terms, self._features)[:, label:label + 1]  # [1, 1, gh, gw]
            maps[DECOMPOSITION] = F.interpolate(grid_map.float().cpu(), size=out_size, mode="bilinear",
                                                align_corners=False)[0, 0].numpy()
        dense = [m for m in self.methods if m != DECOMPOSITION]
        if dense:
            tokens, grid = explainer.method_tokens(rgb, self._input_size, dense)
            for method in dense:
                on = method == "clip_surgery" if self.feature_surgery is None else self.feature_surgery
                scores = feature_surgery(F.normalize(tokens[method], dim=-1), self._features,
                                         mode="labels" if on else "none")[:, 1:, label:label + 1]  # [1, N, 1]
                maps[method] = similarity_maps(scores, grid, out_size)[0, 0].numpy()
        return {m: maps[m] for m in self.methods}

    def merge(self, stats: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict]:
        out = {}
        for method in self.methods:
            confusion = np.sum([s[method]["confusion"] for s in stats], axis=0).reshape(2, 2)
            scores = segmentation_scores(confusion)
            aps = np.asarray([float(s[method]["ap"]) for s in stats])
            scored = aps[~np.isnan(aps)]
            out[method] = {"pixel_accuracy": scores["pixel_accuracy"], "miou": scores["miou"],
                           "per_class_iou": scores["per_class_iou"], "map": float(scored.mean()) if scored.size
                           else None, "images": len(stats), "images_with_ap": int(scored.size)}
        return out

    def settings(self) -> dict:
        size = list(self.size) if isinstance(self.size, (tuple, list)) else self.size
        return {"task": self.name, "root": str(self.file.path.resolve()), "methods": self.methods,
                "labels": self.labels, "size": size, "at_original_size": self.at_original_size,
                "feature_surgery": self.feature_surgery, "templates": self.templates}

    def extras(self) -> dict:
        return {"class_names": ["background", "foreground"]}

    def published(self) -> dict:
        """Gandelsman et al.'s ImageNet-segmentation numbers for the decomposition (ViT-H-14, percent)."""
        source = "text-decomposition paper, ViT-H-14"
        numbers = {"pixel_accuracy": 75.21, "miou": 54.50, "map": 81.61}
        return {DECOMPOSITION: {k: [{"value": v, "source": source}] for k, v in numbers.items()}} \
            if DECOMPOSITION in self.methods else {}

    def item_iou(self, stats: dict, method: str) -> float | None:
        """One image's foreground/background mIoU (for best/worst image views)."""
        return segmentation_scores(np.asarray(stats[method]["confusion"]).reshape(2, 2))["miou"]


def _methods(methods: Sequence[str] | str | None) -> list[str]:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(methods) if methods is not None else [DECOMPOSITION, "clip_surgery"]
    names = [m if m == DECOMPOSITION else method_names([m], [])[0] for m in methods]
    if not names:
        raise ValueError("No method given: pass e.g. methods=['decomposition', 'clip_surgery'].")
    return list(dict.fromkeys(names))


def _labels(labels: Sequence[str] | str | Path | None) -> list[str]:
    if labels is None:
        return imagenet_class_names()
    if isinstance(labels, (str, Path)):
        path = Path(labels).expanduser()
        if not path.is_file():
            raise ValueError(f"labels={str(labels)!r} is not a file: pass a text file with one label per line, "
                             f"a list of labels, or nothing for the 1000 ImageNet classes.")
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = [str(label) for label in labels]
    if len(labels) < 2:
        raise ValueError("imagenet_seg needs at least 2 candidate labels (the prediction picks one of them).")
    return labels
