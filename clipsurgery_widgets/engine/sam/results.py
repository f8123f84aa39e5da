"""Records of the SAM refiner: the prompts of one history step and the result of one SAM call."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def frozen(arr: np.ndarray | None) -> np.ndarray | None:
    """Mark an array read-only (results and history entries are shared, never copied)."""
    if arr is not None:
        arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class PromptState:
    """One entry of the prompt history.

    points: int64 [P, 2] (x, y) pixels of the original image; labels: uint8 [P] (1 positive,
    0 negative); box: float32 [4] (x0, y0, x1, y1) or None; mask_input: float32 [1, h, w] low-res
    logits fed back to SAM (h = w = 256 for real SAM) or None.
    """

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return len(self.points) == 0 and self.box is None and self.mask_input is None


NO_PROMPTS = PromptState(frozen(np.zeros((0, 2), np.int64)), frozen(np.zeros((0,), np.uint8)))


@dataclass(frozen=True)
class SamResult:
    """One SAM call.

    masks: bool [M, H, W] (M = 3 with multimask, else 1); scores: float32 [M] (SAM's predicted
    IoU); logits: float32 [M, h, w] low-resolution mask logits (h = w = 256 for real SAM, 64 for
    the tiny one); best: index of the highest score; points / labels / box: the prompts sent.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    best: int
    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None
    image_key: str

    @property
    def mask(self) -> np.ndarray:
        """The best mask, bool [H, W]."""
        return self.masks[self.best]

    @property
    def score(self) -> float:
        return float(self.scores[self.best])

    @property
    def best_logits(self) -> np.ndarray:
        """Low-res logits of the best mask [h, w]: what :meth:`SamRefiner.refine` feeds back."""
        return self.logits[self.best]
