"""The attention each dense method uses, read one query at a time (docs/algorithms.md#dense-methods).

Beside CLIP's q-k and CLIP Surgery's v-v (docs/algorithms.md#q-k-versus-v-v-attention), every dense
method replaces the attention of its changed blocks. This module asks
:func:`~.towers.dense_attention.method_attention` (the one home of those formulas) for the weights
of each method at the LAST block, and hands out one query's row of them as a map over the patch grid:

    kind       method (parameters)          weights A [H, T, T] (rows = queries, s = d^-0.5)
    qk         raw                          softmax(s q k^T)
    vv         clip_surgery                 softmax(s v v^T)
    qq         clearclip (attention="qq")   softmax(s q q^T)
    kk         naclip (gaussian_std=0)      softmax(s k k^T)
    qq+kk      sclip                        (softmax(s q q^T) + softmax(s k k^T)) / 2   (see below)
    kk+gauss   naclip                       softmax(s k k^T + Omega), Omega a Gaussian over the grid
    gem        gem                          (A_q + A_k + A_v) / 3, GEM's self-self attention

SCLIP adds two softmax rows, so its rows sum to 2. Here they are divided by 2 (``KIND_SCALES``), so
that every kind is a distribution over the 1 + N tokens and maps, statistics and entropies compare
like for like; ``KindRow.scale`` records the factor. Each method reads its block's input from the
ordinary stream with its own positional-table resize, exactly as ``method_attention`` does.
ViT image towers only (a ResNet has q-k and v-v only: use :class:`.attention.AttentionCapture`).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .attention import (ALL_QUERIES, KINDS, STAT_NAMES, AttentionInputError, AttentionRows, Query, check_head,
                        check_metric, check_query, check_radius, neighbourhood, patch_grid, row_stats, select_head)
from .images import preprocess
from .towers.dense_attention import method_attention

METHOD_KINDS = ("qk", "vv", "qq", "kk", "qq+kk", "kk+gauss", "gem")  # every kind, in display order
# The dense method (and parameters) whose attention each kind is.
KIND_METHODS: Mapping[str, tuple[str, Mapping[str, Any]]] = MappingProxyType({
    "qk": ("raw", {}),
    "vv": ("clip_surgery", {}),
    "qq": ("clearclip", {"attention": "qq"}),
    "kk": ("naclip", {"gaussian_std": 0.0}),
    "qq+kk": ("sclip", {}),
    "kk+gauss": ("naclip", {}),
    "gem": ("gem", {}),
})
KIND_SCALES: Mapping[str, float] = MappingProxyType({"qq+kk": 2.0})  # the method's rows are divided by this


@dataclass(frozen=True)
class KindRow:
    """One query's attention row of one kind, at one block and head.

    patches: float32 [gh, gw] attention paid to each patch (grid row-major).
    global_token: attention paid to the global token; patches.sum() + global_token == 1.
    kind: a kind in METHOD_KINDS; method: the dense method using it ("raw", "sclip", ...).
    layer: 0-based block index. query: (row, col) or "global". head: the head, or None for the mean
    of the per-head rows. grid: (gh, gw). scale: the method's row was divided by this (2 for "qq+kk").
    """

    patches: np.ndarray
    global_token: float
    kind: str
    method: str
    layer: int
    query: Query
    head: int | None
    grid: tuple[int, int]
    scale: float = 1.0

    def normalised(self) -> np.ndarray:
        """float32 [gh, gw]: ``patches`` divided by its largest value (for display)."""
        peak = float(self.patches.max())
        return self.patches / peak if peak > 0 else np.zeros_like(self.patches)

    @classmethod
    def from_rows(cls, rows: AttentionRows, kind: str) -> "KindRow":
        """The "qk" or "vv" row of a capture's :class:`AttentionRows` (any layer) as a KindRow."""
        patches, global_token = rows.kind(kind)
        return cls(patches=patches, global_token=float(global_token), kind=kind, method=KIND_METHODS[kind][0],
                   layer=rows.layer, query=rows.query, head=rows.head, grid=rows.grid)


