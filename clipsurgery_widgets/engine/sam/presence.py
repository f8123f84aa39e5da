"""Is the text in the image at all? CLIP's global probability of a text among other labels.

A CLIP Surgery map is min-max scaled, so every text gets SAM points, even one for an object that
is not in the photo (docs/algorithms.md#points-for-sam). CLIP's own global prediction can tell:
the softmax over labels of ``logit_scale * cos(image, label)`` (as in :attr:`Explanation.probs`),
here of the text among a list of comparison labels. A probability below a cut-off marks the text
as probably absent; the SAM widget then warns instead of segmenting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..text.labels import parse_labels, parse_target

#: The labels a text is compared with by default: the 20 PASCAL VOC object classes in plain
#: spelling, a short list that covers common photos and costs little to encode once.
DEFAULT_COMPARISON: tuple[str, ...] = (
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
    "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor",
)
#: Below this probability a text counts as absent. With trained CLIP's temperature (100) a cosine
#: 0.05 below the best label's already means a probability under 1 %: an absent object lands far
#: below the cut-off, while a second object or a part of the main one usually keeps a few percent.
#: Untrained weights (temperature about 14) spread the probability nearly evenly, about
#: 1 / (labels + 1), and stay above it.
DEFAULT_ABSENT_BELOW = 0.01


@dataclass(frozen=True)
class LabelPresence:
    """CLIP's global prediction for one text among comparison labels.

    labels: the text first, then the comparison labels (the text and its parts left out);
    probs: float32 [T] softmax over those labels of ``logit_scale * cosine`` with the image.
    """

    labels: tuple[str, ...]
    probs: np.ndarray

    @property
    def text(self) -> str:
        return self.labels[0]

    @property
    def probability(self) -> float:
        """The text's probability among the labels."""
        return float(self.probs[0])

    @property
    def best(self) -> tuple[str, float]:
        """The most probable label and its probability."""
        index = int(np.argmax(self.probs))
        return self.labels[index], float(self.probs[index])

    def absent(self, cutoff: float) -> bool:
        """True when the text's probability is below ``cutoff`` (0 turns the check off)."""
        return self.probability < check_cutoff(cutoff)

    def describe(self) -> str:
        """One line: the text's probability, among how many labels, and the most probable one."""
        best, p = self.best
        top = "" if best == self.text else f"; most probable: “{best}” {p:.0%}"
        return (f"CLIP gives “{self.text}” a probability of {self.probability:.1%} among it and "
                f"{len(self.labels) - 1} other labels{top}")


def check_cutoff(cutoff: Any) -> float:
    """A probability cut-off in [0, 1) as a float; 0 turns the absent-label check off."""
    try:
        value = float(cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"The absent-label cut-off must be a probability, not {cutoff!r}.") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"The absent-label cut-off must be a probability in [0, 1) (0 turns the check off; "
                         f"default {DEFAULT_ABSENT_BELOW}), not {cutoff!r}.")
    return value


def comparison_labels(text: str, compare_with: Sequence[str] | str) -> list[str]:
    """The text followed by the comparison labels, without the text itself or any part of an "a+b" text."""
    parts = {p.casefold() for p in parse_target(text)} | {text.strip().casefold()}
    others = [label for label in parse_labels(compare_with, allow_empty=True) if label.casefold() not in parts]
    if not others:
        raise ValueError(f"Nothing to compare “{text}” with: give at least one other label in compare_with "
                         f"(default: the 20 PASCAL VOC classes), e.g. 'cat, dog, person'.")
    return [text.strip(), *others]


def label_presence(explainer: Any, image: Any, text: str, compare_with: Sequence[str] | str = DEFAULT_COMPARISON,
                   size: int | tuple[int, int] = 224) -> LabelPresence:
    """CLIP's global probability of ``text`` among ``compare_with`` on ``image``.

    Args:
        explainer: an :class:`~clipsurgery_widgets.engine.explainer.Explainer` (image tokens and
            label features are its cached ones, so after :meth:`explain` of the same image and
            size only the comparison labels' text features are new).
        image: RGB uint8 [H, W, 3] or anything the explainer reads.
        text: one target; "a+b" uses the normalised mean of its parts' features.
        compare_with: the other labels (list or comma-separated string).
        size: CLIP input size S or (S_h, S_w).

    Returns:
        :class:`LabelPresence` with probs float32 [T] = softmax(logit_scale * cos(global token, label)).
    """
    labels = comparison_labels(text, compare_with)
    rgb = explainer.prepare_image(image)
    tokens = explainer.image_tokens(rgb, size)
    image_feature = F.normalize(tokens.raw[0, 0].float(), dim=-1)  # token 0: CLIP's own image embedding
    text_features = explainer.target_features(labels).float()
    logits = explainer.model.logit_scale * (image_feature @ text_features.T)
    probs = torch.softmax(logits, dim=-1).numpy().astype(np.float32)
    return LabelPresence(tuple(labels), probs)
