"""The attention weights each dense method uses in its changed blocks (docs/algorithms.md#dense-methods).

This is the one home of those formulas: :mod:`.dense` mixes values with them and
:func:`method_attention` hands them to the attention views. Shapes: q, k, v [B, H, T, d] (with their
in-projection bias), h [B, T, C] the un-split ln_1 output, weights A [B, H, T, T] with rows = queries
(softmax over the last axis), s = d^-0.5.

    raw          softmax(s q k^T)                      CLIP's own attention
    clip_surgery softmax(s v v^T)
    maskclip     identity (each token attends only to itself)
    sclip        softmax(s q q^T) + softmax(s k k^T)    rows sum to 2, not renormalised
    clearclip    softmax(s a a^T), a = q, k or v, or softmax(s q k^T)   (``attention`` parameter)
    naclip       softmax(s k k^T + Omega)              Omega: Gaussian over the patch grid, unscaled
    gem          (A_q + A_k + A_v) / 3                 self-self attention with iterations, below
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..errors import MethodError
from ..precision import computing_in
from .dense_params import STREAM_METHODS, first_changed_block, resolve_params
from .encode import image_tower, tower_for
from .ops import split_heads_qkv
from .pos_tables import dense_embed
from .vit import num_blocks, run_block

# Guards the GEM normalisation against an all-zero vector (norms below this are treated as this).
NORM_EPS = 1e-12


def self_weights(a: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale * a a^T): [B, H, T, d] -> [B, H, T, T]."""
    return torch.softmax(scale * (a @ a.transpose(-2, -1)), dim=-1)


def cross_weights(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale * q k^T): [B, H, T, d] x2 -> [B, H, T, T]."""
    return torch.softmax(scale * (q @ k.transpose(-2, -1)), dim=-1)


def neighbourhood_bias(grid: tuple[int, int], std: float, device: torch.device, dtype: torch.dtype
                       ) -> torch.Tensor:
    """NACLIP's Omega [T, T], T = 1 + gh*gw: exp(-squared patch distance / (2 std^2)) between patches
    (row-major), 1 on the diagonal; row and column 0 (the class token) are 0."""
    gh, gw = grid
    work = torch.float64 if dtype == torch.float64 else torch.float32  # exp in (at least) float32
    rows = torch.arange(gh, device=device, dtype=work).repeat_interleave(gw)  # [N]
    cols = torch.arange(gw, device=device, dtype=work).repeat(gh)
    squared = (rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2  # [N, N]
    omega = torch.zeros(1 + gh * gw, 1 + gh * gw, device=device, dtype=work)
    omega[1:, 1:] = torch.exp(-squared / (2.0 * std ** 2))
    return omega.to(dtype)


def naclip_weights(k: torch.Tensor, grid: tuple[int, int], std: float, scale: float) -> torch.Tensor:
    """softmax(scale * k k^T + Omega); std == 0 drops Omega (plain k-k attention)."""
    logits = scale * (k @ k.transpose(-2, -1))
    if std > 0:
        logits = logits + neighbourhood_bias(grid, std, k.device, k.dtype)
    return torch.softmax(logits, dim=-1)


def _unit(p: torch.Tensor) -> torch.Tensor:
    return p / p.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)


def gem_temperature(h: torch.Tensor, head_width: int, inv_temperature: float | None) -> torch.Tensor | float:
    """GEM's inverse temperature: the given number, or per image d^-0.5 * mean_t ||h_t|| -> [B, 1, 1, 1]."""
    if inv_temperature is not None:
        return float(inv_temperature)
    return head_width ** -0.5 * h.norm(dim=-1).mean(dim=-1).reshape(-1, 1, 1, 1)


def gem_weights(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: torch.Tensor, iterations: int,
                inv_temperature: float | None) -> torch.Tensor:
    """(A_q + A_k + A_v) / 3 with, for P in {q, k, v}: repeat ``iterations`` times
    P <- softmax(t P^ P^^T) P^ (P^ = P / ||P|| per token and head); then A_P = softmax(t P^ P^^T)."""
    t = gem_temperature(h, q.shape[-1], inv_temperature)
    p = torch.stack([q, k, v])  # [3, B, H, T, d]: the three projections in one batched product
    for _ in range(iterations):
        unit = _unit(p)
        p = self_weights(unit, t) @ unit
    return self_weights(_unit(p), t).mean(dim=0)


