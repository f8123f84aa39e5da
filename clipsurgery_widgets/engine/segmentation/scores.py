"""Per-pixel class scores from name cosines: softmax over names, synonyms, area rule, labels.

See docs/algorithms.md#segmentation-inference (step 6).
"""
from __future__ import annotations

from typing import Sequence

import torch


def class_max(values: torch.Tensor, name_class: Sequence[int], num_classes: int) -> torch.Tensor:
    """Per class, the max over its names: [Q, H, W] -> [C, H, W]."""
    rows: list[list[int]] = [[] for _ in range(num_classes)]
    for q, c in enumerate(name_class):
        rows[c].append(q)
    if any(not r for r in rows):
        raise ValueError("Every class needs at least one name.")
    return torch.stack([values[r].amax(dim=0) if len(r) > 1 else values[r[0]] for r in rows])


def class_scores(cosines: torch.Tensor, name_class: Sequence[int], num_classes: int,
                 logit_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, logits), both [C, H, W], from name cosines [Q, H, W].

    P_c = max over c's names of softmax over all Q names of logit_scale * cosines, so the classes'
    probabilities sum to at most 1 per pixel; logits_c = max over c's names of the cosines.
    The softmax is monotone in each input, so the max of the softmax is the softmax entry of the
    best name: P_c = exp(s logits_c - m) / sum_q exp(s cos_q - m), m = max_q s cos_q. Computing it
    that way skips normalising all Q maps (same values up to float rounding).
    """
    logits = class_max(cosines, name_class, num_classes)
    scaled = cosines * logit_scale
    top = scaled.amax(dim=0)
    total = scaled.sub_(top).exp_().sum(dim=0)
    probs = (logits * logit_scale).sub_(top).exp_().div_(total)
    return probs, logits


def class_probabilities(cosines: torch.Tensor, name_class: Sequence[int], num_classes: int,
                        logit_scale: float) -> torch.Tensor:
    """P [C, H, W] of :func:`class_scores` alone."""
    return class_scores(cosines, name_class, num_classes, logit_scale)[0]


def area_rule(probs: torch.Tensor, area_thd: float) -> torch.Tensor:
    """Zero every class c >= 1 that wins at most area_thd of the pixels won by classes >= 1.

    a = argmax_c P_c (first maximum); n_c = pixels with a = c; class c >= 1 is zeroed everywhere
    when n_c <= area_thd * sum_{c' >= 1} n_c'. Class 0 is never zeroed. Returns a new tensor.
    """
    winners = probs.argmax(dim=0).flatten()
    counts = torch.bincount(winners, minlength=probs.shape[0]).to(torch.float64)
    dropped = counts <= area_thd * counts[1:].sum()
    dropped[0] = False
    return probs.masked_fill(dropped[:, None, None], 0.0)


def labels_from(probs: torch.Tensor, prob_thd: float) -> torch.Tensor:
    """int64 [H, W]: argmax_c P_c (first maximum wins), 0 where max_c P_c < prob_thd."""
    labels = probs.argmax(dim=0)  # torch documents argmax as returning the first maximal index
    best = probs.amax(dim=0)
    return labels.masked_fill(best < prob_thd, 0)
