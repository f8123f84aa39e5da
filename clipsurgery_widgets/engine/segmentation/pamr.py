"""Pixel-adaptive mask refinement (PAMR; Araslanov & Roth, CVPR 2020), as NACLIP runs it.

Each pixel's maps are replaced, a few times over, by an average of its dilated 8-neighbours,
weighted by how close their colours are to its own relative to the local colour spread. See
docs/algorithms.md#pamr.

Memory: the weights are [B, K, H, W] (K = 8 per dilation, no map channel); the maps are shifted
one neighbour at a time, so no [B, Q, K, H, W] tensor is ever built.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

# The 8 neighbour directions (dy, dx) of a pixel; the dilation scales them.
OFFSETS: tuple[tuple[int, int], ...] = tuple(
    (dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def check_dilations(dilations: Sequence[int]) -> tuple[int, ...]:
    """Validate PAMR dilations: a non-empty sequence of positive integers."""
    if isinstance(dilations, (int, str)) or not isinstance(dilations, Sequence) or len(dilations) == 0:
        raise ValueError(f"pamr_dilations must be a non-empty sequence of positive integers such as (8, 16), "
                         f"not {dilations!r}.")
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dilations):
        raise ValueError(f"pamr_dilations must hold positive integers (pixel distances), not {tuple(dilations)!r}; "
                         f"the authors use (8, 16).")
    return tuple(int(d) for d in dilations)


def pamr(image: torch.Tensor, maps: torch.Tensor, steps: int = 10,
         dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """Refine maps with PAMR.

    Args:
        image: I [B, 3, H, W] (any colour scaling; the weights are scale-free up to a 1e-8).
        maps: M [B, Q, H, W], refined on every channel independently.
        steps: number of refinement passes (0 returns ``maps`` unchanged).
        dilations: neighbour distances D; K = 8 |D| neighbours per pixel.

    Returns:
        float32 [B, Q, H, W]: ``steps`` times M(p) <- sum_n w(p, n) M(n), where
        w(p, .) = softmax over the K neighbours n of
        mean_c -|I_c(p) - I_c(n)| / (1e-8 + 0.1 sigma_c(p)),
        sigma_c(p) the unbiased std of the 9 |D| values I_c(p + d delta), delta in {-1,0,1}^2,
        and neighbours read with replicate padding at the border.
    """
    dilations = check_dilations(dilations)
    if image.dim() != 4 or maps.dim() != 4 or image.shape[0] != maps.shape[0] or image.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"pamr needs image [B, C, H, W] and maps [B, Q, H, W] of one size; got "
                         f"{tuple(image.shape)} and {tuple(maps.shape)}.")
    maps = maps.float()
    if steps <= 0:
        return maps
    weights = affinity(image.float(), dilations)  # [B, K, H, W]
    for _ in range(steps):
        refined = torch.zeros_like(maps)
        for k, neighbour in enumerate(_neighbours(maps, dilations)):
            refined.addcmul_(weights[:, k:k + 1], neighbour)  # in place: no [B, Q, H, W] temporary
        maps = refined
    return maps


def affinity(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """PAMR weights w [B, K, H, W] of image [B, C, H, W]: softmax over the K neighbours."""
    sigma = local_std(image, dilations)  # [B, C, H, W]
    scale = 1e-8 + 0.1 * sigma
    logits = torch.stack([(-(image - neighbour).abs() / scale).mean(dim=1)
                          for neighbour in _neighbours(image, dilations)], dim=1)
    return logits.softmax(dim=1)


def local_std(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """Unbiased std [B, C, H, W] over the 3x3 dilated windows of every dilation together.

    The centre pixel counts once per dilation (9 |D| values per pixel); border-clamped reads.
    """
    count = 9 * len(dilations)
    total = image * len(dilations)
    for neighbour in _neighbours(image, dilations):
        total = total + neighbour
    mean = total / count
    squares = (image - mean).square() * len(dilations)
    for neighbour in _neighbours(image, dilations):
        squares = squares + (neighbour - mean).square()
    return (squares / (count - 1)).sqrt()


def _neighbours(x: torch.Tensor, dilations: Sequence[int]) -> Iterator[torch.Tensor]:
    """x read at p + d * delta for each dilation d and each of the 8 OFFSETS (replicate padding)."""
    height, width = x.shape[-2:]
    for d in dilations:
        padded = F.pad(x, (d, d, d, d), mode="replicate")
        for dy, dx in OFFSETS:
            yield padded[:, :, d + dy * d:d + dy * d + height, d + dx * d:d + dx * d + width]
