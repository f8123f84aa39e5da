"""q-k versus v-v attention of the image tower, layer by layer (docs/algorithms.md#q-k-versus-v-v-attention).

One forward pass per image and size is captured (:func:`capture_attention`): for every ViT block
the q, k, v of its attention, from ln_1 of the ORIGINAL residual stream entering it (a ModifiedResNet:
its attention pool's). Then any (layer, query, head) row over the 1+N tokens (token 0 global, then the
patch grid row-major) is cheap: q-k softmax(s q_i k^T), v-v softmax(s v_i v^T), s = d^-0.5; "mean over
heads" is the mean of the per-head rows. Queries are a grid cell (row, col) or "global".
:meth:`AttentionCapture.stats` summarises rows per layer (one query or all patch queries): mass on the
query itself, entropy (nats), mass within a radius of the query cell (Chebyshev by default: radius 1 =
the 3x3 block) and mass on the global token.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import torch

from .errors import ClipSurgeryError
from .images import preprocess
from .precision import computing_in
from .towers.encode import attnpool_qkv, image_tower, resnet_tokens, tower_for, vit_stream
from .towers.ops import attention_weights, split_heads_qkv

Query = Union[tuple[int, int], str]
GLOBAL = "global"
ALL_QUERIES = "all"
KINDS = ("qk", "vv")  # the attention kinds a capture gives (any layer); views and figures loop over this tuple
# Display names of every attention kind: KINDS, then the dense methods' kinds of engine/method_rows.py.
KIND_LABELS = {"qk": "q-k", "vv": "v-v", "qq": "q-q", "kk": "k-k", "qq+kk": "q-q + k-k", "kk+gauss": "k-k + Gaussian",
               "gem": "GEM self-self"}
STAT_NAMES = ("self", "local", "entropy", "global")
STAT_TITLES = {
    "self": "mass on the query itself",
    "local": "mass within the radius",
    "entropy": "entropy (nats)",
    "global": "mass on the global token",
}
METRICS = ("chebyshev", "euclidean")


class AttentionInputError(ClipSurgeryError, ValueError):
    """A layer, query, head or statistics option that the captured attention does not have."""


@dataclass(frozen=True)
class AttentionRows:
    """One query's q-k and v-v attention rows at one layer and head.

    qk, vv:               float32 [gh, gw] attention paid to each patch (grid row-major).
    qk_global, vv_global: attention paid to the global token (token 0).
    Each row sums to 1 over the global token and the patches: qk.sum() + qk_global == 1.
    layer: block index (0-based; 0 for a ResNet's attention pool). query: (row, col) or "global".
    head: the head shown, or None for the mean of the per-head rows. grid: (gh, gw).
    """

    qk: np.ndarray
    vv: np.ndarray
    qk_global: float
    vv_global: float
    layer: int
    query: Query
    head: int | None
    grid: tuple[int, int]

    def kind(self, kind: str) -> tuple[np.ndarray, float]:
        """(grid map [gh, gw], global-token value) of a kind in KINDS ("qk" or "vv")."""
        return getattr(self, _check_kind(kind)), getattr(self, f"{kind}_global")

    def normalised(self, kind: str) -> np.ndarray:
        """float32 [gh, gw]: the grid map of "qk" or "vv" divided by its largest patch value (for display)."""
        grid_map = self.kind(kind)[0]
        peak = float(grid_map.max())
        return grid_map / peak if peak > 0 else np.zeros_like(grid_map)


@dataclass(frozen=True)
class AttentionStats:
    """Summary statistics of q-k and v-v rows across layers.

    qk, vv: {stat name: float64 [L]} for the names in STAT_NAMES ("self", "local", "entropy",
        "global"), one value per layer in ``layers``. "local" is NaN for the global query (it has
        no grid cell).
    layers: the layer indices. query: the query, or "all" (mean over the N patch queries).
    head: the head, or None (statistics of the mean-over-heads row).
    radius, metric: the neighbourhood of "local" ("chebyshev" or "euclidean" distance in cells,
        the query cell included). max_entropy: log(1+N), the entropy of a uniform row.
    """

    qk: dict[str, np.ndarray]
    vv: dict[str, np.ndarray]
    layers: tuple[int, ...]
    query: Query
    head: int | None
    radius: float
    metric: str
    max_entropy: float

    def kind(self, kind: str) -> dict[str, np.ndarray]:
        """{stat name: [L]} of a kind in KINDS."""
        return getattr(self, _check_kind(kind))


@dataclass(frozen=True)
class AttentionCapture:
    """q, k, v of every attention layer for ONE image, from one forward pass.

    q, k, v: L tuples of float32 CPU tensors [H, T, d] (T = 1 + gh*gw, token 0 global), the
        attention inputs of each layer (ViT: in-projection of ln_1(z) on the original stream, with
        bias; ResNet: the attention pool's projections of its tokens).
    grid: (gh, gw). family: "vit" or "resnet". layer_names: L display names.
    Build one with :func:`capture_attention`; then :meth:`rows` and :meth:`stats` are cheap.
    """

    q: tuple[torch.Tensor, ...]
    k: tuple[torch.Tensor, ...]
    v: tuple[torch.Tensor, ...]
    grid: tuple[int, int]
    family: str
    layer_names: tuple[str, ...]

    def __post_init__(self) -> None:
        gh, gw = self.grid
        count = len(self.q)
        if not count or len(self.k) != count or len(self.v) != count or len(self.layer_names) != count:
            raise ValueError("q, k, v and layer_names must hold the same (non-zero) number of layers.")
        for tensors in zip(self.q, self.k, self.v):
            for t in tensors:
                if t.ndim != 3 or t.shape != tensors[0].shape or t.shape[1] != 1 + gh * gw:
                    raise ValueError(f"each q, k, v must be [H, 1+gh*gw, d] with grid {self.grid}; "
                                     f"got {[tuple(x.shape) for x in tensors]}.")

    @property
    def num_layers(self) -> int:
        return len(self.q)

    @property
    def num_heads(self) -> int:
        return int(self.q[0].shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.q[0].shape[1])

    def check_layer(self, layer: int) -> int:
        """``layer`` as an index 0..L-1 (negative counts from the end), or a clear error."""
        value = _as_int(layer)
        count = self.num_layers
        if value is None or not -count <= value < count:
            what = "its attention pool (layer 0)" if self.family == "resnet" else f"blocks 0..{count - 1}"
            raise AttentionInputError(f"layer={layer!r} does not exist: this model's attention layers are {what}; "
                                      f"choose an integer from 0 to {count - 1} (or -1 for the last).")
        return value % count

    def check_head(self, head: int | None) -> int | None:
        """None (mean over heads) or a head index 0..H-1, or a clear error."""
        return check_head(head, self.num_heads)

    def check_query(self, query: Query) -> tuple[Query, int]:
        """(query as (row, col) or "global", its token index), or a clear error."""
        return check_query(query, self.grid)

    # --- rows --------------------------------------------------------------------------------

    def rows(self, layer: int, query: Query, head: int | None = None) -> AttentionRows:
        """q-k and v-v rows of ``query`` at ``layer`` for ``head`` (None: mean of the head rows)."""
        layer, head = self.check_layer(layer), self.check_head(head)
        query, token = self.check_query(query)
        qk, vv = self._row_pair(layer, token, head)
        return AttentionRows(qk=patch_grid(qk, self.grid), vv=patch_grid(vv, self.grid), qk_global=float(qk[0]),
                             vv_global=float(vv[0]), layer=layer, query=query, head=head, grid=self.grid)

    def all_layers(self, query: Query, head: int | None = None) -> tuple[AttentionRows, ...]:
        """:meth:`rows` of ``query`` at every layer, in order (for small multiples)."""
        return tuple(self.rows(layer, query, head) for layer in range(self.num_layers))

    def _row_pair(self, layer: int, token: int, head: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """[T] q-k and v-v rows of one token."""
        q, k, v = self.q[layer], self.k[layer], self.v[layer]
        pick = slice(token, token + 1)
        qk = attention_weights(q[:, pick], k)[:, 0]  # [H, T]
        vv = attention_weights(v[:, pick], v)[:, 0]
        return select_head(qk, head), select_head(vv, head)

    def matrices(self, layer: int, head: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Full q-k and v-v attention matrices [T, T] of one layer (rows = queries)."""
        layer, head = self.check_layer(layer), self.check_head(head)
        q, k, v = self.q[layer], self.k[layer], self.v[layer]
        return select_head(attention_weights(q, k), head), select_head(attention_weights(v, v), head)

    # --- statistics --------------------------------------------------------------------------

    def stats(self, query: Query = ALL_QUERIES, head: int | None = None, radius: float = 1,
              metric: str = "chebyshev", layers: Sequence[int] | None = None) -> AttentionStats:
        """Per-layer statistics of the q-k and v-v rows (see :class:`AttentionStats`).

        query: a query, or "all" for the mean over every patch query (the global token excluded).
        head: one head, or None for the mean-over-heads row (the row the maps show).
        radius, metric: "local" counts the patches whose distance to the query cell, in cells,
            is <= radius ("chebyshev": max(|dr|, |dc|); "euclidean": sqrt(dr^2 + dc^2)).
        layers: which layers (default all).
        """
        head, radius, metric = self.check_head(head), check_radius(radius), check_metric(metric)
        layers = tuple(range(self.num_layers)) if layers is None else tuple(self.check_layer(l) for l in layers)
        if isinstance(query, str) and query == ALL_QUERIES:
            token = None
        else:
            query, token = self.check_query(query)
        near = neighbourhood(self.grid, radius, metric)  # [N, N]
        values = {kind: {name: np.empty(len(layers)) for name in STAT_NAMES} for kind in KINDS}
        for i, layer in enumerate(layers):
            if token is None:
                qk, vv = self.matrices(layer, head)
                queries = torch.arange(1, self.num_tokens)
                pairs = {"qk": qk[1:], "vv": vv[1:]}  # [N, T], queries = the patch tokens
            else:
                qk, vv = self._row_pair(layer, token, head)
                queries = torch.tensor([token])
                pairs = {"qk": qk[None], "vv": vv[None]}
            for kind, rows in pairs.items():
                for name, value in row_stats(rows, queries, near).items():
                    values[kind][name][i] = value
        return AttentionStats(qk=values["qk"], vv=values["vv"], layers=layers,
                              query=ALL_QUERIES if token is None else query, head=head, radius=radius,
                              metric=metric, max_entropy=math.log(self.num_tokens))


def attention_layout(model: Any) -> tuple[tuple[str, ...], int]:
    """(layer names, heads per layer) of a model's image tower, read from its modules (no forward pass).

    ViT: "block 0" .. "block L-1"; ResNet: ("attention pool",), its one attention layer.
    """
    visual, family = image_tower(model)
    if family == "vit":
        blocks = visual.transformer.resblocks
        return tuple(f"block {i}" for i in range(len(blocks))), int(blocks[0].attn.num_heads)
    return ("attention pool",), int(visual.attnpool.num_heads)


def capture_attention(model: Any, pixels: torch.Tensor, precision: str | None = None) -> AttentionCapture:
    """Capture q, k, v of every attention layer of the image tower for one image.

    Args:
        model: a LoadedModel, an open_clip CLIP module, or its image tower (never modified: the
            blocks are re-run from their modules, no hooks or patches).
        pixels: [1, 3, H, W] preprocessed (:func:`clipsurgery_widgets.engine.images.preprocess`),
            H and W multiples of the patch size (32 for ResNets).
        precision: "fp32" (None: fp32 or a using_precision block's), "bf16", "fp16", "auto"; q, k, v float32.
    Returns: AttentionCapture with L = number of ViT blocks (or 1: the ResNet attention pool).
    """
    visual, family = image_tower(model)
    names, _ = attention_layout(visual)
    if isinstance(pixels, torch.Tensor) and pixels.ndim == 4 and pixels.shape[0] != 1:
        raise AttentionInputError(f"capture_attention takes one image at a time (got a batch of {pixels.shape[0]}); "
                                  f"pass pixels[i:i + 1] for each image.")
    with torch.no_grad(), computing_in(precision, visual) as p:
        visual = tower_for(model, visual, p)  # reduced precisions: the cached bf16/fp16 copy
        if family == "vit":
            stream = vit_stream(visual, pixels)
            blocks = visual.transformer.resblocks
            qkv = [split_heads_qkv(block.attn, block.ln_1(z)) for block, z in zip(blocks, stream.inputs)]
            grid = stream.grid
        else:
            tokens, grid = resnet_tokens(visual, pixels)
            qkv = [attnpool_qkv(visual.attnpool, tokens)]
    q, k, v = ([t[0].float().cpu() for t in parts] for parts in zip(*qkv))
    return AttentionCapture(q=tuple(q), k=tuple(k), v=tuple(v), grid=grid, family=family, layer_names=names)


def capture_image_attention(model: Any, rgb: np.ndarray, size: int | tuple[int, int] = 224,
                            precision: str | None = None) -> AttentionCapture:
    """:func:`capture_attention` of RGB uint8 [H, W, 3] resized to ``size`` (S or (S_h, S_w)); model: a LoadedModel."""
    pixels = preprocess(rgb, size, model.mean, model.std, model.patch_size).to(model.device)
    return capture_attention(model, pixels, precision)


def attention_rows(model: Any, pixels: torch.Tensor, layer: int, query: Query, head: int | None = None
                   ) -> AttentionRows:
    """One-shot rows (capture, then :meth:`AttentionCapture.rows`); for several, capture once instead."""
    return capture_attention(model, pixels).rows(layer, query, head)


# --- grid geometry -------------------------------------------------------------------------------

def check_query(query: Query, grid: tuple[int, int]) -> tuple[Query, int]:
    """(query normalised to (row, col) of ints or "global", its token index 1 + row*gw + col or 0)."""
    gh, gw = grid
    if isinstance(query, str):
        if query == GLOBAL:
            return GLOBAL, 0
        raise AttentionInputError(f"query={query!r} is not understood: pass a grid cell (row, col) or 'global' "
                                  f"for the global token.")
    cell = tuple(query) if isinstance(query, (tuple, list, np.ndarray)) else None
    values = tuple(_as_int(x) for x in cell) if cell is not None and len(cell) == 2 else None
    if values is None or None in values:
        raise AttentionInputError(f"query={query!r} is not understood: pass a grid cell as two integers "
                                  f"(row, col), or 'global' for the global token.")
    row, col = values
    if not (0 <= row < gh and 0 <= col < gw):
        raise AttentionInputError(f"query (row={row}, col={col}) is outside the {gh}x{gw} patch grid: rows run "
                                  f"0..{gh - 1} and columns 0..{gw - 1}.")
    return (row, col), 1 + row * gw + col


def cell_box(cell: tuple[int, int], size: tuple[int, int], grid: tuple[int, int]
             ) -> tuple[float, float, float, float]:
    """Outline (x0, y0, x1, y1) of grid cell (row, col) on an image of size (H, W).

    Pixel centres sit at integers, so the image spans -0.5..W-0.5 (the convention of
    :func:`clipsurgery_widgets.engine.regions.patch_at`, which maps a pixel back to its cell).
    """
    (row, col), (height, width), (gh, gw) = cell, size, grid
    return (col * width / gw - 0.5, row * height / gh - 0.5,
            (col + 1) * width / gw - 0.5, (row + 1) * height / gh - 0.5)


def neighbourhood(grid: tuple[int, int], radius: float, metric: str = "chebyshev") -> torch.Tensor:
    """bool [N, N]: patch j is within ``radius`` cells of patch i (itself included)."""
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    rows, cols = rows.flatten().double(), cols.flatten().double()
    dr = (rows[:, None] - rows[None, :]).abs()
    dc = (cols[:, None] - cols[None, :]).abs()
    distance = torch.maximum(dr, dc) if check_metric(metric) == "chebyshev" else torch.sqrt(dr ** 2 + dc ** 2)
    return distance <= radius + 1e-9


# --- helpers (shared with engine/method_rows.py) ---------------------------------------------------

def check_head(head: int | None, num_heads: int) -> int | None:
    """None (mean over heads) or a head index 0..H-1, or a clear error."""
    value = None if head is None else _as_int(head)
    if head is not None and (value is None or not 0 <= value < num_heads):
        raise AttentionInputError(f"head={head!r} does not exist: this model has {num_heads} heads per layer; "
                                  f"choose 0 to {num_heads - 1}, or None for the mean over heads.")
    return value


def patch_grid(row: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """float32 [gh, gw]: the patch part of an attention row [T] (token 0, the global token, dropped)."""
    return row[1:].reshape(grid).numpy().astype(np.float32)


def select_head(weights: torch.Tensor, head: int | None) -> torch.Tensor:
    """[H, ...] per-head rows -> one head's, or the mean of the heads' rows."""
    return weights.mean(0) if head is None else weights[head]


def row_stats(rows: torch.Tensor, queries: torch.Tensor, near: torch.Tensor) -> dict[str, float]:
    """Mean statistics of attention rows [Q, T] whose query tokens are ``queries`` [Q]."""
    rows = rows.double()
    index = torch.arange(len(queries))
    patch = queries >= 1
    local = torch.full((len(queries),), float("nan"), dtype=torch.float64)
    if patch.any():
        cells = queries[patch] - 1
        local[patch] = (rows[patch, 1:] * near[cells]).sum(-1)
    return {
        "self": float(rows[index, queries].mean()),
        "local": float(local.mean()),
        "entropy": float(torch.special.entr(rows).sum(-1).mean()),
        "global": float(rows[:, 0].mean()),
    }


def _as_int(value: Any) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_radius(radius: float) -> float:
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, (int, float, np.integer, np.floating)) \
            or not math.isfinite(radius) or radius < 0:
        raise AttentionInputError(f"radius={radius!r} must be a finite number of grid cells >= 0 "
                                  f"(1 means the query cell and its neighbours).")
    return float(radius)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise AttentionInputError(f"kind must be one of {', '.join(map(repr, KINDS))}, not {kind!r}.")
    return kind


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise AttentionInputError(f"metric={metric!r} is not known: use 'chebyshev' (square neighbourhoods) "
                                  f"or 'euclidean' (round ones).")
    return metric


__all__ = ["AttentionCapture", "AttentionRows", "AttentionStats", "AttentionInputError", "Query", "GLOBAL",
           "ALL_QUERIES", "STAT_NAMES", "STAT_TITLES", "KINDS", "KIND_LABELS", "METRICS", "capture_attention",
           "capture_image_attention", "attention_rows", "attention_layout", "check_query", "cell_box", "neighbourhood"]
