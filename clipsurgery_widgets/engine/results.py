"""Result records: small frozen dataclasses of tensors/arrays, with their shapes documented."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .maps import similarity_maps

SEGMENTATION_CHUNK_PIXELS = 1 << 24  # labels upsampled at once in segmentation(): 16 M values = 64 MB


@dataclass(frozen=True)
class ImageTokens:
    """Projected image tokens from one forward pass.

    raw:     [B, 1+N, D] ordinary CLIP tokens after ln_post and proj (token 0 == encode_image).
    surgery: [B, 1+N, D] CLIP Surgery tokens (v-v path for patches, original CLS at token 0).
    grid:    (gh, gw) patch grid; N == gh * gw, row-major.
    Neither is normalised.
    """

    raw: torch.Tensor
    surgery: torch.Tensor
    grid: tuple[int, int]


class MapSet:
    """One method's results for one image, kept at patch resolution.

    patch_scores:  float32 [N, T] feature-surgery scores of the patch tokens (before min-max).
    global_scores: float32 [T] score of the global token (token 0).
    grid:          (gh, gw) patch grid, N == gh * gw (row-major).
    image_size:    (H, W) of the original image.

    Full-size maps are computed when asked for and not stored, so a MapSet holds 4 * T * (N + 1)
    bytes whatever the photo's size: ``maps`` makes all T maps (4 * T * H * W bytes for the result
    only), ``map_at(t)`` one map (4 * H * W bytes), ``values_at(y, x)`` one pixel of every map.
    Each map is min-max normalised to [0, 1] over its patches, then resized bilinearly
    (:func:`clipsurgery_widgets.engine.maps.similarity_maps`).

    ``MapSet(maps, patch_scores, global_scores)`` with ready-made maps [T, H, W] (e.g. drawn for a
    figure test) keeps and returns those maps instead.
    """

    __slots__ = ("patch_scores", "global_scores", "grid", "image_size", "_given_maps")

    def __init__(self, maps: np.ndarray | None = None, patch_scores: np.ndarray | None = None,
                 global_scores: np.ndarray | None = None, *, grid: tuple[int, int] | None = None,
                 image_size: tuple[int, int] | None = None):
        if patch_scores is None or global_scores is None:
            raise ValueError("MapSet needs patch_scores [N, T] and global_scores [T].")
        if maps is None and (grid is None or image_size is None):
            raise ValueError("MapSet without maps needs grid=(gh, gw) and image_size=(H, W) to make them.")
        given = None if maps is None else np.asarray(maps)
        size = tuple(int(s) for s in (image_size if image_size is not None else given.shape[1:]))
        for name, value in (("patch_scores", np.asarray(patch_scores)), ("global_scores", np.asarray(global_scores)),
                            ("grid", None if grid is None else tuple(int(g) for g in grid)),
                            ("image_size", size), ("_given_maps", given)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"MapSet is read-only; {name!r} cannot be set.")

    def __repr__(self) -> str:
        return (f"MapSet(labels={self.num_labels}, grid={self.grid}, image_size={self.image_size}, "
                f"{'given maps' if self._given_maps is not None else 'maps made on access'})")

    @property
    def num_labels(self) -> int:
        return int(self.patch_scores.shape[1])

    @property
    def maps(self) -> np.ndarray:
        """float32 [T, H, W] in [0, 1] at the original image size, made now (4 * T * H * W bytes)."""
        if self._given_maps is not None:
            return self._given_maps
        return self._upsample(slice(None))

    def map_at(self, index: int) -> np.ndarray:
        """float32 [H, W] map of label ``index`` (only that label is resized)."""
        if self._given_maps is not None:
            return self._given_maps[index]
        index = range(self.num_labels)[index]  # IndexError for labels that do not exist; negatives count back
        return self._upsample(slice(index, index + 1))[0]

    def values_at(self, y: int, x: int) -> np.ndarray:
        """float32 [T]: every label's map value at pixel (y, x), equal to ``maps[:, y, x]`` without making the maps."""
        height, width = self.image_size
        if not (0 <= int(y) < height and 0 <= int(x) < width):
            raise ValueError(f"Pixel (y={y}, x={x}) is outside the {height}x{width} image.")
        if self._given_maps is not None:
            return self._given_maps[:, int(y), int(x)]
        gh, gw = self.grid
        normed = _min_max_columns(self.patch_scores.astype(np.float32)).reshape(gh, gw, -1)
        (r0, r1, wr), (c0, c1, wc) = _source(int(y), gh, height), _source(int(x), gw, width)
        top = normed[r0, c0] * (1 - wc) + normed[r0, c1] * wc
        bottom = normed[r1, c0] * (1 - wc) + normed[r1, c1] * wc
        return (top * (1 - wr) + bottom * wr).astype(np.float32)

    def _upsample(self, labels: slice) -> np.ndarray:
        scores = torch.from_numpy(np.ascontiguousarray(self.patch_scores[:, labels]))[None]
        return similarity_maps(scores, self.grid, self.image_size)[0].numpy()


