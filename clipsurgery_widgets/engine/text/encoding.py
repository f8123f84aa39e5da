"""Text features: prompt templates and prompt-ensembled label embeddings (docs/algorithms.md#text-features).

The text transformer is causal, so positions after a prompt's pooled (end-of-text) token never
influence it. :func:`encode_texts` therefore runs the transformer over only the first ``L_max``
positions of each batch (the longest prompt, end token included), with the positional embedding
and causal mask sliced to match. The result equals ``model.encode_text`` on the full 77-token
context to float precision, several times faster for short prompts.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TextInputError, UnsupportedModelError
from ..notices import quote, warn_user
from ..precision import computing_in
from .prefix import PromptEncoder

# The 80 OpenAI ImageNet prompt templates (Radford et al., CLIP), in their published order.
OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    'a bad photo of a {}.',
    'a photo of many {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
)

# The five scene templates CLIP Surgery adds (Li et al.; docs/algorithms.md#text-features).
SCENE_TEMPLATES: tuple[str, ...] = (
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)

# The default prompt ensemble: 85 templates, "{}" marks where the label goes.
TEMPLATES: tuple[str, ...] = OPENAI_IMAGENET_TEMPLATES + SCENE_TEMPLATES

DEFAULT_BATCH_SIZE = 256  # prompts per forward pass: bounds memory for thousands of labels


def encode_texts(
    model: Any,
    tokenizer: Callable[..., torch.Tensor] | None,
    labels: Sequence[str],
    templates: Sequence[str] | str | None = TEMPLATES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str | None = None,
) -> torch.Tensor:
    """Prompt-ensembled, L2-normalised label embeddings.

    For each label every template is filled in, each prompt is encoded and L2-normalised, the
    prompts are averaged and the average is L2-normalised again.

    Args:
        model: an open_clip ``CLIP`` module, or a ``LoadedModel`` (its tokenizer is used when
            ``tokenizer`` is None).
        tokenizer: callable ``list[str] -> LongTensor [n, context_length]`` (open_clip tokenizer).
        labels: T label strings; ``""`` and any Unicode are allowed.
        templates: prompt templates with a ``"{}"`` placeholder (default: the 85 of docs/algorithms.md#text-features); a
            single template string; or None to encode the labels as they are.
        batch_size: prompts per forward pass (memory stays bounded for many labels).
        precision: "fp32" (None: fp32, or an enclosing using_precision block's), "bf16", "fp16"
            (CUDA) or "auto"; the text transformer runs under autocast, the sums stay float32.

    Returns:
        float32 tensor [T, D] on the model's device, each row of unit norm.

    Labels whose prompts do not fit the context are truncated by the tokenizer, with a warning
    naming them.
    """
    clip, tokenizer = _unwrap(model, tokenizer)
    labels = _check_labels(labels)
    templates = _check_templates(templates)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}.")
    check_text_tower(clip)

    device = clip.positional_embedding.device
    sums = torch.zeros(len(labels), _output_dim(clip), dtype=torch.float32, device=device)
    truncated: set[int] = set()
    with torch.no_grad(), computing_in(precision, device):
        encoder = PromptEncoder(clip, tokenizer, templates)  # each template's prefix runs once per call
        for label_index, template_index, prompts in _prompt_batches(labels, templates, batch_size):
            tokens = tokenizer(prompts)
            truncated.update(_truncated_labels(tokenizer, tokens, prompts, label_index))
            feats = encoder.encode(tokens.to(device), template_index).float()
            sums.index_add_(0, torch.as_tensor(label_index, device=device), F.normalize(feats, dim=-1))
    if truncated:
        names = [quote(labels[i]) for i in sorted(truncated)]  # long labels quoted to ~60 characters
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        warn_user(f"Label(s) {shown}: prompts exceed the {_context_length(clip)}-token text context and were "
                  f"truncated; shorten the label to use all of it.")
    return F.normalize(sums, dim=-1)


def encode_tokens(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Un-normalised text features [n, D] of token rows [n, context_length] (causal truncation).

    Same result as ``clip.encode_text(tokens)``; when the tower is causal and pools at a token
    position, only the positions up to the last pooled one are computed. The model is read, never
    changed.
    """
    pool = getattr(clip, "text_pool_type", "argmax")
    pooled_at = _pooled_positions(clip, tokens, pool)
    length = tokens.shape[1]
    if _is_causal(clip) and pooled_at is not None:
        length = int(pooled_at.max()) + 1
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens[:, :length]).to(cast_dtype)
    x = x + clip.positional_embedding[:length].to(cast_dtype)
    mask = getattr(clip, "attn_mask", None)
    mask = mask[:length, :length] if mask is not None else None
    x = clip.ln_final(clip.transformer(x, attn_mask=mask))
    x = x[:, -1] if pooled_at is None else x[torch.arange(x.shape[0], device=x.device), pooled_at]
    proj = clip.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


# --- helpers -----------------------------------------------------------------------------------

def _unwrap(model: Any, tokenizer: Callable | None) -> tuple[nn.Module, Callable]:
    clip = getattr(model, "model", model)  # LoadedModel -> its CLIP module
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("encode_texts needs a tokenizer: pass one (e.g. open_clip.get_tokenizer(name)) "
                         "or pass a LoadedModel, which carries its own.")
    return clip, tokenizer


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise TextInputError(f"labels must be a list of strings, not a single string; use [{labels!r}].")
    labels = list(labels) if labels is not None else []
    if not labels:
        raise TextInputError("No labels given: pass at least one label, e.g. ['dog', 'cat'].")
    bad = [label for label in labels if not isinstance(label, str)]
    if bad:
        raise TextInputError(f"Labels must be strings; got {bad[0]!r} ({type(bad[0]).__name__}).")
    return labels


def check_templates(templates: Iterable[str] | str | None) -> tuple[str, ...]:
    """Templates as a tuple, read once (a generator works), each with its "{}"; None -> ("{}",)."""
    return _check_templates(templates)


def _check_templates(templates: Sequence[str] | str | None) -> tuple[str, ...]:
    if templates is None:
        return ("{}",)
    if isinstance(templates, str):
        templates = (templates,)
    templates = tuple(templates)
    if not templates:
        raise TextInputError("templates is empty: pass prompt templates such as ['a photo of a {}.'], "
                             "or templates=None to encode the labels as they are.")
    for template in templates:
        if not isinstance(template, str) or "{}" not in template:
            raise TextInputError(f"Template {template!r} has no '{{}}' placeholder for the label; "
                                 f"write it like 'a photo of a {{}}.'.")
    return templates


def check_text_tower(clip: nn.Module, pooled: bool = True) -> None:
    """Refuse models without open_clip's text transformer (and, when ``pooled``, without one pooled token)."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    missing = [name for name in needed if not hasattr(clip, name)]
    if missing:
        raise UnsupportedModelError(f"The model has no open_clip text transformer (missing {', '.join(missing)}); "
                                    f"use an open_clip CLIP model such as ViT-B-16 or RN50.")
    if pooled and getattr(clip, "text_pool_type", "argmax") not in ("argmax", "eos", "first", "last"):
        raise UnsupportedModelError(f"Text pooling {clip.text_pool_type!r} gives no single text feature; "
                                    f"use a CLIP model whose text tower pools one token.")


def _output_dim(clip: nn.Module) -> int:
    proj = clip.text_projection
    if proj is None:
        return int(clip.ln_final.weight.shape[0])
    return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])


def _context_length(clip: nn.Module) -> int:
    return int(getattr(clip, "context_length", clip.positional_embedding.shape[0]))


def _prompt_batches(labels: list[str], templates: tuple[str, ...],
                    batch_size: int) -> Iterator[tuple[list[int], list[int], list[str]]]:
    """Yield (label index, template index, prompt) lists in batches, without building all prompts at once."""
    index: list[int] = []
    template_index: list[int] = []
    prompts: list[str] = []
    for i, label in enumerate(labels):
        for j, template in enumerate(templates):
            index.append(i)
            template_index.append(j)
            prompts.append(template.replace("{}", label))
            if len(prompts) == batch_size:
                yield index, template_index, prompts
                index, template_index, prompts = [], [], []
    if prompts:
        yield index, template_index, prompts


def _pooled_positions(clip: nn.Module, tokens: torch.Tensor, pool: str) -> torch.Tensor | None:
    """Position each row is pooled at, or None when pooling takes the last context position."""
    if pool == "argmax":  # the end-of-text token has the largest id; first occurrence, as open_clip
        return tokens.argmax(dim=-1)
    if pool == "eos":
        return (tokens == clip.text_eos_id).int().argmax(dim=-1)
    if pool == "first":
        return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    return None  # "last": depends on every position, so no truncation


def _is_causal(clip: nn.Module) -> bool:
    """True when the text mask is the strict upper-triangular -inf causal mask."""
    mask = getattr(clip, "attn_mask", None)
    if mask is None or mask.dim() != 2 or mask.dtype == torch.bool:
        return False
    causal = torch.full(mask.shape, float("-inf"), device=mask.device, dtype=mask.dtype).triu(1)
    return bool(torch.equal(mask, causal))


def _truncated_labels(tokenizer: Callable, tokens: torch.Tensor, prompts: list[str],
                      label_index: list[int]) -> set[int]:
    """Labels whose prompts the tokenizer cut to fit the context."""
    full_rows = (tokens[:, -1] != 0).nonzero().flatten().tolist()  # prompt reaches the last position
    encode = getattr(tokenizer, "encode", None)
    context = tokens.shape[1]
    out = set()
    for row in full_rows:
        # A prompt exactly filling the context is not truncated: count its tokens when we can.
        if encode is None or len(encode(prompts[row])) + 2 > context:
            out.add(label_index[row])
    return out
