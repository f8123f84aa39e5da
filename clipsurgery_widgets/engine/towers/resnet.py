"""open_clip ModifiedResNet: dense tokens of the attention pool and the CLIP Surgery v-v pool (docs/algorithms.md#architecture-surgery-resnet).

Reads the model's modules and parameters, never writes them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import (RESNET_STRIDE, check_pixels, merge_heads, resized_pos_embed, split_heads)

RESNET_MODES = ("repo", "paper")
# "paper" mode (docs/algorithms.md#architecture-surgery-resnet): cosine queries/keys with an 8x larger scale, as the authors' ResNet setting.
PAPER_SCALE_FACTOR = 8.0
PAPER_EPS = 1e-6


def check_resnet_mode(mode: str) -> str:
    if mode not in RESNET_MODES:
        raise ValueError(f"resnet_mode={mode!r} is not known: use 'repo' (what the authors' released code "
                         f"computes, the default) or 'paper' (normalised v-v keys, 8x scale).")
    return mode


def check_batchnorm_eval(visual: nn.Module) -> None:
    """Refuse a tower with a BatchNorm in training mode (running it would update the model's statistics)."""
    if any(m.training for m in visual.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        raise ValueError("The ResNet image tower is in training mode; call model.eval() before explaining.")


@torch.no_grad()
def resnet_features(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Stem and layer1..layer4: pixels [B, 3, H, W] (H, W multiples of 32) -> [B, C, H/32, W/32]."""
    check_batchnorm_eval(visual)
    x = check_pixels(pixels, (RESNET_STRIDE, RESNET_STRIDE), visual.conv1.weight)
    if visual.conv1.weight.is_contiguous(memory_format=torch.channels_last):  # the reduced-precision copy
        x = x.contiguous(memory_format=torch.channels_last)
    x = visual.stem(x)
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))


@torch.no_grad()
def resnet_tokens(visual: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Tokens entering the attention pool: (tokens [B, 1+N, C], grid (gh, gw)).

    Token 0 is the spatial mean of the layer4 features, tokens 1..N the features row-major; the
    positional embedding (resized bilinearly for other grids, never written back) is added to all.
    """
    features = resnet_features(visual, pixels)  # [B, C, gh, gw]
    grid = (int(features.shape[2]), int(features.shape[3]))
    cells = features.flatten(2).transpose(1, 2)  # [B, N, C]
    tokens = torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1)
    table = visual.attnpool.positional_embedding
    side = math.isqrt(table.shape[0] - 1)
    return tokens + resized_pos_embed(table, (side, side), grid).to(tokens.dtype), grid


def attnpool_qkv(pool: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of the attention pool (with their biases), each [B, H, T, d]; tokens [B, T, C]."""
    heads = pool.num_heads
    return (split_heads(pool.q_proj(tokens), heads), split_heads(pool.k_proj(tokens), heads),
            split_heads(pool.v_proj(tokens), heads))


def vv_attention(v: torch.Tensor, mode: str = "repo") -> torch.Tensor:
    """The v-v attention output softmax(scale * key(v) key(v)^T) v: [B, H, T, d] -> [B, H, T, d].

    repo: key(v) = v, scale d^-0.5. paper: key(v) = v / (||v|| + 1e-6) per head, scale 8 d^-0.5.
    """
    if check_resnet_mode(mode) == "repo":
        return F.scaled_dot_product_attention(v, v, v)
    unit = v / (v.norm(dim=-1, keepdim=True) + PAPER_EPS)
    return F.scaled_dot_product_attention(unit, unit, v, scale=PAPER_SCALE_FACTOR * v.shape[-1] ** -0.5)


@torch.no_grad()
def resnet_pool_tokens(visual: nn.Module, pixels: torch.Tensor, mode: str = "repo"
                       ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Raw and surgery tokens of the attention pool: (raw [B, 1+N, D], surgery [B, 1+N, D], grid).

    raw: the original pool with every token as a query (raw[:, 0] == encode_image).
    surgery: c_proj of the v-v attention for tokens 1..N; token 0 is the raw global embedding.
    """
    check_resnet_mode(mode)
    pool = visual.attnpool
    tokens, grid = resnet_tokens(visual, pixels)
    q, k, v = attnpool_qkv(pool, tokens)
    b = tokens.shape[0]
    mixed = torch.cat([F.scaled_dot_product_attention(q, k, v), vv_attention(v, mode)])  # [2B, H, T, d]
    out = pool.c_proj(merge_heads(mixed))  # one projection for both paths: [2B, T, D]
    raw = out[:b]
    surgery = torch.cat([raw[:, :1], out[b:, 1:]], dim=1)
    return raw, surgery, grid
