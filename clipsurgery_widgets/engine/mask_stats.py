"""Attention mass inside versus outside an object's mask (docs/algorithms.md#q-k-versus-v-v-attention).

"Mass on the query itself" and "mass within a radius" reward any row that peaks on its own token,
which v-v attention does by construction, even with random weights. The paper's claim is about
meaning: a patch of an object attends to *other patches of that object*. This module measures
that against a hand-drawn mask, leaving out each query's own neighbourhood (so the trivial
self-peak cannot count) and comparing with what a uniform row would give (the chance level).

For each patch query i: candidates K_i = the patches farther than ``exclude_radius`` cells from i;
share_i = sum_{j in K_i, j in mask} A_ij / sum_{j in K_i} A_ij (the global token is left out);
chance_i = |K_i in mask| / |K_i|. The result averages share and chance over the queries inside
the mask and over those outside it. Semantic consistency shows as inside >> outside; a row that
ignores content gives share close to chance for both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .attention import KINDS, neighbourhood

MASK_STAT_NAMES = ("inside", "outside", "chance_inside", "chance_outside")


@dataclass(frozen=True)
class MaskShare:
    """Share of each query's far attention (beyond ``exclude_radius``) that lands inside the mask.

    inside:         mean share over the queries inside the mask.
    outside:        mean share over the queries outside the mask.
    chance_inside, chance_outside: the same means for a uniform row (fraction of candidate
        patches inside the mask): what attention that ignores the image would give.
    queries_inside, queries_outside: how many queries each mean is over.
    """

    inside: float
    outside: float
    chance_inside: float
    chance_outside: float
    queries_inside: int
    queries_outside: int

    @property
    def contrast(self) -> float:
        """inside - outside: how much more of their attention object patches keep on the object."""
        return self.inside - self.outside

    @property
    def chance_contrast(self) -> float:
        """The contrast a uniform row would give (slightly negative: each query's own cells are left out)."""
        return self.chance_inside - self.chance_outside


def grid_mask(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """bool [gh, gw]: the cells of the patch grid that are at least half inside a pixel mask.

    mask: [H, W] bool, or numbers (non-zero = inside, e.g. a 0/255 PNG), any size; the grid splits
    it into gh x gw equal cells (the whole image is resized to the model's input, so cells
    cover the image exactly).
    """
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., 0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"mask must be a 2-D [H, W] array (non-zero = inside), got shape {array.shape}.")
    gh, gw = (int(g) for g in grid)
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be two positive integers (gh, gw), got {grid!r}.")
    inside = (array != 0).astype(np.float64)
    height, width = inside.shape
    # Fraction of each cell's area inside the mask: sum over the pixels each cell covers.
    rows = np.minimum((np.arange(height) * gh) // height, gh - 1)
    cols = np.minimum((np.arange(width) * gw) // width, gw - 1)
    totals = np.zeros((gh, gw))
    counts = np.zeros((gh, gw))
    np.add.at(totals, (rows[:, None], cols[None, :]), inside)
    np.add.at(counts, (rows[:, None], cols[None, :]), 1.0)
    if (counts == 0).any():
        raise ValueError(f"mask of {height}x{width} pixels is smaller than the {gh}x{gw} grid; use a "
                         f"mask at the image's size.")
    return totals / counts >= 0.5


def mask_attention_share(weights: torch.Tensor | np.ndarray, cells: np.ndarray, exclude_radius: float = 1,
                         metric: str = "chebyshev") -> MaskShare:
    """Inside/outside shares of one attention matrix against a mask on the patch grid.

    Args:
        weights: [1+N, 1+N] attention rows (rows = queries; token 0 the global token, then the
            patches row-major), e.g. one of :meth:`AttentionCapture.matrices`.
        cells: bool [gh, gw] mask on the patch grid (see :func:`grid_mask`); N == gh * gw.
        exclude_radius: cells within this distance of the query (itself included) are left out.
        metric: "chebyshev" or "euclidean" distance in cells.

    Returns:
        MaskShare. Raises ValueError when the mask is empty or covers every cell.
    """
    cells = np.asarray(cells, dtype=bool)
    if cells.ndim != 2:
        raise ValueError(f"cells must be a bool [gh, gw] grid mask, got shape {cells.shape}.")
    grid = cells.shape
    count = grid[0] * grid[1]
    matrix = torch.as_tensor(np.asarray(weights) if not isinstance(weights, torch.Tensor) else weights).double()
    if matrix.shape != (1 + count, 1 + count):
        raise ValueError(f"weights must be [1+N, 1+N] = [{1 + count}, {1 + count}] for a {grid[0]}x{grid[1]} "
                         f"mask, got {tuple(matrix.shape)}.")
    inside = torch.from_numpy(cells.reshape(-1))
    if not inside.any() or inside.all():
        raise ValueError("the mask must cover some cells of the patch grid but not all of them; draw the "
                         "object's outline (a mask at the image's size) and pass it through grid_mask.")
    far = ~neighbourhood(grid, exclude_radius, metric)  # [N, N] candidates of each query
    rows = matrix[1:, 1:] * far  # patch queries, patch keys, near keys zeroed
    total = rows.sum(-1)
    share = (rows * inside).sum(-1) / total.clamp_min(1e-300)
    chance = (far & inside).sum(-1).double() / far.sum(-1).clamp_min(1).double()
    usable = (far.sum(-1) > 0) & (total > 0)  # a query with no candidate says nothing
    pick_in, pick_out = usable & inside, usable & ~inside
    if not pick_in.any() or not pick_out.any():
        raise ValueError(f"exclude_radius={exclude_radius} leaves no candidate patch for the queries on one side "
                         f"of the mask; use a smaller radius.")
    return MaskShare(inside=float(share[pick_in].mean()), outside=float(share[pick_out].mean()),
                     chance_inside=float(chance[pick_in].mean()), chance_outside=float(chance[pick_out].mean()),
                     queries_inside=int(pick_in.sum()), queries_outside=int(pick_out.sum()))


def mask_share_by_layer(capture: Any, cells: np.ndarray, exclude_radius: float = 1, head: int | None = None,
                        layers: Sequence[int] | None = None) -> dict[str, list[MaskShare]]:
    """:func:`mask_attention_share` of the q-k and v-v matrices of an AttentionCapture, per layer.

    Returns {"qk": [MaskShare per layer], "vv": [...]} for ``layers`` (default every layer).
    """
    cells = np.asarray(cells, dtype=bool)
    if tuple(cells.shape) != tuple(capture.grid):
        raise ValueError(f"the mask grid {tuple(cells.shape)} differs from the capture's patch grid "
                         f"{tuple(capture.grid)}; make it with grid_mask(mask, capture.grid).")
    picked = range(capture.num_layers) if layers is None else [capture.check_layer(l) for l in layers]
    out: dict[str, list[MaskShare]] = {kind: [] for kind in KINDS}
    for layer in picked:
        for kind, matrix in zip(KINDS, capture.matrices(layer, head)):
            out[kind].append(mask_attention_share(matrix, cells, exclude_radius))
    return out


def map_inside_outside(heat: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean of a map inside a mask, mean outside): the two terms of CLIP Surgery's mSC.

    heat: float [H, W] map (e.g. ``Explanation.map_for(label)``, in [0, 1]); mask: [H, W], non-zero
    = inside, at the map's size. A map that follows the object gives inside > outside; an
    "opposite" map (the background lit up) gives inside < outside.
    """
    heat = np.asarray(heat, dtype=np.float64)
    inside = np.asarray(mask)
    if inside.ndim == 3:
        inside = inside[..., 0]
    inside = inside != 0
    if heat.ndim != 2 or heat.shape != inside.shape:
        raise ValueError(f"heat {heat.shape} and mask {inside.shape} must be 2-D arrays of the same [H, W] size; "
                         f"resize the mask to the image the map was made for.")
    if not inside.any() or inside.all():
        raise ValueError("the mask must cover part of the image, not none or all of it.")
    return float(heat[inside].mean()), float(heat[~inside].mean())
