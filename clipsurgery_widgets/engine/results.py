"""Result records: small frozen dataclasses of tensors/arrays, with their shapes documented."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


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


@dataclass(frozen=True)
class MapSet:
    """One method's results for one image.

    maps:         float32 [T, H, W] in [0, 1] at the original image size.
    patch_scores: float32 [N, T] feature-surgery scores of the patch tokens (before min-max).
    global_scores: float32 [T] score of the global token (token 0).
    """

    maps: np.ndarray
    patch_scores: np.ndarray
    global_scores: np.ndarray


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
        """float32 [T, H, W]: the main method's maps."""
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
        return chosen.maps[self.labels.index(label)]

    def segmentation(self, method: str = "surgery") -> np.ndarray:
        """int64 [H, W]: index of the best-scoring label at each pixel.

        Uses the patch scores (not the per-label min-max maps, which are not comparable across
        labels), upsampled bilinearly to the image size.
        """
        chosen = self.mapset(method)
        gh, gw = self.grid
        scores = torch.from_numpy(np.ascontiguousarray(chosen.patch_scores.T)).reshape(1, -1, gh, gw)
        up = F.interpolate(scores, size=self.image_size, mode="bilinear", align_corners=False)[0]
        return up.argmax(0).numpy()
