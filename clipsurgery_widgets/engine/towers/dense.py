"""Dense methods as variants of one forward pass (docs/algorithms.md#dense-methods).

    encode_dense(model, pixels, method, **params) -> DenseTokens(tokens [B, 1+N, D], grid, method, params)
    encode_dense_many(model, pixels, methods) -> {key: DenseTokens}   (one shared pass)

Token 0 is always the ordinary global embedding ln_post(z_L[:, 0]) @ proj; tokens 1..N are
ln_post(Y[:, 1:]) @ proj with Y the method's output stream. Nothing is normalised. The model is
only read: no hooks, no patched modules, no positional table written back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MethodError
from ..precision import computing_in
from .dense_attention import mixed_values
from .dense_params import METHODS, STREAM_METHODS, first_changed_block, resolve_params
from .encode import image_tower, tower_for
from .ops import merge_heads, split_heads_qkv
from .pos_tables import dense_embed, patch_grid, table_key
from .resnet import resnet_pool_tokens
from .vit import num_blocks, project_tokens, run_block

__all__ = ["DenseTokens", "encode_dense", "encode_dense_many", "METHODS"]


@dataclass(frozen=True, eq=False)
class DenseTokens:
    """One dense method's projected tokens.

    tokens: [B, 1+N, D] after ln_post and proj, NOT normalised; token 0 is the ordinary global
            embedding (== model.encode_image at the native size) for every method.
    grid:   (gh, gw) patch grid, N = gh * gw, row-major.
    method: the method's name; params: its resolved parameters (read-only mapping).
    """

    tokens: torch.Tensor
    grid: tuple[int, int]
    method: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class _Job:
    """One requested method inside a pass: its result key, name, resolved params, first changed block."""

    key: str
    method: str
    params: Mapping[str, Any]
    first: int

    def changes(self, index: int, total: int) -> bool:
        return self.first <= index < total


@torch.no_grad()
def encode_dense(model: Any, pixels: torch.Tensor, method: str, precision: str | None = None,
                 **params: Any) -> DenseTokens:
    """Dense tokens of one method (see :data:`METHODS` for the names and their default parameters).

    model: a LoadedModel or an open_clip CLIP (never modified). pixels: [B, 3, H, W] preprocessed,
    H and W multiples of the patch size (32 for ResNets), any aspect ratio; moved to the model's
    device and dtype, and computed in the model's dtype.
    params: the method's parameters (unknown names or bad values raise MethodError, a ValueError).
    On a ResNet only "raw" and "clip_surgery" exist (the attention pool, "repo" v-v mode; depth is
    unused there and pos_resize must stay "bilinear").
    precision: as in :func:`encode_dense_many`.
    Returns DenseTokens(tokens [B, 1+N, D], grid (gh, gw), method, params).
    """
    return encode_dense_many(model, pixels, [(method, params)], precision=precision)[method]


@torch.no_grad()
def encode_dense_many(model: Any, pixels: torch.Tensor,
                      methods: Iterable[str | tuple[str, Mapping[str, Any]]] | str | None = None,
                      precision: str | None = None) -> dict[str, DenseTokens]:
    """Several dense methods from one shared pass; each result equals :func:`encode_dense` alone.

    methods: names and/or (name, params) pairs; None means every method of :data:`METHODS` with its
    defaults. Result keys are the names, in request order. A name repeated with the SAME resolved
    params is computed once under one key; repeated with different params it is keyed "name",
    "name#2", "name#3", ... in request order.

    Sharing: methods are grouped by their positional table (pos_resize; at the model's native grid
    every mode uses the table as is, so all methods share one group). Per group, the blocks before
    the group's earliest changed block run once, the ordinary stream runs to z_L once (it gives every
    token 0), and each method adds only its own work from the ordinary stream's ln_1 inputs: one
    in-projection, one batched out-projection and one batched MLP per block serve every method.

    precision: "fp32" (None: fp32, or an enclosing using_precision block's), "bf16", "fp16" (CUDA)
    or "auto"; reduced precisions run a cached bf16/fp16 copy of the tower under autocast (see
    engine/precision.py) and return float32 tokens.
    """
    visual = image_tower(model)[0]
    with computing_in(precision, visual) as p:
        results = _dense_many(tower_for(model, visual, p), pixels, methods)
    return {key: DenseTokens(tokens=p.output(r.tokens), grid=r.grid, method=r.method, params=r.params)
            for key, r in results.items()} if p.reduced else results


def _dense_many(model: Any, pixels: torch.Tensor, methods: Any) -> dict[str, DenseTokens]:
    """encode_dense_many in the current precision."""
    visual, family = image_tower(model)
    total = num_blocks(visual) if family == "vit" else None
    jobs = _jobs(_requests(methods), total)
    if family == "resnet":
        return _resnet_results(visual, pixels, jobs)
    grid = patch_grid(visual, pixels)
    groups: dict[str, list[_Job]] = {}
    for job in jobs:
        groups.setdefault(table_key(job.params["pos_resize"], grid, tuple(visual.grid_size)), []).append(job)
    results: dict[str, DenseTokens] = {}
    for group in groups.values():
        results.update(_vit_group(visual, pixels, group[0].params["pos_resize"], group, total))
    return {job.key: results[job.key] for job in jobs}


def _requests(methods: Any) -> list[tuple[str, dict[str, Any]]]:
    """Normalise the ``methods`` argument to (name, params) pairs."""
    if methods is None:
        return [(name, {}) for name in METHODS]
    if isinstance(methods, str):
        methods = [methods]
    requests = []
    for item in methods:
        if isinstance(item, str):
            requests.append((item, {}))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Mapping):
            requests.append((item[0], dict(item[1])))
        else:
            raise MethodError(f"Each method must be a name or a (name, params dict) pair, not {item!r}; e.g. "
                              f"['raw', ('gem', {{'depth': 4}})]. Names: {', '.join(METHODS)}.")
    if not requests:
        raise MethodError(f"No dense method requested; pass some of {', '.join(METHODS)}.")
    return requests


def _jobs(requests: list[tuple[str, dict[str, Any]]], total: int | None) -> list[_Job]:
    """Resolve and key every request (see encode_dense_many for the key rule); duplicates collapse."""
    jobs: list[_Job] = []
    for method, params in requests:
        resolved = resolve_params(method, params, total)
        same_name = [job for job in jobs if job.method == method]
        if any(dict(job.params) == dict(resolved) for job in same_name):
            continue
        key = method if not same_name else f"{method}#{len(same_name) + 1}"
        first = first_changed_block(method, resolved, total) if total is not None else 0
        jobs.append(_Job(key=key, method=method, params=resolved, first=first))
    return jobs


def _resnet_results(visual: nn.Module, pixels: torch.Tensor, jobs: list[_Job]) -> dict[str, DenseTokens]:
    """raw and clip_surgery on a ResNet: the attention pool's two outputs from one call."""
    raw, surgery, grid = resnet_pool_tokens(visual, pixels, "repo")
    return {job.key: DenseTokens(tokens=raw if job.method == "raw" else surgery, grid=grid, method=job.method,
                                 params=job.params) for job in jobs}


def _keeps_residual(job: _Job) -> bool:
    """Single-block methods whose changed block keeps its residual and FFN."""
    if job.method == "sclip":
        return True
    if job.method == "clearclip":
        return job.params["residual"]
    if job.method == "naclip":
        return not job.params["reduced"]
    return False


def _vit_group(visual: nn.Module, pixels: torch.Tensor, mode: str, jobs: list[_Job], total: int
               ) -> dict[str, DenseTokens]:
    """One pass for methods sharing a positional table: {key: DenseTokens}.

    Ordinary stream z; stream methods (clip_surgery, gem) keep y, which starts as z entering their
    first changed block and accumulates ls_1(o) only; single-block methods (maskclip, sclip,
    clearclip, naclip) turn u = z_{L-1} into Y = o, or u + ls_1(o) followed by their FFN.
    """
    z, grid = dense_embed(visual, pixels, mode)
    b = z.shape[0]
    blocks = visual.transformer.resblocks
    first = min(job.first for job in jobs)
    for block in blocks[:first]:
        z = run_block(block, z)
    outputs: dict[str, torch.Tensor] = {}  # key -> Y [B, T, C] (or the stream y while it runs)
    for index in range(first, total):
        block, u = blocks[index], z
        h = block.ln_1(u)
        q, k, v = split_heads_qkv(block.attn, h)  # [B, H, T, d] each, shared by every method
        active = [job for job in jobs if job.changes(index, total)]
        mixed = [F.scaled_dot_product_attention(q, k, v)]  # the ordinary q-k attention
        mixed += [mixed_values(job.method, job.params, q, k, v, h, grid) for job in active]
        attn = block.attn
        out = F.linear(merge_heads(torch.cat(mixed)), attn.out_proj.weight, attn.out_proj.bias).split(b)
        # The ordinary stream and the single-block methods that keep residual + FFN share one MLP call.
        residual = [u + block.ls_1(out[0])]
        kept = []
        for job, o in zip(active, out[1:]):
            if job.method in STREAM_METHODS:
                outputs[job.key] = outputs.get(job.key, u) + block.ls_1(o)
            elif _keeps_residual(job):
                residual.append(u + block.ls_1(o))
                kept.append(job)
            else:
                outputs[job.key] = o
        stacked = torch.cat(residual)
        stacked = (stacked + block.ls_2(block.mlp(block.ln_2(stacked)))).split(b)
        z = stacked[0]
        outputs.update({job.key: y for job, y in zip(kept, stacked[1:])})
    # One ln_post + proj for z_L and every method's patch tokens (both act on each token alone).
    keys = [job.key for job in jobs if job.method != "raw"]
    projected = project_tokens(visual, torch.cat([z] + [outputs[key][:, 1:] for key in keys], dim=1))
    t = z.shape[1]
    ordinary, patches = projected[:, :t], projected[:, t:].split(t - 1, dim=1)
    tokens = dict(zip(keys, patches))
    return {job.key: DenseTokens(
        tokens=ordinary if job.method == "raw" else torch.cat([ordinary[:, :1], tokens[job.key]], dim=1),
        grid=grid, method=job.method, params=job.params) for job in jobs}
