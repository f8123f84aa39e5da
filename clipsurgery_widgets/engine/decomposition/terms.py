"""Text-based decomposition of a CLIP ViT's image embedding (Gandelsman et al.;
docs/algorithms.md#text-based-decomposition).

The class-token stream at the end of the tower is z = e + sum_l A_l + sum_l M_l. Each attention
output A_l splits exactly into one term per (position i, head h):
alpha_lh(0, i) * W_O[:, h] (W_V^h ln_1(z_i) + b_V^h), plus an equal share of the out-projection
bias. ln_post becomes linear once the image's own mean and std of z are frozen, so every term can
be pushed through it, through ``proj`` and divided by ||r|| (r = encode_image): all terms then sum
to the normalised image embedding.

How the constant parts of ln_post are shared: the centring (mu) and bias (beta) are split evenly
over the 2L + 1 stream components (e, A_1..A_L, M_1..M_L), as in the authors' code; an attention
layer's share is then split evenly over its position x head terms, like the out-projection bias.
This keeps a head's non-spatial term exactly equal to the sum of its spatial terms.

The model is only read: no hooks, no writes to parameters or attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ClipSurgeryError, UnsupportedModelError
from ..precision import computing_in
from ..towers.ops import attention_weights, split_heads_qkv
from ..towers.encode import tower_for
from ..towers.vit import check_vit, vit_stream

# decompose refuses batches whose terms would need more than this (override with max_bytes=...).
DEFAULT_MAX_BYTES = 2 * 1024**3
_FLOAT_BYTES = 4


class DecompositionMemoryError(ClipSurgeryError, MemoryError):
    """A decomposition would not fit the memory budget given to it."""


@dataclass(frozen=True)
class Decomposition:
    """Additive terms of the normalised image embedding of B images (float32, CPU or model device).

    attn: [B, L, T, H, D] per layer, position and head when spatial (T = 1 + N positions; position
          0 is the class token, then the N patches row-major on ``grid``), or [B, L, H, D] summed
          over positions when not.
    mlp:  [B, L + 1, D]: mlp[:, 0] is the embedding e (ln_pre output at the class token),
          mlp[:, l + 1] the MLP output of block l.
    norm: [B] ||encode_image(x)||, the divisor already applied to every term.
    grid: (gh, gw) patch grid of the forward pass.
    attn.sum over (L, T, H) + mlp.sum over L+1 == encode_image(x) / ||encode_image(x)||.
    """

    attn: torch.Tensor
    mlp: torch.Tensor
    norm: torch.Tensor
    grid: tuple[int, int]

    @property
    def spatial(self) -> bool:
        return self.attn.ndim == 5

    @property
    def num_layers(self) -> int:
        return int(self.attn.shape[1])

    @property
    def num_heads(self) -> int:
        return int(self.attn.shape[-2])

    @property
    def nbytes(self) -> int:
        """Bytes held by the term tensors."""
        return sum(t.numel() * t.element_size() for t in (self.attn, self.mlp, self.norm))

    def head_terms(self) -> torch.Tensor:
        """[B, L, H, D] each head's direct contribution (summed over positions)."""
        return self.attn.sum(2) if self.spatial else self.attn

    def layer_terms(self) -> torch.Tensor:
        """[B, L, D] each attention layer's direct contribution."""
        return self.head_terms().sum(2)

    def total(self) -> torch.Tensor:
        """[B, D] the sum of all terms: the normalised image embedding."""
        return self.layer_terms().sum(1) + self.mlp.sum(1)


def vision_tower(model: Any) -> nn.Module:
    """The open_clip VisionTransformer of a LoadedModel, Explainer, CLIP module or the tower itself.

    Refuses ResNet towers and ViT variants the decomposition is not written for.
    """
    model = getattr(model, "model", model)  # Explainer -> LoadedModel -> CLIP module
    model = getattr(model, "model", model)
    visual = getattr(model, "visual", model)
    if not hasattr(visual, "transformer") or not hasattr(visual, "ln_post"):
        kind = type(visual).__name__
        raise UnsupportedModelError(
            f"The text-based decomposition is defined for vision transformers, and this model's image tower "
            f"is a {kind}. Load a CLIP ViT (e.g. ViT-B-16 or ViT-L-14); CLIP Surgery maps still work for ResNets.")
    check_vit(visual)
    return visual


