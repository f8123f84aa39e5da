"""Segment Anything refinement: masks from clicks, boxes, or a CLIP Surgery map.

:class:`SamRefiner` wraps a ``segment_anything`` ``Sam`` model and a ``SamPredictor``. It keeps
the image embedding of each image (``embeddings``: bounded in-memory cache, optional disk
cache keyed by image content and model weights), the current prompts with an undo/redo history,
and the last prediction. :func:`load_sam_from_env` builds one from ``CLIPSURGERY_SAM``.

Thread safety: every public method of SamRefiner may be called from any thread. Prompt state and
predictions are guarded by one lock, held only briefly. The embedding itself is computed outside
that lock (one computation at a time), so a widget can run :meth:`set_image` in a background
thread while its UI thread keeps reading state; when two ``set_image`` calls overlap, the later
call wins.

Related modules: ``results`` (PromptState, PromptHistory, RefinerState, SamResult), ``prompts`` (input checks,
points from a map), ``instances`` (one prompt per object), ``models`` (tiny SAM, checkpoints,
fingerprints), ``loader`` (the SAM named by ``CLIPSURGERY_SAM``).
"""
from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..images import load_image
from ..model_guard import WeightsWatch
from ..precision import Precision, check_precision
from .embeddings import (Embedding, EmbeddingCache, Progress, compute_embedding, embedding_key, install_embedding)
from .instances import InstanceMasks, InstancePrompt, instance_prompts
from .loader import (  # noqa: F401  (re-exported)
    DEFAULT_SAM_CHOICE,
    SAM_ENV,
    load_sam_from_env,
    refiner_from_checkpoint,
    refiner_from_pretrained,
)
from .models import SAM_ARCHITECTURES, TINY_SAM_SEED, build_tiny_sam, module_fingerprint  # noqa: F401
from .prompts import check_box, check_points, make_state, points_from_map
from .results import NO_PROMPTS, PromptState, RefinerState, SamResult, frozen


