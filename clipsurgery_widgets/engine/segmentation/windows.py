"""Sliding-window cosine maps: the window grid and the count-averaged accumulation.

Each window is encoded on its own; its patch tokens are compared with the text features and the
cosine map is stretched back over the window. Where windows overlap the cosines are averaged
(not the probabilities). See docs/algorithms.md#segmentation-inference.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

Window = tuple[int, int, int, int]  # (y1, y2, x1, x2), end-exclusive
# pixels [B, 3, h, w] -> an object with .tokens [B, 1 + N, D] and .grid (gh, gw): encode_dense's
# DenseTokens, with the model and method bound
DenseEncoder = Callable[[torch.Tensor], Any]


def window_starts(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of each window along one axis of ``size`` pixels.

    n = max(size - crop + stride - 1, 0) // stride + 1 windows; window i ends at
    min(i * stride + crop, size) and starts ``crop`` before its end (never before 0), so the last
    window is pushed back inside the image instead of being cut short.
    """
    count = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(count):
        end = min(i * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def window_grid(height: int, width: int, crop: int | None, stride: int | None) -> list[Window]:
    """Windows (y1, y2, x1, x2) covering a height x width image, row by row.

    ``crop`` None or 0: one window, the whole image.
    """
    if not crop:
        return [(0, height, 0, width)]
    rows = window_starts(height, crop, stride)
    cols = window_starts(width, crop, stride)
    return [(y1, y2, x1, x2) for y1, y2 in rows for x1, x2 in cols]


def sliding_cosines(encode: DenseEncoder, pixels: torch.Tensor, text_features: torch.Tensor,
                    windows: list[Window], patch_size: int, batch_size: int = 8) -> torch.Tensor:
    """Count-averaged cosine maps of every name over the image.

    Args:
        encode: pixels [B, 3, h', w'] (multiples of the patch size) -> result with ``.tokens``
            [B, 1 + N, D] and ``.grid`` (gh, gw) (encode_dense with model and method bound).
        pixels: normalised image [1, 3, h, w].
        text_features: G [Q, D], rows of unit norm.
        windows: from :func:`window_grid`; together they must cover every pixel.
        patch_size: p; a window side that is not a multiple of p loses its trailing rows/columns
            before encoding (as a stride-p patch convolution would ignore them).
        batch_size: windows of equal size encoded per call (results match one at a time).

    Returns:
        float32 [Q, h, w]: per pixel, the mean over the windows covering it of cos(F, G), where
        each window's [Q, gh, gw] map was resized bilinearly (align_corners=False) to the full
        window size.
    """
    height, width = pixels.shape[-2:]
    queries = text_features.float()
    total = torch.zeros(queries.shape[0], height, width, dtype=torch.float32, device=pixels.device)
    count = torch.zeros(1, height, width, dtype=torch.float32, device=pixels.device)
    for group in _batches(windows, patch_size, batch_size):
        crops = torch.cat([_patch_crop(pixels, window, patch_size) for window in group])
        for window, cosines in zip(group, _window_cosines(encode, crops, queries)):
            y1, y2, x1, x2 = window
            # channels-last: the CPU kernel then vectorises over the Q names (about 10x faster here)
            stretched = F.interpolate(cosines[None].contiguous(memory_format=torch.channels_last),
                                      size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
            total[:, y1:y2, x1:x2] += stretched
            count[:, y1:y2, x1:x2] += 1
    if bool((count == 0).any()):
        raise ValueError("Some pixels are covered by no window; use a stride no larger than the crop.")
    return total / count


def _patch_crop(pixels: torch.Tensor, window: Window, patch_size: int) -> torch.Tensor:
    """The window's pixels without the trailing rows/columns beyond the last whole patch."""
    y1, y2, x1, x2 = window
    h = (y2 - y1) // patch_size * patch_size
    w = (x2 - x1) // patch_size * patch_size
    return pixels[:, :, y1:y1 + h, x1:x1 + w]


def _window_cosines(encode: DenseEncoder, crops: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """[B, 3, h', w'] -> cosine maps [B, Q, gh, gw] of the L2-normalised patch tokens with G."""
    dense = encode(crops)
    tokens, (gh, gw) = dense.tokens, dense.grid
    patches = F.normalize(tokens[:, 1:].float(), dim=-1)  # [B, N, D]
    if patches.shape[1] != gh * gw:
        raise RuntimeError(f"The dense encoder returned {patches.shape[1]} patch tokens for a {gh}x{gw} grid.")
    if patches.shape[-1] != queries.shape[-1]:
        raise ValueError(f"text_features have {queries.shape[-1]} dimensions but the image tokens have "
                         f"{patches.shape[-1]}; compute them with this model (class_features(model, ...)).")
    cosines = patches @ queries.to(patches.device).T  # [B, N, Q]
    return cosines.transpose(1, 2).reshape(cosines.shape[0], queries.shape[0], gh, gw)


def _batches(windows: list[Window], patch_size: int, batch_size: int) -> list[list[Window]]:
    """Consecutive groups of at most ``batch_size`` windows whose encoded crops share one size."""
    groups: list[list[Window]] = []
    last_shape = None
    for window in windows:
        y1, y2, x1, x2 = window
        shape = ((y2 - y1) // patch_size, (x2 - x1) // patch_size)
        if groups and shape == last_shape and len(groups[-1]) < batch_size:
            groups[-1].append(window)
        else:
            groups.append([window])
        last_shape = shape
    return groups