def decomposition_nbytes(num_layers: int, num_tokens: int, num_heads: int, dim: int,
                         spatial: bool = True, batch: int = 1) -> int:
    """Bytes of float32 terms that :func:`decompose` returns for ``batch`` images (T = num_tokens)."""
    per_image = num_layers * num_heads * dim * (num_tokens if spatial else 1) + (num_layers + 1) * dim + 1
    return _FLOAT_BYTES * batch * per_image


def decomposition_memory(model: Any, size: int | tuple[int, int] | None = None, spatial: bool = True) -> int:
    """Bytes per image of a decomposition with ``model`` at input ``size`` (default: its native size)."""
    visual = vision_tower(model)
    hw = visual.image_size if size is None else size
    hw = (hw, hw) if isinstance(hw, int) else tuple(hw)
    ph, pw = visual.patch_size
    tokens = 1 + (hw[0] // ph) * (hw[1] // pw)
    blocks = visual.transformer.resblocks
    return decomposition_nbytes(len(blocks), tokens, blocks[0].attn.num_heads, visual.proj.shape[1], spatial)


@torch.no_grad()
def decompose(model: Any, pixels: torch.Tensor, spatial: bool = True,
              max_bytes: int | None = DEFAULT_MAX_BYTES, precision: str | None = None) -> Decomposition:
    """Split the normalised image embedding of ``pixels`` into per-layer/head(/position) and MLP terms.

    Args:
        model: LoadedModel, Explainer, open_clip CLIP module or its VisionTransformer (ViT only).
        pixels: [B, 3, H, W] preprocessed images (H, W multiples of the patch size).
        spatial: keep the position axis of the attention terms (B * L * T * H * D floats: about
            58 MB per image for ViT-B/16 at 224) or sum it away (about 0.3 MB).
        max_bytes: refuse a batch whose terms would exceed this many bytes (None: no limit).
        precision: "fp32" (None: fp32, or an enclosing using_precision block's), "bf16", "fp16" or
            "auto"; reduced precisions run the cached bf16/fp16 tower copy under autocast, the terms are summed in float32.
    Returns:
        :class:`Decomposition` with float32 terms on the model's device.
    """
    visual = vision_tower(model)
    with computing_in(precision, visual) as p:
        d = _decompose(tower_for(model, visual, p), pixels, spatial, max_bytes)
    return Decomposition(attn=d.attn, mlp=d.mlp, norm=p.output(d.norm), grid=d.grid) if p.reduced else d


def _decompose(visual: nn.Module, pixels: torch.Tensor, spatial: bool, max_bytes: int | None) -> Decomposition:
    """decompose() in the current precision."""
    blocks = list(visual.transformer.resblocks)
    stream = vit_stream(visual, pixels)
    batch, tokens, width = stream.output.shape
    heads, dim = blocks[0].attn.num_heads, visual.proj.shape[1]
    need = decomposition_nbytes(len(blocks), tokens, heads, dim, spatial, batch)
    if max_bytes is not None and need > max_bytes:
        each = decomposition_nbytes(len(blocks), tokens, heads, dim, spatial)
        flat = decomposition_nbytes(len(blocks), tokens, heads, dim, False)
        raise DecompositionMemoryError(
            f"Decomposing {batch} images would hold {need / 1e6:.0f} MB of terms ({each / 1e6:.1f} MB each), "
            f"over the {max_bytes / 1e6:.0f} MB budget: pass fewer images at a time, use spatial=False "
            f"({flat / 1e6:.2f} MB each), or raise max_bytes.")
    post = _FrozenLnPost(visual, stream.output[:, 0], components=2 * len(blocks) + 1)

    # Filled layer by layer: peak memory is the result plus one layer's terms in the residual width.
    shape = (batch, len(blocks), tokens, heads, dim) if spatial else (batch, len(blocks), heads, dim)
    attn_terms = torch.empty(shape, dtype=torch.float32, device=stream.output.device)
    mlp_terms = torch.empty(batch, len(blocks) + 1, dim, dtype=torch.float32, device=stream.output.device)
    mlp_terms[:, 0] = post(stream.inputs[0][:, 0].float(), 1.0)
    for layer, (block, z) in enumerate(zip(blocks, stream.inputs)):
        terms = _attention_terms(block, z, spatial)  # [B, T, H, C] or [B, H, C]
        attn_terms[:, layer] = post(terms, 1.0 / (tokens * heads if spatial else heads))
        # The MLP sees the class token after this block's attention: rebuild it from our own terms
        # so that an error in them shows up in the total instead of being absorbed.
        mid = z[:, 0].float() + terms.flatten(1, -2).sum(1)
        del terms
        mlp_out = block.ls_2(block.mlp(block.ln_2(mid.to(z.dtype)))).float()
        mlp_terms[:, layer + 1] = post(mlp_out, 1.0)
    return Decomposition(attn=attn_terms, mlp=mlp_terms, norm=post.norm, grid=stream.grid)


def _attention_terms(block: nn.Module, z: torch.Tensor, spatial: bool) -> torch.Tensor:
    """One block's attention output at the class token, split per (position, head), before ln_post.

    z: [B, T, C] stream entering the block. Returns float32 [B, T, H, C] (spatial) or [B, H, C];
    layer-scale applied; the out-projection bias shared evenly over the T * H terms.
    """
    attn = block.attn
    q, k, v = split_heads_qkv(attn, block.ln_1(z))  # [B, H, T, d]
    probs = attention_weights(q[:, :, :1].float(), k.float())[:, :, 0]  # [B, H, T] class-token row
    heads, tokens, d = v.shape[1], v.shape[2], v.shape[3]
    w_out = attn.out_proj.weight.float().reshape(-1, heads, d)  # [C, H, d]: W_O[:, h] per head
    bias = attn.out_proj.bias
    bias = torch.zeros(w_out.shape[0], device=w_out.device) if bias is None else bias.float()
    if spatial:
        weighted = probs.transpose(1, 2).unsqueeze(-1) * v.float().transpose(1, 2)  # [B, T, H, d]
        terms = torch.einsum("bthd,chd->bthc", weighted, w_out) + bias / (tokens * heads)
    else:
        mixed = torch.einsum("bht,bhtd->bhd", probs, v.float())  # [B, H, d]
        terms = torch.einsum("bhd,chd->bhc", mixed, w_out) + bias / heads
    return _layer_scale(block.ls_1, terms)


def _layer_scale(scale: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a block's (elementwise, linear) layer scale to float32 terms, or nothing for Identity."""
    gamma = getattr(scale, "gamma", None)
    return x if gamma is None else x * gamma.float()


class _FrozenLnPost:
    """ln_post with the class token's own mean and std frozen, then proj and / ||r||
    (docs/algorithms.md#text-based-decomposition).

    A term x carrying a share ``share`` of one of ``components`` stream components maps to
    (gamma * (x - mu * s) / sigma + beta * s) @ proj / ||r||, with s = share / components.
    """

    def __init__(self, visual: nn.Module, z_cls: torch.Tensor, components: int):
        ln = visual.ln_post
        z = z_cls.float()  # [B, C]
        self.mu = z.mean(-1)
        self.sigma = torch.sqrt(z.var(-1, unbiased=False) + ln.eps)
        width = z.shape[-1]
        self.gamma = ln.weight.float() if ln.weight is not None else torch.ones(width, device=z.device)
        self.beta = ln.bias.float() if ln.bias is not None else torch.zeros(width, device=z.device)
        self.proj = visual.proj.float()
        self.components = components
        embedding = (visual.ln_post(z_cls) @ visual.proj).float()  # what encode_image returns
        self.norm = embedding.norm(dim=-1)

    def __call__(self, x: torch.Tensor, share: float) -> torch.Tensor:
        """x: [B, ..., C] -> [B, ..., D]."""
        s = share / self.components
        extra = (1,) * (x.ndim - 2)
        mu, sigma, norm = (t.reshape(-1, *extra, 1) for t in (self.mu, self.sigma, self.norm))
        return ((self.gamma * (x - mu * s) / sigma + self.beta * s) @ self.proj) / norm


# --- spatial maps ----------------------------------------------------------------------------------

def spatial_maps(decomposition: Decomposition, label_features: torch.Tensor,
                 heads: Sequence[tuple[int, int]] | None = None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
    """Zero-shot maps of each label from the per-position attention terms
    (docs/algorithms.md#text-based-decomposition).

    Sum the patch positions' terms over layers and heads (or only ``heads``, a list of (layer,
    head)), dot with each label's embedding, subtract the mean over the labels per position (when
    there are at least two), clip at 0 and min-max normalise per map (a constant map gives zeros).

    label_features: [T, D] normalised label embeddings. Returns float32 [B, T, gh, gw] in [0, 1],
    or [B, T, H, W] resized bilinearly (align_corners=False) when ``size`` = (H, W) is given.
    """
    if not decomposition.spatial:
        raise ValueError("This decomposition has no positions (spatial=False); decompose(..., spatial=True) "
                         "to draw maps.")
    attn = decomposition.attn[:, :, 1:]  # [B, L, N, H, D] patches only
    if heads is None:
        summed = attn.sum(dim=(1, 3))
    else:
        heads = _check_heads(heads, decomposition.num_layers, decomposition.num_heads)
        summed = sum(attn[:, layer, :, head] for layer, head in heads)  # [B, N, D]
    features = label_features.to(summed.device, torch.float32)
    if features.ndim != 2 or features.shape[1] != summed.shape[-1]:
        raise ValueError(f"label_features must be [T, {summed.shape[-1]}] (one embedding per label), "
                         f"got {list(features.shape)}.")
    scores = summed @ features.T  # [B, N, T]
    if scores.shape[-1] > 1:
        scores = scores - scores.mean(-1, keepdim=True)
    scores = scores.clamp(min=0)
    low, high = scores.amin(1, keepdim=True), scores.amax(1, keepdim=True)
    span = high - low
    maps = torch.where(span > 0, (scores - low) / span.clamp_min(1e-12), torch.zeros_like(scores))
    gh, gw = decomposition.grid
    maps = maps.transpose(1, 2).reshape(maps.shape[0], -1, gh, gw)
    if size is not None:
        maps = F.interpolate(maps, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return maps


def segment_maps(maps: torch.Tensor) -> torch.Tensor:
    """Binary foreground masks: each map thresholded at its own mean (see docs/algorithms.md). [..., gh, gw] -> bool."""
    return maps > maps.mean(dim=(-2, -1), keepdim=True)


def _check_heads(heads: Sequence[tuple[int, int]], layers: int, per_layer: int) -> list[tuple[int, int]]:
    out = []
    for item in heads:
        try:
            layer, head = (int(v) for v in item)
        except (TypeError, ValueError):
            raise ValueError(f"Heads are (layer, head) pairs; got {item!r}.") from None
        if not (-layers <= layer < layers and -per_layer <= head < per_layer):
            raise ValueError(f"Head {item!r} does not exist: this model has {layers} layers (0..{layers - 1}) "
                             f"of {per_layer} heads (0..{per_layer - 1}).")
        out.append((layer % layers, head % per_layer))
    if not out:
        raise ValueError("heads is empty: pass at least one (layer, head) pair, or heads=None for all.")
    return out
