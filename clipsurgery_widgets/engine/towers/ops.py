"""Small pieces shared by the ViT and ResNet image towers: input checks, positional-embedding
resizing and multi-head reshapes. Pure functions; nothing here touches a model's state."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImageInputError

# ModifiedResNet reduces the input 32 times (stem /4, layer2..4 /2 each).
RESNET_STRIDE = 32


def check_pixels(pixels: torch.Tensor, patch: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """Validate preprocessed pixels [B, 3, H, W] and move them to ``like``'s device and dtype.

    H and W must be whole multiples of the patch size ``patch`` = (ph, pw) (the ResNet's is 32).
    """
    if not isinstance(pixels, torch.Tensor):
        raise ImageInputError(f"pixels must be a torch tensor [B, 3, H, W], not {type(pixels).__name__}; "
                              f"make one with clipsurgery_widgets.engine.preprocess(rgb, size, mean, std, patch).")
    if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[0] < 1:
        raise ImageInputError(f"pixels must have shape [B, 3, H, W] with B >= 1 (got {list(pixels.shape)}); "
                              f"add a batch axis with pixels[None] or convert grey images to RGB first.")
    if not pixels.is_floating_point():
        raise ImageInputError(f"pixels must be normalised floats (got dtype {pixels.dtype}); "
                              f"use preprocess(rgb, size, mean, std, patch) rather than raw uint8 values.")
    h, w = pixels.shape[-2:]
    ph, pw = patch
    if h < ph or w < pw or h % ph or w % pw:
        fix_h, fix_w = max(ph, round(h / ph) * ph), max(pw, round(w / pw) * pw)
        raise ImageInputError(f"pixels are {h}x{w}, which is not a whole number of {ph}x{pw} patches for this "
                              f"model; resize to e.g. {fix_h}x{fix_w}.")
    return pixels.to(device=like.device, dtype=like.dtype)


def resized_pos_embed(table: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Positional embedding for another patch grid, as a NEW tensor (the model's table is never written).

    table: [1 + gh*gw, C] with the class/global position first, then the grid row-major.
    grid: (gh, gw) the table was trained for; new_grid: (gh', gw') wanted.
    Returns [1 + gh'*gw', C]: row 0 unchanged, the grid resized bilinearly (align_corners=False).
    At the original grid the table itself is returned (read it, don't modify it).
    """
    gh, gw = grid
    if table.shape[0] != 1 + gh * gw:
        raise ValueError(f"positional table has {table.shape[0]} rows; expected 1 + {gh}*{gw}.")
    if tuple(new_grid) == (gh, gw):
        return table
    cells = table[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)  # [1, C, gh, gw]
    # Interpolate in float32 (half-precision bilinear is not available on every device).
    cells = F.interpolate(cells.float(), size=tuple(new_grid), mode="bilinear", align_corners=False)
    cells = cells.to(table.dtype)[0].flatten(1).transpose(0, 1)  # [gh'*gw', C]
    return torch.cat([table[:1], cells], dim=0)


def _onednn_linear_op():
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear_op()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: x [..., in], weight [out, in] -> [..., out].

    On the CPU in plain float32 (no autocast, no autograd) the product runs through oneDNN, whose
    float32 kernels use the full vector width on every x86 CPU; torch's default BLAS (MKL) takes a
    narrower path on non-Intel CPUs and ran the ViT matmuls about 2x slower here. Same arithmetic,
    float32 throughout: results agree with F.linear to float rounding. Anything else uses F.linear.
    """
    if (_ONEDNN_LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, T, C] -> [B, H, T, C/H]."""
    b, t, c = x.shape
    return x.reshape(b, t, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, d] -> [B, T, H*d] (inverse of :func:`split_heads`)."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def split_heads_qkv(attn: nn.MultiheadAttention, x_ln: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of a self-attention layer, each [B, H, T, d].

    x_ln: [B, T, C] the attention's input (ln_1 of the residual stream), batch first whatever
    ``attn.batch_first`` says. Uses the packed in-projection weight and its bias.
    """
    qkv = F.linear(x_ln, attn.in_proj_weight, attn.in_proj_bias)  # [B, T, 3C]
    q, k, v = qkv.chunk(3, dim=-1)
    return split_heads(q, attn.num_heads), split_heads(k, attn.num_heads), split_heads(v, attn.num_heads)


def attention_weights(queries: torch.Tensor, keys: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(scale * queries keys^T) over the keys: [B, H, T, d] x2 -> [B, H, T, T].

    scale defaults to d^-0.5. With (q, k) this is CLIP's attention, with (v, v) the v-v attention.
    """
    scale = queries.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax(scale * queries @ keys.transpose(-2, -1), dim=-1)


# Scores per chunk in the CPU bf16 attention below: 2M bf16 values (4 MB) stay in cache; one 12-head
# 785-token score tensor (448 px) does not, and ran slower than the fused kernel unchunked.
_CPU_BF16_SCORE_CHUNK = 2_000_000


def attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """softmax(d^-0.5 queries keys^T) values: [B, H, T, d] x3 -> [B, H, T, d].

    ``F.scaled_dot_product_attention``, except for bf16 on the CPU without autograd: torch's fused
    CPU kernel is no faster in bf16 than in fp32 (11 ms per ViT-B-16 layer at 448 either way), while
    two bf16 batched matmuls with a softmax between them, a few heads at a time, take about half
    that. The scores are rounded to bf16 before the softmax; the surgery tokens of ViT-B-16 moved by
    the same 0.8% from fp32 either way (benchmarks/bench_precision.py).
    """
    if not (queries.dtype == torch.bfloat16 and queries.device.type == "cpu" and not torch.is_grad_enabled()):
        return F.scaled_dot_product_attention(queries, keys, values)
    b, h, t, d = queries.shape
    q, k, v = (x.reshape(b * h, t, d) for x in (queries, keys, values))
    out = torch.empty_like(q)
    step = max(1, _CPU_BF16_SCORE_CHUNK // (t * t))
    for start in range(0, b * h, step):
        part = slice(start, start + step)
        scores = torch.bmm(q[part], k[part].transpose(1, 2)).mul_(d ** -0.5)
        torch.bmm(torch.softmax(scores, dim=-1), v[part], out=out[part])
    return out.view(b, h, t, d)
