"""Feature surgery: per-token label scores with the redundant features removed (docs/algorithms.md#feature-surgery).

Multi-label mode uses a closed form of the authors' 4-D formulation. Their code forms the
element-wise products F_ic * G_tc ([B, 1+N, T, C]), weights them by w_t, subtracts the mean over
labels and sums over channels. Summing over channels first gives the same numbers with only
[B, 1+N, T] memory:

    score_it = w_t S_it - (1/T) sum_t' w_t' S_it',   S = F G^T,   w = T softmax_t(2 S_0t).
"""
from __future__ import annotations

import torch

MODES = ("auto", "labels", "empty", "none")


def feature_surgery(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    redundant: torch.Tensor | None = None,
    mode: str = "auto",
) -> torch.Tensor:
    """Feature-surgery scores of every image token against every label.

    Args:
        image_feats: [B, 1+N, D] image tokens, L2-normalised per token (token 0 = global token).
        text_feats: [T, D] L2-normalised label features.
        redundant: [D] prompt-ensembled feature of the empty string ``""`` (needed by "empty").
        mode: "labels" (multi-label redundancy, w computed per image), "empty" (subtract the
            empty-string feature: score = F_i . (G_t - r), r not re-normalised), "none" (raw
            cosine), or "auto" ("labels" when T >= 2, "empty" when T == 1).

    Returns:
        [B, 1+N, T] scores (token 0 included), dtype of ``image_feats``.
    """
    mode = resolve_mode(mode, text_feats, redundant)
    _check_shapes(image_feats, text_feats)
    text_feats = text_feats.to(image_feats)
    if mode == "empty":
        redundant = _check_redundant(redundant, image_feats)
        return image_feats @ (text_feats - redundant).T
    cosine = image_feats @ text_feats.T  # [B, 1+N, T]
    if mode == "none":
        return cosine
    num_labels = text_feats.shape[0]
    weights = num_labels * torch.softmax(2 * cosine[:, 0, :], dim=-1)  # [B, T], one w per image
    weighted = weights[:, None, :] * cosine
    return weighted.sub_(weighted.mean(dim=-1, keepdim=True))  # in place: one [B, 1+N, T] buffer less


def resolve_mode(mode: str, text_feats: torch.Tensor, redundant: torch.Tensor | None = None) -> str:
    """The concrete mode ("labels", "empty" or "none") that ``mode`` means for these labels."""
    if mode not in MODES:
        raise ValueError(f"Unknown feature-surgery mode {mode!r}; choose one of {', '.join(map(repr, MODES))}.")
    if not isinstance(text_feats, torch.Tensor) or text_feats.dim() != 2 or text_feats.shape[0] < 1:
        shape = tuple(text_feats.shape) if isinstance(text_feats, torch.Tensor) else type(text_feats).__name__
        raise ValueError(f"text_feats must be a [T, D] tensor with T >= 1, got {shape}.")
    num_labels = text_feats.shape[0]
    if mode == "auto":
        mode = "labels" if num_labels >= 2 else "empty"
        if mode == "empty" and redundant is None:
            raise ValueError("With a single label, feature surgery subtracts the empty-string feature: pass "
                             "redundant=encode_texts(model, tokenizer, [''])[0], or use mode='none'.")
    if mode == "labels" and num_labels < 2:
        raise ValueError("mode='labels' needs at least 2 labels (with one, every score is 0); use "
                         "mode='empty' with redundant=..., or mode='auto'.")
    if mode == "empty" and redundant is None:
        raise ValueError("mode='empty' needs redundant=, the prompt-ensembled feature of the empty "
                         "string: encode_texts(model, tokenizer, [''])[0].")
    return mode


def _check_shapes(image_feats: torch.Tensor, text_feats: torch.Tensor) -> None:
    if not isinstance(image_feats, torch.Tensor) or image_feats.dim() != 3 or image_feats.shape[1] < 1:
        shape = tuple(image_feats.shape) if isinstance(image_feats, torch.Tensor) else type(image_feats).__name__
        raise ValueError(f"image_feats must be a [B, 1+N, D] tensor of image tokens, got {shape}; "
                         f"add a batch dimension with .unsqueeze(0) for one image.")
    if image_feats.shape[-1] != text_feats.shape[-1]:
        raise ValueError(f"Feature sizes differ: image tokens have D={image_feats.shape[-1]}, labels have "
                         f"D={text_feats.shape[-1]}; encode both with the same model.")


def _check_redundant(redundant: torch.Tensor, image_feats: torch.Tensor) -> torch.Tensor:
    redundant = torch.as_tensor(redundant).to(image_feats)
    if redundant.dim() == 2 and redundant.shape[0] == 1:
        redundant = redundant[0]
    if redundant.shape != (image_feats.shape[-1],):
        raise ValueError(f"redundant must be one [D={image_feats.shape[-1]}] feature, got "
                         f"{tuple(redundant.shape)}.")
    return redundant
