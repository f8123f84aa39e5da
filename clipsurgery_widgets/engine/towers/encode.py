"""Image towers with the original and the CLIP Surgery paths: pixels -> ImageTokens (docs/algorithms.md#architecture-surgery-vit and #architecture-surgery-resnet).

The public entry is :func:`encode_image_tokens`. The building blocks re-exported here are what
other engine modules (attention rows, per-head decomposition) use, so the tower math lives once:

    vit_embed(visual, pixels) -> (x [B, 1+N, C] after ln_pre, grid)
    vit_stream(visual, pixels) -> VitStream(inputs: L x [B, 1+N, C] entering each block, output, grid)
    split_heads_qkv(block.attn, block.ln_1(z)) -> q, k, v each [B, H, T, d]
    attention_weights(q, k) -> softmax(d^-0.5 q k^T) [B, H, T, T]   (use (v, v) for the v-v rows)
    resized_pos_embed(table [1+gh*gw, C], grid, new_grid) -> [1+gh'*gw', C] (a new tensor)
    resnet_tokens(visual, pixels) -> (tokens [B, 1+N, C] incl. positional embedding, grid)
    attnpool_qkv(visual.attnpool, tokens) -> q, k, v each [B, H, T, d]
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..precision import Precision, computing_in, reduced_tower
from ..results import ImageTokens
from .ops import (attention_weights, check_pixels, merge_heads, resized_pos_embed, split_heads, split_heads_qkv)
from .resnet import (RESNET_MODES, attnpool_qkv, check_batchnorm_eval, check_resnet_mode, resnet_features,
                     resnet_pool_tokens, resnet_tokens, vv_attention)
from .vit import (VitStream, check_depth, check_vit, dual_path_block, num_blocks, project_tokens, run_block,
                  vit_embed, vit_stream, vit_tokens)

__all__ = [
    "encode_image_tokens", "image_tower", "tower_for", "RESNET_MODES",
    "vit_embed", "vit_stream", "VitStream", "run_block", "dual_path_block", "project_tokens", "num_blocks",
    "check_vit", "check_depth", "resnet_features", "resnet_tokens", "attnpool_qkv", "vv_attention",
    "check_resnet_mode", "resized_pos_embed", "split_heads", "merge_heads", "split_heads_qkv",
    "attention_weights", "check_pixels",
]


def image_tower(model: Any) -> tuple[nn.Module, str]:
    """(visual, family) for a LoadedModel, an open_clip CLIP, or an image tower itself.

    family is "vit" (open_clip VisionTransformer) or "resnet" (ModifiedResNet); anything else raises
    UnsupportedModelError.
    """
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    module = getattr(model, "model", model)  # LoadedModel -> CLIP
    visual = module if isinstance(module, (VisionTransformer, ModifiedResNet)) else getattr(module, "visual", None)
    if isinstance(visual, VisionTransformer):
        check_vit(visual)
        return visual, "vit"
    if isinstance(visual, ModifiedResNet):
        return visual, "resnet"
    kind = type(visual).__name__ if visual is not None else f"{type(module).__name__} without a .visual tower"
    raise UnsupportedModelError(f"CLIP Surgery needs an open_clip VisionTransformer or ModifiedResNet image "
                                f"tower, not {kind}. Load one with load_model('ViT-B-16') or load_model('RN50').")


def tower_for(model: Any, visual: nn.Module, p: Precision) -> nn.Module:
    """The tower to run in precision ``p``: ``visual`` for fp32, else its cached reduced-precision
    copy, keyed also by the LoadedModel's fingerprint when ``model`` is or holds one (an Explainer).

    A ResNet tower in training mode is refused in every precision (the copy itself is in eval mode).
    """
    if not p.reduced:
        return visual
    check_batchnorm_eval(visual)
    holder = model
    while holder is not None and not hasattr(holder, "watch"):  # Explainer -> LoadedModel
        holder = getattr(holder, "model", None)
    fingerprint = holder.watch.fingerprint() if holder is not None else None
    return reduced_tower(visual, p, fingerprint)


@torch.no_grad()
def encode_image_tokens(model: Any, pixels: torch.Tensor, depth: int = 6, resnet_mode: str = "repo",
                        precision: str | None = None) -> ImageTokens:
    """Raw CLIP tokens and CLIP Surgery tokens from ONE forward pass of the image tower.

    Args:
        model: a LoadedModel or an open_clip CLIP module (never modified).
        pixels: [B, 3, H, W] preprocessed; H, W multiples of the patch size (32 for ResNets),
            any aspect ratio. Moved to the model's device and dtype.
        depth: ViT surgery depth K, 1..L (the last K blocks get the v-v path). Unused for ResNets.
        resnet_mode: "repo" (default) or "paper" v-v attention in the ResNet attention pool.
        precision: "fp32" (None: fp32, or an enclosing using_precision block's), "bf16", "fp16"
            (CUDA) or "auto"; reduced precisions run a cached bf16/fp16 copy of the tower under
            autocast (see engine/precision.py) and return float32 tokens.

    Returns:
        ImageTokens(raw [B, 1+N, D], surgery [B, 1+N, D], grid (gh, gw)); raw[:, 0] equals
        model.encode_image(pixels) at the native size, surgery[:, 0] == raw[:, 0].
    """
    check_resnet_mode(resnet_mode)
    visual, family = image_tower(model)
    with computing_in(precision, visual) as p:
        visual = tower_for(model, visual, p)
        if family == "vit":
            raw, surgery, grid = vit_tokens(visual, pixels, depth)
        else:
            raw, surgery, grid = resnet_pool_tokens(visual, pixels, resnet_mode)
    return ImageTokens(raw=p.output(raw), surgery=p.output(surgery), grid=grid)