@dataclass(frozen=True, eq=False)
class KindAttention:
    """The attention one kind uses at one block, for ONE image (from one ``method_attention`` call).

    weights: float32 CPU [H, T, T], T = 1 + gh*gw, rows = queries, divided by ``scale``, so each row
        sums to 1. grid: (gh, gw). kind, method, params (resolved), layer (0-based block), scale.
    Memory: H * T^2 * 4 bytes (2 MB for ViT-B/16 at 224, 30 MB at 448).
    """

    weights: torch.Tensor
    grid: tuple[int, int]
    kind: str
    method: str
    params: Mapping[str, Any]
    layer: int
    scale: float = 1.0

    @property
    def num_heads(self) -> int:
        return int(self.weights.shape[0])

    def rows(self, query: Query, head: int | None = None) -> KindRow:
        """The row of ``query`` ((row, col) or "global") for ``head`` (None: mean of the heads' rows)."""
        head = check_head(head, self.num_heads)
        query, token = check_query(query, self.grid)
        row = select_head(self.weights[:, token], head)  # [T]
        return KindRow(patches=patch_grid(row, self.grid), global_token=float(row[0]), kind=self.kind,
                       method=self.method, layer=self.layer, query=query, head=head, grid=self.grid,
                       scale=self.scale)

    def stats(self, query: Query = ALL_QUERIES, head: int | None = None, radius: float = 1,
              metric: str = "chebyshev") -> dict[str, float]:
        """{stat: value} for the names in STAT_NAMES, as :meth:`.attention.AttentionCapture.stats` defines
        them ("self", "local" within ``radius`` cells, "entropy" in nats, "global"), of one query's row or,
        for query="all", the mean over the N patch queries."""
        head, radius, metric = check_head(head, self.num_heads), check_radius(radius), check_metric(metric)
        matrix = self.weights
        if isinstance(query, str) and query == ALL_QUERIES:
            queries = torch.arange(1, matrix.shape[-1])
        else:
            queries = torch.tensor([check_query(query, self.grid)[1]])
        rows = select_head(matrix[:, queries], head)  # [Q, T]
        values = row_stats(rows, queries, neighbourhood(self.grid, radius, metric))
        return {name: values[name] for name in STAT_NAMES}


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple of distinct kinds from METHOD_KINDS (at least one), or a clear error."""
    values = (kinds,) if isinstance(kinds, str) else tuple(kinds) if isinstance(kinds, (tuple, list)) else None
    if not values or any(not isinstance(k, str) or k not in METHOD_KINDS for k in values) \
            or len(set(values)) != len(values):
        raise AttentionInputError(f"kinds={kinds!r} is not valid: give one or more distinct kinds from "
                                  f"{', '.join(map(repr, METHOD_KINDS))}.")
    return values


def kind_attention(model: Any, pixels: torch.Tensor, kind: str, precision: str | None = None) -> KindAttention:
    """The attention of ``kind`` at the last block of the image tower (one ``method_attention`` call).

    model: a LoadedModel or open_clip CLIP with a ViT image tower (never modified).
    pixels: [1, 3, H, W] preprocessed, H and W multiples of the patch size.
    """
    (kind,) = check_kinds((kind,))
    if isinstance(pixels, torch.Tensor) and pixels.ndim == 4 and pixels.shape[0] != 1:
        raise AttentionInputError(f"kind_attention takes one image at a time (got a batch of {pixels.shape[0]}); "
                                  f"pass pixels[i:i + 1] for each image.")
    method, params = KIND_METHODS[kind]
    result = method_attention(model, pixels, method, precision=precision, **params)  # the last block
    scale = KIND_SCALES.get(kind, 1.0)
    weights = result.weights[0].cpu()
    return KindAttention(weights=weights / scale if scale != 1.0 else weights, grid=result.grid, kind=kind,
                         method=method, params=result.params, layer=result.layer, scale=scale)


def image_kind_attention(model: Any, rgb: np.ndarray, size: int | tuple[int, int], kind: str,
                         precision: str | None = None) -> KindAttention:
    """:func:`kind_attention` of RGB uint8 [H, W, 3] resized to ``size`` (S or (S_h, S_w)); model: a LoadedModel."""
    pixels = preprocess(rgb, size, model.mean, model.std, model.patch_size).to(model.device)
    return kind_attention(model, pixels, kind, precision)


def method_rows(model: Any, pixels: torch.Tensor, query: Query, kinds: Sequence[str] = METHOD_KINDS,
                head: int | None = None) -> dict[str, KindRow]:
    """One-shot {kind: KindRow} of ``query`` at the last block for each of ``kinds`` (one forward pass each)."""
    return {kind: kind_attention(model, pixels, kind).rows(query, head) for kind in check_kinds(kinds)}


def is_capture_kind(kind: str) -> bool:
    """True for "qk" and "vv": an :class:`.attention.AttentionCapture` has them at every layer."""
    return kind in KINDS


__all__ = ["METHOD_KINDS", "KIND_METHODS", "KIND_SCALES", "KindRow", "KindAttention", "check_kinds",
           "kind_attention", "image_kind_attention", "method_rows", "is_capture_kind"]
