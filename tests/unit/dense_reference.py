"""Literal block-by-block re-implementation of the dense methods (docs/algorithms.md#dense-methods),
for tests/unit/test_dense.py.

Uses only the open_clip modules' weights and plain tensor algebra (no engine helpers): layer norms,
in-projection, softmax attention, out-projection, MLP, ln_post and proj are written out, and the
positional tables are built with torch.nn.functional.interpolate directly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

def ln(x, mod):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def gamma(ls):
    return ls.gamma if hasattr(ls, "gamma") else 1.0


def mlp(blk, x):
    m = x @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias
    if type(blk.mlp.gelu).__name__ == "QuickGELU":
        m = m * torch.sigmoid(1.702 * m)
    else:
        m = 0.5 * m * (1 + torch.erf(m / math.sqrt(2)))
    return m @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias


def heads(x, h):
    b, t, c = x.shape
    return x.reshape(b, t, h, c // h).permute(0, 2, 1, 3)


def unheads(x):
    b, h, t, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, t, h * d)


def softmax_rows(logits):
    e = torch.exp(logits - logits.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def ref_table(visual, grid, mode):
    table, (g0h, g0w) = visual.positional_embedding, visual.grid_size
    if tuple(grid) == (g0h, g0w):
        return table
    c = table.shape[1]
    cells = table[1:].reshape(g0h, g0w, c).permute(2, 0, 1)[None]
    if mode == "bilinear":
        cells = F.interpolate(cells, size=grid, mode="bilinear", align_corners=False)
    elif mode == "bicubic-offset":
        cells = F.interpolate(cells, scale_factor=((grid[0] + 0.1) / g0h, (grid[1] + 0.1) / g0w),
                              mode="bicubic", align_corners=False, recompute_scale_factor=False)
    else:
        cells = F.interpolate(cells, size=grid, mode="bicubic", antialias=True, align_corners=False)
    assert cells.shape[-2:] == grid
    return torch.cat([table[:1], cells[0].reshape(c, -1).T])


def ref_qkv(blk, z):
    a, c = blk.attn, z.shape[-1]
    h = ln(z, blk.ln_1)
    w, bias = a.in_proj_weight, a.in_proj_bias
    q, k, v = (heads(h @ w[i * c:(i + 1) * c].T + bias[i * c:(i + 1) * c], a.num_heads) for i in range(3))
    return h, q, k, v


def ref_out(blk, weights, v):
    return unheads(weights @ v) @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias


def ref_omega(grid, std):
    gh, gw = grid
    t = 1 + gh * gw
    omega = torch.zeros(t, t, dtype=torch.float64)
    for p in range(gh * gw):
        for p2 in range(gh * gw):
            d2 = (p // gw - p2 // gw) ** 2 + (p % gw - p2 % gw) ** 2
            omega[1 + p, 1 + p2] = math.exp(-d2 / (2 * std ** 2))
    return omega


def ref_gem(q, k, v, h, iterations, inv_temperature):
    s = q.shape[-1] ** -0.5
    t = inv_temperature if inv_temperature is not None else (
        s * torch.sqrt((h ** 2).sum(-1)).mean(-1)[:, None, None, None])
    total = 0
    for p in (q, k, v):
        for _ in range(iterations):
            u = p / torch.sqrt((p ** 2).sum(-1, keepdim=True))
            p = softmax_rows(t * u @ u.transpose(-1, -2)) @ u
        u = p / torch.sqrt((p ** 2).sum(-1, keepdim=True))
        total = total + softmax_rows(t * u @ u.transpose(-1, -2))
    return total / 3


def ref_weights(method, prm, q, k, v, h, grid):
    s = q.shape[-1] ** -0.5
    att = lambda a, b: softmax_rows(s * a @ b.transpose(-1, -2))  # noqa: E731
    if method == "raw":
        return att(q, k)
    if method == "clip_surgery":
        return att(v, v)
    if method == "maskclip":
        return torch.eye(q.shape[-2], dtype=q.dtype).expand(*q.shape[:-1], q.shape[-2])
    if method == "sclip":
        return att(q, q) + att(k, k)
    if method == "clearclip":
        a, b = {"qq": (q, q), "kk": (k, k), "vv": (v, v), "qk": (q, k)}[prm["attention"]]
        return att(a, b)
    if method == "naclip":
        logits = s * k @ k.transpose(-1, -2)
        return softmax_rows(logits + ref_omega(grid, prm["gaussian_std"]).to(q.dtype) if prm["gaussian_std"] else logits)
    return ref_gem(q, k, v, h, prm["iterations"], prm["inv_temperature"])


@torch.no_grad()
def ref_dense(visual, px, method, prm):
    """Tokens [B, 1+N, D] of one method, block by block."""
    w = visual.conv1.weight
    x = F.conv2d(px, w, stride=w.shape[-1])
    b, c, gh, gw = x.shape
    x = torch.cat([visual.class_embedding.reshape(1, 1, c).repeat(b, 1, 1), x.reshape(b, c, -1).transpose(1, 2)], 1)
    z = ln(x + ref_table(visual, (gh, gw), prm["pos_resize"]), visual.ln_pre)
    blocks = list(visual.transformer.resblocks)
    total = len(blocks)
    first = {"raw": total, "clip_surgery": total - prm.get("depth", 0), "gem": total - prm.get("depth", 0)}.get(
        method, total - 1)
    y = None
    for i, blk in enumerate(blocks):
        h, q, k, v = ref_qkv(blk, z)
        if i >= first:
            o = ref_out(blk, ref_weights(method, prm, q, k, v, h, (gh, gw)), v)
            if method in ("clip_surgery", "gem"):
                y = (z if y is None else y) + gamma(blk.ls_1) * o
            elif ((method == "sclip") or (method == "clearclip" and prm["residual"])
                  or (method == "naclip" and not prm["reduced"])):
                y = z + gamma(blk.ls_1) * o
                y = y + gamma(blk.ls_2) * mlp(blk, ln(y, blk.ln_2))
            else:
                y = o
        z = z + gamma(blk.ls_1) * ref_out(blk, ref_weights("raw", prm, q, k, v, h, None), v)
        z = z + gamma(blk.ls_2) * mlp(blk, ln(z, blk.ln_2))
    y = z if method == "raw" else y
    return ln(torch.cat([z[:, :1], y[:, 1:]], 1), visual.ln_post) @ visual.proj
