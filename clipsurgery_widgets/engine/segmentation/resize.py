"""Image -> pixels for segmentation: keep-ratio resize to a short side, then mean/std.

The rule is the one of the SCLIP/NACLIP test pipelines (mmseg ``Resize(scale=(2048, S),
keep_ratio=True)``), so window layouts and scores line up with theirs
(docs/algorithms.md#segmentation-inference).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

LONG_SIDE_LIMIT = 2048  # mmseg's long-side cap in scale=(2048, S)


def keep_ratio_size(height: int, width: int, short_side: int,
                    long_side: int = LONG_SIDE_LIMIT) -> tuple[int, int]:
    """(new height, new width) of an image resized to ``short_side`` with its aspect ratio kept.

    r = min(long_side / long, short_side / short); each side becomes int(side * r + 0.5), i.e.
    rounded half up. E.g. 375x500 (h x w) at 336 -> 336x448.
    """
    ratio = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * ratio + 0.5), int(width * ratio + 0.5)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an RGB uint8 image [h, w, 3] to ``size`` (h', w'), without antialiasing.

    Half-pixel-centre sampling (cv2 INTER_LINEAR / torch align_corners=False, edges clamped),
    computed in float32 and rounded to the nearest uint8 (ties to even). cv2's fixed-point
    arithmetic can differ from this by one grey level on a few pixels.
    """
    if tuple(size) == rgb.shape[:2]:
        return rgb
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False, antialias=False)
    return resized[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def normalise_rgb(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB uint8 [h, w, 3] -> float32 pixels [1, 3, h, w] = (x / 255 - mean) / std."""
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    mean_t = torch.tensor(tuple(mean), dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(tuple(std), dtype=torch.float32)[:, None, None]
    return ((pixels - mean_t) / std_t)[None]


def prepare_rgb(rgb: np.ndarray, short_side: int | None, mean: Sequence[float],
                std: Sequence[float]) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> pixels [1, 3, h, w]: keep-ratio resize (if ``short_side``), then mean/std."""
    if short_side is not None:
        rgb = resize_rgb(rgb, keep_ratio_size(rgb.shape[0], rgb.shape[1], short_side))
    return normalise_rgb(rgb, mean, std)
