"""open_clip VisionTransformer: the ordinary residual stream and the CLIP Surgery v-v path (docs/algorithms.md#architecture-surgery-vit).

Every function reads the model's modules and parameters and never writes them: the positional
table for other input sizes is a new tensor, and no hooks or attributes are added.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedModelError
from .ops import check_pixels, merge_heads, resized_pos_embed, split_heads_qkv


@dataclass(frozen=True)
class VitStream:
    """The ordinary residual stream of one forward pass.

    inputs: L tensors [B, 1+N, C]; inputs[l] is z entering block l (inputs[0] = ln_pre output).
    output: [B, 1+N, C] z after the last block (before ln_post).
    grid:   (gh, gw) patch grid, N = gh * gw.
    """

    inputs: tuple[torch.Tensor, ...]
    output: torch.Tensor
    grid: tuple[int, int]


def check_vit(visual: nn.Module) -> None:
    """Refuse ViT variants whose forward differs from the plain CLIP one that docs/algorithms.md#architecture-surgery-vit is written for."""
    name = type(visual).__name__
    problem = None
    if getattr(visual, "attn_pool", None) is not None:
        problem = "it pools tokens with an attention-pooling head (attn_pool)"
    elif getattr(visual, "pool_type", "tok") != "tok" or getattr(visual, "final_ln_after_pool", False):
        problem = "it does not read its embedding from the class token after ln_post"
    elif getattr(visual, "proj", None) is None:
        problem = "it has no output projection (proj)"
    else:
        for i, block in enumerate(visual.transformer.resblocks):
            attn = getattr(block, "attn", None)
            if not isinstance(attn, nn.MultiheadAttention):
                problem = (f"block {i} uses {type(attn).__name__} attention, not nn.MultiheadAttention "
                           f"(e.g. qk_norm or scaled-cosine attention)")
            elif not attn._qkv_same_embed_dim or attn.bias_k is not None or hasattr(block, "ln_1_kv"):
                problem = f"block {i} is not a plain self-attention block"
            if problem:
                break
    if problem:
        raise UnsupportedModelError(f"This {name} image tower is not supported by CLIP Surgery: {problem}. "
                                    f"Use a CLIP ViT such as ViT-B-16 or ViT-L-14, or a ModifiedResNet (RN50).")


def num_blocks(visual: nn.Module) -> int:
    return len(visual.transformer.resblocks)


@torch.no_grad()
def vit_embed(visual: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch embedding + class token + (resized) positional embedding + ln_pre.

    pixels: [B, 3, H, W] preprocessed, H and W multiples of the patch size.
    Returns (x [B, 1+N, C] = z entering block 0, grid (gh, gw)).
    """
    check_vit(visual)
    pixels = check_pixels(pixels, tuple(visual.patch_size), visual.conv1.weight)
    patches = visual.conv1(pixels)  # [B, C, gh, gw]
    grid = (int(patches.shape[2]), int(patches.shape[3]))
    patches = patches.flatten(2).transpose(1, 2)  # [B, N, C]
    cls = visual.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
    pos = resized_pos_embed(visual.positional_embedding, tuple(visual.grid_size), grid)
    # patch_dropout is skipped on purpose: dense maps need every patch (it is a no-op in eval).
    x = torch.cat([cls, patches], dim=1) + pos.to(patches.dtype)
    return visual.ln_pre(x), grid


def run_block(block: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """One unchanged open_clip block on a batch-first stream [B, T, C]."""
    if block.attn.batch_first:
        return block(z)
    return block(z.transpose(0, 1)).transpose(0, 1)


@torch.no_grad()
def vit_stream(visual: nn.Module, pixels: torch.Tensor) -> VitStream:
    """Run the ordinary ViT and keep the residual stream entering every block (see VitStream)."""
    z, grid = vit_embed(visual, pixels)
    inputs = []
    for block in visual.transformer.resblocks:
        inputs.append(z)
        z = run_block(block, z)
    return VitStream(inputs=tuple(inputs), output=z, grid=grid)


def dual_path_block(block: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One surgery block: the ordinary update of z and the v-v attention output for the new stream.

    z: [B, T, C] original stream entering the block.
    Returns (z after the block [B, T, C], ls_1(o_vv) [B, T, C]) where o_vv = out_proj(softmax(s v v^T) v).
    The in-projection runs once and both attentions share one kernel call and one out-projection.
    """
    attn = block.attn
    b = z.shape[0]
    q, k, v = split_heads_qkv(attn, block.ln_1(z))  # [B, H, T, d] each
    mixed = F.scaled_dot_product_attention(torch.cat([q, v]), torch.cat([k, v]), torch.cat([v, v]))
    out = block.ls_1(F.linear(merge_heads(mixed), attn.out_proj.weight, attn.out_proj.bias))  # [2B, T, C]
    z = z + out[:b]
    z = z + block.ls_2(block.mlp(block.ln_2(z)))
    return z, out[b:]


def project_tokens(visual: nn.Module, stream: torch.Tensor) -> torch.Tensor:
    """ln_post then proj on every token: [B, T, C] -> [B, T, D]."""
    return visual.ln_post(stream) @ visual.proj


@torch.no_grad()
def vit_tokens(visual: nn.Module, pixels: torch.Tensor, depth: int
               ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Raw and surgery tokens from one pass: (raw [B, 1+N, D], surgery [B, 1+N, D], grid).

    The first L - depth blocks run unchanged; the last ``depth`` run :func:`dual_path_block`.
    The new stream y starts as z entering the first surgery block and only accumulates v-v outputs.
    """
    check_vit(visual)
    total = num_blocks(visual)
    depth = check_depth(depth, total)
    z, grid = vit_embed(visual, pixels)
    blocks = visual.transformer.resblocks
    for block in blocks[: total - depth]:
        z = run_block(block, z)
    y = z
    for block in blocks[total - depth:]:
        z, o_vv = dual_path_block(block, z)
        y = y + o_vv
    raw = project_tokens(visual, z)
    surgery = torch.cat([raw[:, :1], project_tokens(visual, y[:, 1:])], dim=1)
    return raw, surgery, grid


def check_depth(depth: int, total: int) -> int:
    """The surgery depth as an int in 1..total, or a ValueError naming the allowed range."""
    try:
        value = operator.index(depth) if not isinstance(depth, bool) else None
    except TypeError:
        value = None
    if value is None or not 1 <= value <= total:
        raise ValueError(f"depth={depth!r} is not a valid surgery depth for this model: choose an integer "
                         f"from 1 to {total} (its number of transformer blocks); the default is 6.")
    return value
