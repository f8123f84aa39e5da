"""Positional tables for other patch grids, in the three ways the dense methods' authors resize them
(docs/algorithms.md#positional-embeddings), and the ViT embedding that uses them.

    "bilinear"        the toolkit's own choice (the CLIP Surgery path): size-based, align_corners=False.
    "bicubic-offset"  SCLIP / NACLIP / ClearCLIP code: bicubic at the FIXED scale factors
                      ((gh + 0.1) / g0h, (gw + 0.1) / g0w), recompute_scale_factor=False.
    "bicubic-aa"      GEM code: size-based bicubic with antialias=True.

At the model's own grid every mode returns the table itself. The model's table is never written.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import check_pixels, resized_pos_embed

POS_RESIZE_MODES = ("bilinear", "bicubic-offset", "bicubic-aa")
# The offset SCLIP's, NACLIP's and ClearCLIP's code add to the target size before taking the ratio.
SCALE_OFFSET = 0.1


def pos_table(table: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int], mode: str) -> torch.Tensor:
    """The positional table for ``new_grid``, as a new tensor (the input is only read).

    table: [1 + g0h*g0w, C], class position first, then the grid row-major; grid: (g0h, g0w) the
    table was trained for; new_grid: (gh, gw). Returns [1 + gh*gw, C]; row 0 is never changed.
    """
    if mode not in POS_RESIZE_MODES:
        raise ValueError(f"pos_resize={mode!r} is not known; choose one of {', '.join(POS_RESIZE_MODES)}.")
    g0h, g0w = grid
    gh, gw = new_grid
    if (gh, gw) == (g0h, g0w):
        return table
    if mode == "bilinear":
        return resized_pos_embed(table, grid, new_grid)
    if table.shape[0] != 1 + g0h * g0w:
        raise ValueError(f"positional table has {table.shape[0]} rows; expected 1 + {g0h}*{g0w}.")
    # Half-precision bicubic is not available on every device: interpolate in float32 (or float64).
    work = table.dtype if table.dtype in (torch.float32, torch.float64) else torch.float32
    cells = table[1:].reshape(1, g0h, g0w, -1).permute(0, 3, 1, 2).to(work)  # [1, C, g0h, g0w]
    if mode == "bicubic-offset":
        factors = ((gh + SCALE_OFFSET) / g0h, (gw + SCALE_OFFSET) / g0w)
        cells = F.interpolate(cells, scale_factor=factors, mode="bicubic", align_corners=False,
                              recompute_scale_factor=False)
    else:
        cells = F.interpolate(cells, size=(gh, gw), mode="bicubic", align_corners=False, antialias=True)
    if tuple(cells.shape[-2:]) != (gh, gw):  # floor(g0 * (g + 0.1) / g0) must give g back
        raise RuntimeError(f"{mode} resize of the {g0h}x{g0w} positional table gave {tuple(cells.shape[-2:])}, "
                           f"not the {gh}x{gw} patch grid.")
    cells = cells.to(table.dtype)[0].flatten(1).transpose(0, 1)  # [gh*gw, C]
    return torch.cat([table[:1], cells], dim=0)


def table_key(mode: str, grid: tuple[int, int], native: tuple[int, int]) -> str:
    """Methods whose keys are equal share one embedding: at the native grid all modes coincide."""
    return "native" if tuple(grid) == tuple(native) else mode


def patch_grid(visual: nn.Module, pixels: torch.Tensor) -> tuple[int, int]:
    """(gh, gw) of pixels [B, 3, H, W] for this ViT, after checking H and W fit its patch size."""
    ph, pw = tuple(visual.patch_size)
    check_pixels(pixels, (ph, pw), visual.conv1.weight)
    return pixels.shape[-2] // ph, pixels.shape[-1] // pw


@torch.no_grad()
def dense_embed(visual: nn.Module, pixels: torch.Tensor, mode: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch embedding + class token + positional table (resized by ``mode``) + ln_pre.

    pixels: [B, 3, H, W] preprocessed, H and W multiples of the patch size.
    Returns (z_0 [B, 1+N, C] entering block 0, grid (gh, gw)).
    """
    pixels = check_pixels(pixels, tuple(visual.patch_size), visual.conv1.weight)
    patches = visual.conv1(pixels)  # [B, C, gh, gw]
    grid = (int(patches.shape[2]), int(patches.shape[3]))
    patches = patches.flatten(2).transpose(1, 2)  # [B, N, C]
    cls = visual.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
    pos = pos_table(visual.positional_embedding, tuple(visual.grid_size), grid, mode)
    # patch_dropout is skipped on purpose: dense maps need every patch (it is a no-op in eval).
    x = torch.cat([cls, patches], dim=1) + pos.to(patches.dtype)
    return visual.ln_pre(x), grid
