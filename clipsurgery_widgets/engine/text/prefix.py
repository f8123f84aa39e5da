"""Prompt ensembles with each template's prefix computed once (docs/algorithms.md#text-features).

The text transformer is causal: position i attends to positions <= i only. In the prompt
"a bad photo of a dog." the positions of "<start> a bad photo of a" therefore have the same hidden
states, and every layer the same keys and values, whatever the label is. :class:`PromptEncoder`
runs those prefixes once per call (all templates in one batch) and then, for each prompt, only its
label + suffix tokens up to the pooled end token: in every layer their queries attend over the
template's cached prefix keys/values followed by their own keys (causally). Rows are grouped into
chunks of similar length so that each chunk is truncated to its own longest suffix.

Exactness guard: a prompt uses the cached prefix only if its first P tokens ARE the prefix's tokens
(the tokenizer could merge across the boundary for unusual labels) and its pooled token lies after
them; other rows, and models this does not apply to, take :func:`encode_tokens`' path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..towers.ops import linear

# Rows per suffix pass are sorted by length first, so padding to a chunk's longest suffix stays small.
MIN_CHUNK = 32


@dataclass(frozen=True)
class PrefixStates:
    """Every layer's keys and values of the template prefixes.

    lengths: [G] prefix length P_g per template (start token included).
    keys, values: one [G, H, P_max, d] tensor per layer (positions >= P_g are padding, never attended).
    """

    lengths: torch.Tensor
    tokens: torch.Tensor  # [G, P_max] the prefix token ids (0-padded)
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]


def shares_prefixes(clip: nn.Module) -> bool:
    """True when prefix reuse is exact for this text tower: causal mask, one pooled end token, plain blocks."""
    from .encoding import _is_causal  # the one causal-mask check of the text tower

    if getattr(clip, "text_pool_type", "argmax") not in ("argmax", "eos") or not _is_causal(clip):
        return False
    blocks = getattr(getattr(clip, "transformer", None), "resblocks", None)
    if blocks is None or not len(blocks):
        return False
    for block in blocks:
        attn = getattr(block, "attn", None)
        if (not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim
                or attn.bias_k is not None or hasattr(block, "ln_1_kv")
                or not all(hasattr(block, name) for name in ("ln_1", "ln_2", "ls_1", "ls_2", "mlp"))):
            return False
    return True


class PromptEncoder:
    """Un-normalised features of prompts built from ``templates``, sharing each template's prefix.

    encode(tokens [n, context], template_index [n]) -> [n, D], equal to ``encode_tokens(clip, tokens)``
    to float rounding. The prefix states are computed on first use and kept for this object's life
    (about 2 * layers * templates * P_max * width floats: ~40 MB for ViT-B-16's text tower and 85 templates).
    """

    def __init__(self, clip: nn.Module, tokenizer: Callable[..., torch.Tensor], templates: Sequence[str]):
        self.clip = clip
        self.tokenizer = tokenizer
        self.templates = tuple(templates)
        self.enabled = shares_prefixes(clip)
        self._states: PrefixStates | None = None

    def encode(self, tokens: torch.Tensor, template_index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        from .encoding import _pooled_positions, encode_tokens

        if not self.enabled:
            return encode_tokens(self.clip, tokens)
        states = self._prefix_states(tokens.device)
        group = torch.as_tensor(template_index, dtype=torch.long, device=tokens.device)
        pooled = _pooled_positions(self.clip, tokens, getattr(self.clip, "text_pool_type", "argmax"))
        starts = states.lengths[group]
        usable = self._matches_prefix(tokens, group, starts) & (pooled >= starts)
        out: torch.Tensor | None = None
        rows = usable.nonzero().flatten()
        others = (~usable).nonzero().flatten()
        parts = []
        if len(rows):
            parts.append((rows, self._suffix_features(states, tokens[rows], group[rows], starts[rows], pooled[rows])))
        if len(others):
            parts.append((others, encode_tokens(self.clip, tokens[others])))
        for index, feats in parts:
            if out is None:
                out = feats.new_empty(tokens.shape[0], feats.shape[1])
            out[index] = feats
        return out

    # --- prefix states, computed once --------------------------------------------------------------

    def _prefix_states(self, device: torch.device) -> PrefixStates:
        if self._states is None:
            prefixes = [template[: template.index("{}")] for template in self.templates]
            tokens = self.tokenizer(prefixes).to(device)  # [G, context]: <start> prefix <end> 0...
            # The prefix is everything before the end token: <start> and the template's words.
            lengths = ((tokens != 0).sum(dim=1) - 1).clamp(min=1)
            width = int(lengths.max())
            tokens = tokens[:, :width] * (torch.arange(width, device=device) < lengths[:, None])
            keys, values = _run_prefixes(self.clip, tokens)
            self._states = PrefixStates(lengths=lengths, tokens=tokens, keys=keys, values=values)
        return self._states

    def _matches_prefix(self, tokens: torch.Tensor, group: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """[n] bool: the row's first P_g tokens are its template's prefix tokens."""
        states = self._states
        width = states.tokens.shape[1]
        head = tokens[:, :width]
        if head.shape[1] < width:
            return torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        inside = torch.arange(width, device=tokens.device) < starts[:, None]
        return ((head == states.tokens[group]) | ~inside).all(dim=1)

    def _suffix_features(self, states: PrefixStates, tokens: torch.Tensor, group: torch.Tensor,
                         starts: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Features of rows whose prefixes are cached, in chunks of similar suffix length."""
        lengths = pooled - starts + 1  # suffix tokens up to and including the pooled one
        order = torch.argsort(lengths, stable=True)
        feats = None
        for chunk in _length_chunks(lengths[order], tokens.shape[0]):
            rows = order[chunk]
            span = int(lengths[rows].max())
            part = _run_suffixes(self.clip, states, tokens[rows], group[rows], starts[rows], span)
            part = part[torch.arange(len(rows), device=part.device), lengths[rows] - 1]  # [r, C] pooled
            part = _project(self.clip, self.clip.ln_final(part))
            if feats is None:
                feats = part.new_empty(tokens.shape[0], part.shape[1])
            feats[rows] = part
        return feats


def _length_chunks(sorted_lengths: torch.Tensor, total: int) -> list[slice]:
    """Split rows sorted by length where a chunk's longest suffix grows past 1.5x its shortest."""
    values = sorted_lengths.tolist()
    chunks, begin = [], 0
    for i in range(1, total + 1):
        if i == total or (i - begin >= MIN_CHUNK and values[i] > 1.5 * values[begin]):
            chunks.append(slice(begin, i))
            begin = i
    return chunks


def _heads(attn: nn.MultiheadAttention, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, H, T, d]: views of one in-projection of h [B, T, C]."""
    qkv = linear(h, attn.in_proj_weight, attn.in_proj_bias)
    b, t, c3 = qkv.shape
    return qkv.view(b, t, 3, attn.num_heads, c3 // (3 * attn.num_heads)).permute(2, 0, 3, 1, 4).unbind(0)


def _finish_block(block: nn.Module, x: torch.Tensor, attended: torch.Tensor) -> None:
    """x += ls_1(out_proj(attended)); x += ls_2(mlp(ln_2(x))), in place. attended: [B, H, T, d]."""
    b, heads, t, d = attended.shape
    merged = attended.transpose(1, 2).reshape(b, t, heads * d)
    x += block.ls_1(linear(merged, block.attn.out_proj.weight, block.attn.out_proj.bias))
    h = block.ln_2(x)
    mlp = block.mlp
    if isinstance(mlp, nn.Sequential):
        for layer in mlp:
            h = linear(h, layer.weight, layer.bias) if type(layer) is nn.Linear else layer(h)
    else:
        h = mlp(h)
    x += block.ls_2(h)


def _embed(clip: nn.Module, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    cast_dtype = clip.transformer.get_cast_dtype()
    return clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[positions].to(cast_dtype)


def _run_prefixes(clip: nn.Module, tokens: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Causal pass over the prefix rows [G, P_max]; returns every layer's keys and values [G, H, P_max, d]."""
    x = _embed(clip, tokens, torch.arange(tokens.shape[1], device=tokens.device))
    keys, values = [], []
    for block in clip.transformer.resblocks:
        q, k, v = _heads(block.attn, block.ln_1(x))
        keys.append(k.contiguous())  # gathered per suffix chunk: contiguous rows gather fastest
        values.append(v.contiguous())
        _finish_block(block, x, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    return tuple(keys), tuple(values)


def _run_suffixes(clip: nn.Module, states: PrefixStates, tokens: torch.Tensor, group: torch.Tensor,
                  starts: torch.Tensor, span: int) -> torch.Tensor:
    """Hidden states [r, span, C] of each row's tokens from its prefix end on, over cached prefix keys."""
    device = tokens.device
    steps = torch.arange(span, device=device)
    positions = starts[:, None] + steps  # [r, span] absolute positions
    context = clip.positional_embedding.shape[0]
    suffix = tokens.gather(1, positions.clamp(max=tokens.shape[1] - 1))
    x = _embed(clip, suffix, positions.clamp(max=context - 1))  # positions past the pooled token: never read
    width = states.tokens.shape[1]
    # Row r, query i attends prefix keys j < P_r and its own suffix keys j <= i.
    prefix_ok = (torch.arange(width, device=device) < starts[:, None])[:, None, :].expand(-1, span, -1)
    causal = (steps[None, :] <= steps[:, None])[None].expand(len(tokens), -1, -1)
    mask = torch.cat([prefix_ok, causal], dim=2)[:, None]  # [r, 1, span, P_max + span]
    for layer, block in enumerate(clip.transformer.resblocks):
        q, k, v = _heads(block.attn, block.ln_1(x))
        cached_k, cached_v = states.keys[layer][group], states.values[layer][group]
        k = torch.cat([cached_k.to(k.dtype), k], dim=2)
        v = torch.cat([cached_v.to(v.dtype), v], dim=2)
        _finish_block(block, x, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    return x


def _project(clip: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    proj = clip.text_projection
    if proj is None:
        return pooled
    return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