def _min_max_columns(scores: np.ndarray) -> np.ndarray:
    """Per-column min-max to [0, 1] ([N, T]); constant columns become 0, as in similarity_maps."""
    low, high = scores.min(axis=0), scores.max(axis=0)
    spread = high - low
    return np.where(spread > 0, (scores - low) / np.where(spread > 0, spread, 1), 0).astype(np.float32)


def _source(out: int, size_in: int, size_out: int) -> tuple[int, int, float]:
    """Bilinear (align_corners=False) source rows i0, i1 and weight of i1 for output index ``out``, as F.interpolate."""
    position = max((out + 0.5) * size_in / size_out - 0.5, 0.0)
    low = min(int(position), size_in - 1)
    return low, min(low + 1, size_in - 1), position - low


@dataclass(frozen=True)
class Explanation:
    """What :meth:`Explainer.explain` returns for one image and a list of labels.

    labels:       the T labels as given ("a+b" combined targets kept as written).
    image_size:   (H, W) of the original image; maps are at this size.
    grid:         (gh, gw) patch grid of the forward pass.
    input_size:   (S_h, S_w) pixels fed to the model.
    surgery:      MapSet from CLIP Surgery tokens (None when method == "raw").
    raw:          MapSet from raw CLIP tokens with cosine scores (None when method == "surgery").
    probs:        float32 [T] softmax over labels of CLIP's global prediction (100 * cosine).
    redundancy:   the feature-surgery mode actually used by the main method ("labels", "empty" or "none").
    method:       the main method (docs/algorithms.md#dense-methods); ``maps`` are its maps.
    by_method:    MapSet of every method computed in the pass, by name ("raw", "clip_surgery", "sclip", ...).
    timings:      seconds per stage ("image", "text", "surgery", "maps", "total").
    """

    labels: tuple[str, ...]
    image_size: tuple[int, int]
    grid: tuple[int, int]
    input_size: tuple[int, int]
    surgery: MapSet | None
    raw: MapSet | None
    probs: np.ndarray
    redundancy: str
    timings: dict[str, float] = field(default_factory=dict)
    method: str = "clip_surgery"
    by_method: dict[str, MapSet] = field(default_factory=dict)

    def mapset(self, method: str | None = None) -> MapSet:
        """The MapSet of ``method`` (default: the main method); "surgery" means clip_surgery."""
        name = self.method if method is None else {"surgery": "clip_surgery"}.get(method, method)
        chosen = self.by_method.get(name) or {"clip_surgery": self.surgery, "raw": self.raw}.get(name)
        if chosen is None:
            have = ", ".join(self.by_method) or "none"
            raise ValueError(f"This explanation has no {method!r} maps (it has: {have}); explain with "
                             f"method={method!r} or methods=[...] including it.")
        return chosen

    @property
    def maps(self) -> np.ndarray:
        """float32 [T, H, W]: the main method's maps, made on access (see :class:`MapSet`; ``map_for`` makes one)."""
        return self.mapset().maps

    @property
    def patch_scores(self) -> np.ndarray:
        """float32 [N, T] patch scores of the main method."""
        return self.mapset().patch_scores

    def map_for(self, label: str, method: str = "surgery") -> np.ndarray:
        """float32 [H, W] map of one label for any computed method ("surgery" = clip_surgery)."""
        chosen = self.mapset(method)
        if label not in self.labels:
            raise KeyError(f"Label {label!r} is not in this explanation ({', '.join(self.labels)}).")
        return chosen.map_at(self.labels.index(label))

    def segmentation(self, method: str = "surgery") -> np.ndarray:
        """int64 [H, W]: index of the best-scoring label at each pixel.

        Uses the patch scores (not the per-label min-max maps, which are not comparable across
        labels), upsampled bilinearly to the image size a few labels at a time, so that memory stays
        near 64 MB plus 12 bytes per pixel whatever the number of labels.
        """
        chosen = self.mapset(method)
        gh, gw = self.grid
        scores = torch.from_numpy(np.ascontiguousarray(chosen.patch_scores.T)).reshape(1, -1, gh, gw)
        height, width = self.image_size
        step = max(1, SEGMENTATION_CHUNK_PIXELS // (height * width))
        best = best_index = None
        for start in range(0, scores.shape[1], step):
            up = F.interpolate(scores[:, start:start + step], size=self.image_size, mode="bilinear",
                               align_corners=False)[0]
            value, index = up.max(0)
            if best is None:
                best, best_index = value, index + start
            else:
                better = value > best  # ties keep the earlier label, as argmax over all labels does
                best = torch.where(better, value, best)
                best_index = torch.where(better, index + start, best_index)
        return best_index.numpy()
