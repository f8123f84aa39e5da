"""open_clip VisionTransformer: the ordinary residual stream and the CLIP Surgery v-v path (docs/algorithms.md#architecture-surgery-vit).

Every function reads the model's modules and parameters and never writes them: the positional
table for other input sizes is a new tensor, and no hooks or attributes are added.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .ops import attention, check_pixels, linear, merge_heads, resized_pos_embed


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
    """One open_clip block on a batch-first stream [B, T, C], as a new tensor (z is not written).

    Same arithmetic as ``block(z)``, computed by :func:`block_update_` (leaner than the generic module);
    with autograd on, the module itself runs (in-place updates would break a backward pass).
    """
    if torch.is_grad_enabled():
        return block(z) if block.attn.batch_first else block(z.transpose(0, 1)).transpose(0, 1)
    z = z.clone()
    block_update_(block, z)
    return z


def _qkv_heads(attn: nn.MultiheadAttention, x_ln: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, H, T, d] as views of ONE in-projection output (no copies)."""
    qkv = linear(x_ln, attn.in_proj_weight, attn.in_proj_bias)  # [B, T, 3C]
    b, t, c3 = qkv.shape
    heads = attn.num_heads
    return qkv.view(b, t, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)


def _mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's MLP (c_fc, activation, c_proj) with its linear layers through :func:`linear`."""
    if not isinstance(mlp, nn.Sequential):
        return mlp(x)
    for layer in mlp:
        x = linear(x, layer.weight, layer.bias) if type(layer) is nn.Linear else layer(x)
    return x


def block_update_(block: nn.Module, z: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """One block IN PLACE on tensors the caller owns: z <- block(z); y += ls_1(o_vv) when y is given.

    z, y: [B, T, C]. o_vv = out_proj(softmax(d^-0.5 v v^T) v) is the v-v attention output of
    docs/algorithms.md#architecture-surgery-vit; it shares the block's one in-projection (q, k, v are
    views of it) and each attention is one :func:`ops.attention` call.
    """
    attn = block.attn
    q, k, v = _qkv_heads(attn, block.ln_1(z))  # [B, H, T, d] each
    weight, bias = attn.out_proj.weight, attn.out_proj.bias
    z += block.ls_1(linear(merge_heads(attention(q, k, v)), weight, bias))
    if y is not None:
        y += block.ls_1(linear(merge_heads(attention(v, v, v)), weight, bias))
    z += block.ls_2(_mlp(block.mlp, block.ln_2(z)))


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

    z: [B, T, C] original stream entering the block (not written).
    Returns (z after the block [B, T, C], ls_1(o_vv) [B, T, C]) where o_vv = out_proj(softmax(s v v^T) v).
    """
    z = z.clone()
    o_vv = torch.zeros_like(z)
    block_update_(block, z, o_vv)
    return z, o_vv


def project_tokens(visual: nn.Module, stream: torch.Tensor) -> torch.Tensor:
    """ln_post then proj on every token: [B, T, C] -> [B, T, D]."""
    return linear(visual.ln_post(stream), visual.proj.t())


@torch.no_grad()
def vit_tokens(visual: nn.Module, pixels: torch.Tensor, depth: int
               ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Raw and surgery tokens from one pass: (raw [B, 1+N, D], surgery [B, 1+N, D], grid).

    Every block updates z in place (:func:`block_update_`); the last ``depth`` also add their v-v
    output to the new stream y, which starts as z entering the first surgery block.
    """
    check_vit(visual)
    total = num_blocks(visual)
    depth = check_depth(depth, total)
    z, grid = vit_embed(visual, pixels)  # a fresh tensor: updated in place below
    y = None
    for index, block in enumerate(visual.transformer.resblocks):
        if index == total - depth:
            y = z.clone()
        block_update_(block, z, y)
    raw = project_tokens(visual, z)
    surgery = project_tokens(visual, y)  # token 0 of y is not a surgery token: it is replaced by raw's
    surgery[:, 0] = raw[:, 0]
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