class SamRefiner(RefinerState):
    """Interactive SAM on one image at a time; see the module docstring for thread safety.

    Args:
        sam: any ``segment_anything.modeling.Sam`` (never modified; it stays on its device).
        cache_dir: optional directory for embeddings on disk (one ``.pt`` per image and model).
        max_cached_images: how many embeddings to keep in memory.
        fingerprint: identifies the weights in cache keys; by default a hash of the model's
            parameters, computed on first use (pass one to skip that). In-place weight changes are
            noticed (``model_guard.WeightsWatch``; after ``p.data`` edits call ``watch.refresh()``): the
            fingerprint becomes a hash of the new weights, so old embeddings are neither served nor stored.
        auto_predict: editing helpers (add_point, undo, ...) re-run SAM at once when an image is set.
        multimask: ask SAM for 3 masks and keep the best (default for every call).
        precision: the image encoder's (autocast; embeddings cached per precision): None (fp32 or a
            ``using_precision`` block's), "fp32", "bf16", "fp16" (CUDA), "auto"; set_image can override it.
    """

    def __init__(self, sam: nn.Module, *, cache_dir: str | os.PathLike | None = None, max_cached_images: int = 4,
                 fingerprint: str | None = None, auto_predict: bool = True, multimask: bool = True,
                 precision: str | None = None) -> None:
        from segment_anything import SamPredictor
        from segment_anything.modeling import Sam

        if not isinstance(sam, Sam):
            raise TypeError(f"SamRefiner needs a segment_anything Sam model, not {type(sam).__name__}; build one with "
                            f"SamRefiner.from_checkpoint(path, model_type=...) or SamRefiner.from_pretrained('vit_b').")
        self.model = sam
        self.predictor = SamPredictor(sam)
        self.embeddings = EmbeddingCache(sam, cache_dir, max_cached_images)
        self.auto_predict = auto_predict
        self.multimask = multimask
        self.precision = None if precision is None else check_precision(precision)
        self._fingerprint = fingerprint           # the initial one, until the watch starts
        self._watch: WeightsWatch | None = None
        self._lock = threading.RLock()            # prompt state and predictor
        self._compute_lock = threading.Lock()     # one embedding computation at a time
        self._fingerprint_lock = threading.Lock()
        self._requested = 0                       # set_image tickets: the latest call wins
        super().__init__()  # the image key and size, the prompts with their history, the result
        self.embeddings_computed = 0              # how many times the image encoder ran

    # --- construction (see .loader) -----------------------------------------------------------

    from_checkpoint = classmethod(refiner_from_checkpoint)
    from_pretrained = classmethod(refiner_from_pretrained)

    # --- read-only state ------------------------------------------------------------------------

    @property
    def watch(self) -> WeightsWatch:
        """Watches the weights for in-place changes (started on first use: hashing them takes a moment)."""
        with self._fingerprint_lock:
            if self._watch is None:
                self._watch = WeightsWatch(self.model, self._fingerprint or module_fingerprint(self.model))
            return self._watch

    @property
    def fingerprint(self) -> str:
        """Identifies the weights in cache keys; checked on every read (see ``fingerprint`` above)."""
        return self.watch.fingerprint()

    @property
    def cache_dir(self) -> Path | None:
        """Directory of the disk cache of embeddings (None: memory only)."""
        return self.embeddings.cache_dir

    @property
    def max_cached_images(self) -> int:
        return self.embeddings.max_items

    # --- the image ------------------------------------------------------------------------------

    def image_key_of(self, image: Any, precision: str | None = None) -> str:
        """The cache key :meth:`set_image` would give ``image`` (compare with :attr:`image_key`)."""
        return embedding_key(self.fingerprint, load_image(image), self.model.image_encoder.img_size,
                             Precision.resolve(precision, self.model.device, own=self.precision).name)

    def set_image(self, image: Any, progress: Progress | None = None, precision: str | None = None) -> bool:
        """Make ``image`` the current image, computing its SAM embedding only if no cache has it.

        Args:
            image: RGB uint8 [H, W, 3], or anything :func:`load_image` reads (path, PIL image, ...).
            progress: optional ``progress(fraction, message)``, called from this thread. An
                exception it raises abandons the computation and propagates (nothing is cached).
            precision: this image's precision; None: the refiner's (see the class docstring).

        A different image than the current one clears the prompts, their history and the result.
        Returns False if a later ``set_image`` call (another thread) took over before this one
        finished; True when this image is now set. Safe to run in a background thread.
        """
        report = progress or (lambda fraction, message: None)
        rgb = load_image(image)
        p = Precision.resolve(precision, self.model.device, own=self.precision)
        with self._lock:
            self._requested += 1
            ticket = self._requested
        fingerprint, signature = self.watch.snapshot()  # the weights as they are now
        key = embedding_key(fingerprint, rgb, self.model.image_encoder.img_size, p.name)
        embedding = self.embeddings.get(key, fingerprint)
        if embedding is None:
            with self._compute_lock:
                embedding = self.embeddings.get(key, fingerprint)  # another thread may have computed it
                if embedding is None:
                    embedding = compute_embedding(self.model, self.predictor.transform, rgb, report, p.name)
                    self.embeddings_computed += 1
                    if self.watch.unchanged(signature):  # else it belongs to no fingerprint: not cached
                        self.embeddings.put(key, embedding, fingerprint)
        with self._lock:
            if ticket != self._requested:
                return False
            self._install(key, embedding)
        report(1.0, "image ready")
        return True

    def clear_cache(self, disk: bool = False) -> None:
        """Forget cached embeddings (memory; also this model's files in ``cache_dir`` with ``disk``)."""
        self.embeddings.clear(disk)

    # --- prompts and predictions ----------------------------------------------------------------

    def predict(self, points: Any = None, labels: Any = None, box: Any = None, mask_input: Any = None,
                multimask: bool | None = None) -> SamResult:
        """Run SAM and keep the result.

        With no prompt arguments, runs on the current prompts. With any of them, they replace the
        current prompts (what is not given is empty; recorded for undo).

        Args:
            points: [P, 2] (x, y) pixels of the original image.
            labels: [P], 1 positive / 0 negative (default: all positive).
            box: [4] (x0, y0, x1, y1) pixels; clipped to the image.
            mask_input: low-res logits [1, h, w] or [h, w], e.g. ``result.best_logits``.
            multimask: 3 masks, keep the best (default ``self.multimask``).
        """
        with self._lock:
            self._require_image()
            if points is not None or labels is not None or box is not None or mask_input is not None:
                self._push(self._make_state(points, labels, box, mask_input))
            return self._run(self._state, multimask)

    def refine(self, multimask: bool | None = None) -> SamResult:
        """Run again on the current prompts, feeding the previous best mask's logits as mask_input."""
        with self._lock:
            self._require_image()
            if self._result is None:
                raise RuntimeError("Nothing to refine yet: call predict() (or add a point) first.")
            logits = self._result.best_logits[None].astype(np.float32)
            self._push(replace(self._state, mask_input=frozen(logits)))
            return self._run(self._state, multimask)

    def add_point(self, x: float, y: float, positive: bool = True) -> SamResult | None:
        """Add a click. Returns the new result (when an image is set and auto_predict is on)."""
        with self._lock:
            point = check_points(np.array([[x, y]]), self._image_size)
            return self._edit(self._state.with_point(point, positive))

    def remove_point(self, index: int) -> SamResult | None:
        """Remove the point at ``index`` (negative indices count from the end)."""
        with self._lock:
            return self._edit(self._state.without_point(index))

    def point_near(self, x: float, y: float, radius: float = 10.0) -> int | None:
        """Index of the point closest to (x, y) within ``radius`` pixels, or None."""
        with self._lock:
            return self._state.nearest_point(x, y, radius)

    def remove_point_near(self, x: float, y: float, radius: float = 10.0) -> SamResult | None:
        """Remove the point closest to (x, y) if it is within ``radius`` pixels; else change nothing."""
        with self._lock:
            index = self.point_near(x, y, radius)
            return self._result if index is None else self.remove_point(index)

    def set_box(self, box: Any) -> SamResult | None:
        """Set (or with None remove) the box prompt [x0, y0, x1, y1]."""
        with self._lock:
            return self._edit(replace(self._state, box=check_box(box, self._image_size), mask_input=None))

    def clear(self) -> None:
        """Remove all prompts (undoable) and the result."""
        with self._lock:
            self._edit(NO_PROMPTS)

    def reset_to(self, points: Any, labels: Any = None, box: Any = None) -> SamResult | None:
        """Replace all prompts at once (undoable)."""
        with self._lock:
            return self._edit(self._make_state(points, labels, box, None))

    def undo(self) -> bool:
        """Go back one prompt state (re-predicting). False when there is nothing to undo."""
        with self._lock:
            if not self._history.undo():
                return False
            self._after_edit()
            return True

    def redo(self) -> bool:
        with self._lock:
            if not self._history.redo():
                return False
            self._after_edit()
            return True

    # --- from CLIP Surgery maps -----------------------------------------------------------------

    def points_from_scores(self, scores: Any, grid: tuple[int, int], image_size: tuple[int, int] | None = None,
                           threshold: float = 0.8, downsample: int = 2, multimask: bool | None = None, *,
                           threshold_mode: str = "value", max_points: int | None = None) -> SamResult:
        """Prompts from a surgery map (docs/algorithms.md#points-for-sam), then one SAM call; best of 3.

        ``scores``: patch scores [N] of one label, or [N, P] for "a+b"; ``threshold_mode``, ``max_points``: see
        :func:`.prompts.points_from_map`. The points become the current prompts (undoable) and the result's.
        """
        with self._lock:
            size = self._check_image_size(image_size)
            points, labels = points_from_map(scores, grid, size, threshold, downsample, threshold_mode=threshold_mode,
                                             max_points=max_points)
            if len(points) == 0:
                raise ValueError("The map gave no points (a constant map has no cells above the threshold): "
                                 "check the scores, or click points yourself.")
            self._push(self._make_state(points, labels, None, None))
            return self._run(self._state, multimask)

    def instance_prompts(self, patch_scores: Any, grid: tuple[int, int], image_size: tuple[int, int] | None = None,
                         threshold: float = 0.8, **kwargs: Any) -> list[InstancePrompt]:
        """Per-region prompts from a surgery map; see :func:`instance_prompts`."""
        return instance_prompts(patch_scores, grid, self._check_image_size(image_size), threshold, **kwargs)

    def predict_instances(self, patch_scores: Any, grid: tuple[int, int], image_size: tuple[int, int] | None = None,
                          threshold: float = 0.8, multimask: bool | None = None, **kwargs: Any) -> InstanceMasks:
        """One SAM call per connected region of the thresholded map -> one mask per instance.

        Leaves the interactive prompts and result untouched.
        """
        with self._lock:
            self._require_image()
            prompts = self.instance_prompts(patch_scores, grid, image_size, threshold, **kwargs)
            results = tuple(self._run(PromptState(p.points, p.labels), multimask, record=False) for p in prompts)
            return InstanceMasks(tuple(prompts), results)

    # --- internals ------------------------------------------------------------------------------

    def _require_image(self) -> None:
        if self._image_key is None:
            raise RuntimeError("No image set: call refiner.set_image(image) first.")

    def _check_image_size(self, image_size: tuple[int, int] | None) -> tuple[int, int]:
        if self._image_size is None:
            raise RuntimeError("No image set: call refiner.set_image(image) first.")
        if image_size is not None and tuple(int(v) for v in image_size) != self._image_size:
            raise ValueError(f"image_size {tuple(image_size)} differs from the image set in SAM {self._image_size}: "
                             f"the map must come from the same image (pass the original image's (H, W)).")
        return self._image_size

    def _make_state(self, points: Any, labels: Any, box: Any, mask_input: Any) -> PromptState:
        return make_state(points, labels, box, mask_input, self._image_size,
                          tuple(self.model.prompt_encoder.mask_input_size))

    def _push(self, state: PromptState) -> None:
        self._history.push(state)

    def _edit(self, state: PromptState) -> SamResult | None:
        self._push(state)
        self._after_edit()
        return self._result

    def _after_edit(self) -> None:
        if self._state.empty or self._image_key is None:
            self._result = None
        elif self.auto_predict:
            self._run(self._state, None)
        else:
            self._result = None  # stale: predict() to update

    def _run(self, state: PromptState, multimask: bool | None, record: bool = True) -> SamResult:
        self._require_image()
        if state.empty:
            raise ValueError("No prompts: add a point (add_point / predict(points=...)), a box, or a mask_input.")
        has_points = len(state.points) > 0
        masks, scores, logits = self.predictor.predict(
            point_coords=state.points.astype(np.float32) if has_points else None,
            point_labels=state.labels.astype(np.int64) if has_points else None,
            box=None if state.box is None else state.box.copy(),
            mask_input=None if state.mask_input is None else state.mask_input.copy(),
            multimask_output=self.multimask if multimask is None else multimask,
        )
        scores = np.asarray(scores, dtype=np.float32)
        result = SamResult(masks=frozen(np.asarray(masks, dtype=bool)), scores=frozen(scores),
                           logits=frozen(np.asarray(logits, dtype=np.float32)), best=int(np.argmax(scores)),
                           points=state.points, labels=state.labels, box=state.box, image_key=self._image_key)
        if record:
            self._result = result
        return result

    def _install(self, key: str, embedding: Embedding) -> None:
        install_embedding(self.predictor, embedding)
        if key != self._image_key:
            self._history.forget()
            self._result = None
        self._image_key = key
        self._image_size = embedding.original_size


__all__ = ["SamRefiner", "SamResult", "PromptState", "InstancePrompt", "InstanceMasks", "build_tiny_sam",
           "instance_prompts", "load_sam_from_env", "SAM_ARCHITECTURES", "SAM_ENV", "TINY_SAM_SEED"]
