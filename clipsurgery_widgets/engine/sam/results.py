"""Records of the SAM refiner: the prompts of one history step, their history, the result of one SAM
call, and the refiner's read-only state built from them."""
from __future__ import annotations

from dataclasses import dataclass, replace

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

    def with_point(self, point: np.ndarray, positive: bool) -> "PromptState":
        """These prompts plus ``point`` (int64 [1, 2] (x, y)); a fed-back mask is dropped."""
        return replace(self, points=np.concatenate([self.points, point]),
                       labels=np.concatenate([self.labels, [np.uint8(bool(positive))]]), mask_input=None)

    def without_point(self, index: int) -> "PromptState":
        """These prompts without point ``index`` (negative counts from the end); a fed-back mask is dropped."""
        count = len(self.points)
        if not -count <= index < count:
            raise IndexError(f"No point {index}: there are {count} points.")
        keep = np.ones(count, dtype=bool)
        keep[index] = False
        return replace(self, points=self.points[keep], labels=self.labels[keep], mask_input=None)

    def nearest_point(self, x: float, y: float, radius: float) -> int | None:
        """Index of the point closest to (x, y) within ``radius`` pixels, or None."""
        if not len(self.points):
            return None
        dist = np.hypot(*(self.points - np.array([x, y])).T)
        index = int(np.argmin(dist))
        return index if dist[index] <= radius else None


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


class PromptHistory:
    """The current prompts with their undo and redo steps (at most ``limit`` undo steps are kept)."""

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self.state = NO_PROMPTS
        self._undo: list[PromptState] = []
        self._redo: list[PromptState] = []

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def push(self, state: PromptState) -> None:
        """Make ``state`` current (its arrays read-only); the old one becomes an undo step, redo is cleared."""
        for arr in (state.points, state.labels):
            frozen(arr)
        self._undo.append(self.state)
        del self._undo[:-self.limit]
        self._redo.clear()
        self.state = state

    def undo(self) -> bool:
        """Step back; False when there is nothing to undo."""
        return self._step(self._undo, self._redo)

    def redo(self) -> bool:
        return self._step(self._redo, self._undo)

    def forget(self) -> None:
        """No prompts and no history (a new image)."""
        self.state = NO_PROMPTS
        self._undo.clear()
        self._redo.clear()

    def _step(self, source: list[PromptState], target: list[PromptState]) -> bool:
        if not source:
            return False
        target.append(self.state)
        self.state = source.pop()
        return True


class RefinerState:
    """What a :class:`~.refiner.SamRefiner` holds for its current image, read-only: the image's
    key and size, the prompts with their undo history, and the last result."""

    def __init__(self) -> None:
        self._image_key: str | None = None
        self._image_size: tuple[int, int] | None = None
        self._history = PromptHistory()
        self._result: SamResult | None = None

    @property
    def _state(self) -> PromptState:
        return self._history.state

    @property
    def image_key(self) -> str | None:
        """Cache key of the image currently set (None before the first :meth:`set_image`)."""
        return self._image_key

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the image currently set."""
        return self._image_size

    @property
    def prompts(self) -> PromptState:
        return self._state

    @property
    def points(self) -> np.ndarray:
        """Current points, int64 [P, 2] (x, y)."""
        return self._state.points

    @property
    def point_labels(self) -> np.ndarray:
        """Current point labels, uint8 [P] (1 positive, 0 negative)."""
        return self._state.labels

    @property
    def box(self) -> np.ndarray | None:
        """Current box, float32 [4] (x0, y0, x1, y1), or None."""
        return self._state.box

    @property
    def result(self) -> SamResult | None:
        """The last prediction for the current prompts (None if there is none)."""
        return self._result

    @property
    def mask(self) -> np.ndarray | None:
        """Best mask of the last prediction, bool [H, W]."""
        return None if self._result is None else self._result.mask

    @property
    def masks(self) -> np.ndarray | None:
        """All masks of the last prediction, bool [M, H, W]."""
        return None if self._result is None else self._result.masks

    @property
    def scores(self) -> np.ndarray | None:
        return None if self._result is None else self._result.scores

    @property
    def can_undo(self) -> bool:
        return self._history.can_undo

    @property
    def can_redo(self) -> bool:
        return self._history.can_redo