def method_weights(method: str, params: Mapping[str, Any], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   h: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The weights A [B, H, T, T] ``method`` uses in a changed block (CLIP's q-k for raw)."""
    s = q.shape[-1] ** -0.5
    if method == "raw":
        return cross_weights(q, k, s)
    if method == "clip_surgery":
        return self_weights(v, s)
    if method == "maskclip":
        eye = torch.eye(q.shape[-2], device=q.device, dtype=q.dtype)
        return eye.expand(*q.shape[:-1], q.shape[-2])
    if method == "sclip":
        return self_weights(q, s) + self_weights(k, s)
    if method == "clearclip":
        choice = params["attention"]
        if choice == "qk":
            return cross_weights(q, k, s)
        return self_weights({"qq": q, "kk": k, "vv": v}[choice], s)
    if method == "naclip":
        return naclip_weights(k, grid, float(params["gaussian_std"]), s)
    if method == "gem":
        return gem_weights(q, k, v, h, params["iterations"], params["inv_temperature"])
    raise MethodError(f"Unknown dense method {method!r}.")


def mixed_values(method: str, params: Mapping[str, Any], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 h: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A v [B, H, T, d] with A = :func:`method_weights` (MaskCLIP's identity costs nothing: v itself)."""
    if method == "maskclip":
        return v
    return method_weights(method, params, q, k, v, h, grid) @ v


@dataclass(frozen=True, eq=False)
class MethodAttention:
    """Attention weights of one dense method in one block.

    weights: float32 [B, H, T, T], rows = queries (token 0 = class token, then the grid row-major).
    grid:    (gh, gw) patch grid, T = 1 + gh*gw.
    method, layer (0-based block index), params (resolved, read-only).
    """

    weights: torch.Tensor
    grid: tuple[int, int]
    method: str
    layer: int
    params: Mapping[str, Any]


def _method_layer(method: str, params: Mapping[str, Any], layer: int | None, total: int) -> int:
    """The block to read: the last by default; raw allows any block, clip_surgery and gem one of their
    last ``depth`` blocks, the single-block methods only the last one. Negative indices count back."""
    first = 0 if method == "raw" else first_changed_block(method, params, total)
    if layer is None:
        return total - 1
    try:
        index = operator.index(layer) if not isinstance(layer, bool) else None
    except TypeError:
        index = None
    if index is not None and index < 0:
        index += total
    if index is None or not first <= index < total:
        which = ("its changed blocks" if method in STREAM_METHODS else "the block it changes") \
            if method != "raw" else "this model's blocks"
        raise MethodError(f"{method}: layer={layer!r} is not one of {which}; choose an integer from {first} to "
                          f"{total - 1} (or -1 for the last block).")
    return index


@torch.no_grad()
def method_attention(model: Any, pixels: torch.Tensor, method: str, layer: int | None = None,
                     precision: str | None = None, **params: Any) -> MethodAttention:
    """The attention weights ``method`` uses in one of its changed blocks, for the attention views.

    Computed from that block's ln_1 input on the ORDINARY stream (with the method's positional
    table), exactly as :func:`encode_dense` uses them: q-k (raw), v-v (clip_surgery), identity
    (maskclip), q-q + k-k (sclip, rows sum to 2), clearclip's choice, k-k + Omega (naclip) and the
    mean of GEM's A_q, A_k, A_v. ViT image towers only.

    model: LoadedModel or open_clip CLIP (never modified); pixels [B, 3, H, W].
    layer: 0-based block index (negative counts from the end); default the last block.
    precision: "fp32" (None: fp32, or an enclosing using_precision block's), "bf16", "fp16" or "auto".
    Returns MethodAttention(weights float32 [B, H, T, T], grid, method, layer, params).
    """
    visual, family = image_tower(model)
    if family != "vit":
        raise MethodError("method_attention needs a ViT image tower; load one such as ViT-B-16.")
    total = num_blocks(visual)
    resolved = resolve_params(method, params, total)
    index = _method_layer(method, resolved, layer, total)
    with computing_in(precision, visual) as p:
        visual = tower_for(model, visual, p)  # reduced precisions: the cached bf16/fp16 copy
        z, grid = dense_embed(visual, pixels, resolved["pos_resize"])
        blocks = visual.transformer.resblocks
        for block in blocks[:index]:
            z = run_block(block, z)
        block = blocks[index]
        h = block.ln_1(z)
        q, k, v = split_heads_qkv(block.attn, h)
        weights = method_weights(method, resolved, q, k, v, h, grid)
    return MethodAttention(weights=weights.float().contiguous(), grid=grid, method=method, layer=index,
                           params=resolved)
