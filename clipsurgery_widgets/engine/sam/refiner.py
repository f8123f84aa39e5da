"""Segment Anything refinement: masks from clicks, boxes, or a CLIP Surgery map.

:class:`SamRefiner` wraps a ``segment_anything`` ``Sam`` model and a ``SamPredictor``. It keeps
the image embedding of each image (``sam_embeddings``: bounded in-memory cache, optional disk
cache keyed by image content and model weights), the current prompts with an undo/redo history,
and the last prediction. :func:`load_sam_from_env` builds one from ``CLIPSURGERY_SAM``.

Thread safety: every public method of SamRefiner may be called from any thread. Prompt state and
predictions are guarded by one lock, held only briefly. The embedding itself is computed outside
that lock (one computation at a time), so a widget can run :meth:`set_image` in a background
thread while its UI thread keeps reading state; when two ``set_image`` calls overlap, the later
call wins.

Related modules: ``sam_results`` (PromptState, SamResult), ``sam_prompts`` (input checks),
``sam_instances`` (one prompt per object), ``sam_models`` (tiny SAM, checkpoints, fingerprints).
"""
from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelLoadError, UnsupportedModelError
from ..images import load_image
from ..maps import combine_targets, map_to_points
from .embeddings import (
    Embedding,
    EmbeddingCache,
    Progress,
    compute_embedding,
    embedding_key,
)
from .instances import InstanceMasks, InstancePrompt, instance_prompts
from .models import (
    SAM_ARCHITECTURES,
    TINY_SAM_SEED,
    build_tiny_sam,
    load_sam_checkpoint,
    module_fingerprint,
)
from .prompts import as_numpy, check_box, check_points, make_state
from .results import NO_PROMPTS, PromptState, SamResult, frozen

SAM_ENV = "CLIPSURGERY_SAM"
DEFAULT_SAM_SPEC = "vit_b"
_HISTORY_LIMIT = 200


class SamRefiner:
    """Interactive SAM on one image at a time; see the module docstring for thread safety.

    Args:
        sam: any ``segment_anything.modeling.Sam`` (never modified; it stays on its device).
        cache_dir: optional directory for embeddings on disk (one ``.pt`` per image and model).
        max_cached_images: how many embeddings to keep in memory.
        fingerprint: identifies the weights in cache keys; by default a hash of the model's
            parameters, computed on first use (pass one to skip that, or if you change weights).
        auto_predict: editing helpers (add_point, undo, ...) re-run SAM at once when an image is set.
        multimask: ask SAM for 3 masks and keep the best (default for every call).
    """

    def __init__(self, sam: nn.Module, *, cache_dir: str | os.PathLike | None = None, max_cached_images: int = 4,
                 fingerprint: str | None = None, auto_predict: bool = True, multimask: bool = True) -> None:
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
        self._fingerprint = fingerprint
        self._lock = threading.RLock()            # prompt state and predictor
        self._compute_lock = threading.Lock()     # one embedding computation at a time
        self._fingerprint_lock = threading.Lock()
        self._requested = 0                       # set_image tickets: the latest call wins
        self._image_key: str | None = None
        self._image_size: tuple[int, int] | None = None
        self._state = NO_PROMPTS
        self._undo: list[PromptState] = []
        self._redo: list[PromptState] = []
        self._result: SamResult | None = None
        self.embeddings_computed = 0              # how many times the image encoder ran

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, model_type: str | None = None,
                        device: str | torch.device | None = None, *, trust_checkpoint: bool = False,
                        embedding_cache_dir: str | os.PathLike | None = None, **kwargs: Any) -> "SamRefiner":
        """Load an official SAM checkpoint (``sam_vit_b_01ec64.pth``, ...).

        Args:
            path: the ``.pth`` file.
            model_type: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` (or ``"tiny"``); None infers it from
                the weights. A type that does not match the file is an error.
            device: default CUDA when available, else CPU.
            trust_checkpoint: read with ``weights_only=False``; only for files you trust
                (unpickling can run arbitrary code).
            embedding_cache_dir: passed to the refiner as ``cache_dir``.
            kwargs: other :class:`SamRefiner` options.
        """
        from ..loading import default_device

        sam = load_sam_checkpoint(path, model_type, trust_checkpoint=trust_checkpoint)
        return cls(sam.to(default_device(device)).eval(), cache_dir=embedding_cache_dir, **kwargs)

    @classmethod
    def from_pretrained(cls, model_type: str = "vit_b", cache_dir: str | os.PathLike | None = None,
                        device: str | torch.device | None = None, *, progress: bool = True,
                        **kwargs: Any) -> "SamRefiner":
        """Download the official checkpoint once (checksum-verified, resumable) and load it.

        ``cache_dir`` is where the checkpoint goes (default: the user cache, or
        ``$CLIPSURGERY_CACHE_DIR/sam``). Offline, this fails fast with the URL and the path to put
        a manually downloaded file at. Other keyword arguments go to :meth:`from_checkpoint`.
        """
        from .downloads import SAM_CHECKPOINTS, download_checkpoint

        if model_type not in SAM_CHECKPOINTS:
            raise UnsupportedModelError(f"No official checkpoint for SAM model_type {model_type!r}: choose one of "
                                        f"{', '.join(SAM_CHECKPOINTS)}.")
        path = download_checkpoint(model_type, dest_dir=cache_dir, progress=progress)
        return cls.from_checkpoint(path, model_type, device, **kwargs)

    # --- read-only state ------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """Identifies the model weights in cache keys (hash of parameters and buffers)."""
        with self._fingerprint_lock:
            if self._fingerprint is None:
                self._fingerprint = module_fingerprint(self.model)
            return self._fingerprint

    @property
    def cache_dir(self) -> Path | None:
        """Directory of the disk cache of embeddings (None: memory only)."""
        return self.embeddings.cache_dir

    @property
    def max_cached_images(self) -> int:
        return self.embeddings.max_items

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
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # --- the image ------------------------------------------------------------------------------

    def image_key_of(self, image: Any) -> str:
        """The cache key :meth:`set_image` would give ``image`` (compare with :attr:`image_key`)."""
        return embedding_key(self.fingerprint, load_image(image), self.model.image_encoder.img_size)

    def set_image(self, image: Any, progress: Progress | None = None) -> bool:
        """Make ``image`` the current image, computing its SAM embedding only if no cache has it.

        Args:
            image: RGB uint8 [H, W, 3], or anything :func:`load_image` reads (path, PIL image, ...).
            progress: optional ``progress(fraction, message)``, called from this thread. An
                exception it raises abandons the computation and propagates (nothing is cached).

        A different image than the current one clears the prompts, their history and the result.
        Returns False if a later ``set_image`` call (another thread) took over before this one
        finished; True when this image is now set. Safe to run in a background thread.
        """
        report = progress or (lambda fraction, message: None)
        rgb = load_image(image)
        with self._lock:
            self._requested += 1
            ticket = self._requested
        key = embedding_key(self.fingerprint, rgb, self.model.image_encoder.img_size)
        embedding = self.embeddings.get(key, self.fingerprint)
        if embedding is None:
            with self._compute_lock:
                embedding = self.embeddings.get(key, self.fingerprint)  # another thread may have computed it
                if embedding is None:
                    embedding = compute_embedding(self.model, self.predictor.transform, rgb, report)
                    self.embeddings_computed += 1
                    self.embeddings.put(key, embedding, self.fingerprint)
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
            state = self._state
            return self._edit(replace(state, points=np.concatenate([state.points, point]),
                                      labels=np.concatenate([state.labels, [np.uint8(bool(positive))]]),
                                      mask_input=None))

    def remove_point(self, index: int) -> SamResult | None:
        """Remove the point at ``index`` (negative indices count from the end)."""
        with self._lock:
            count = len(self._state.points)
            if not -count <= index < count:
                raise IndexError(f"No point {index}: there are {count} points.")
            keep = np.ones(count, dtype=bool)
            keep[index] = False
            return self._edit(replace(self._state, points=self._state.points[keep],
                                      labels=self._state.labels[keep], mask_input=None))

    def point_near(self, x: float, y: float, radius: float = 10.0) -> int | None:
        """Index of the point closest to (x, y) within ``radius`` pixels, or None."""
        with self._lock:
            if not len(self._state.points):
                return None
            dist = np.hypot(*(self._state.points - np.array([x, y])).T)
            index = int(np.argmin(dist))
            return index if dist[index] <= radius else None

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
            if not self._undo:
                return False
            self._redo.append(self._state)
            self._state = self._undo.pop()
            self._after_edit()
            return True

    def redo(self) -> bool:
        with self._lock:
            if not self._redo:
                return False
            self._undo.append(self._state)
            self._state = self._redo.pop()
            self._after_edit()
            return True

    # --- from CLIP Surgery maps -----------------------------------------------------------------

    def points_from_scores(self, scores: Any, grid: tuple[int, int], image_size: tuple[int, int] | None = None,
                           threshold: float = 0.8, downsample: int = 2, multimask: bool | None = None) -> SamResult:
        """Prompts from a surgery map (SPEC 6), then one SAM call; best of 3.

        ``scores``: patch scores [N] of one label (``maps.map_to_points``), or [N, P] for a combined
        target "a+b" (``maps.combine_targets``). The points become the current prompts (undoable)
        and are in the returned result (``.points``, ``.labels``).
        """
        with self._lock:
            size = self._check_image_size(image_size)
            arr = as_numpy(scores)
            if arr.ndim == 1:
                points, labels = map_to_points(arr, grid, size=size, threshold=threshold, downsample=downsample)
            elif arr.ndim == 2:
                points, labels = combine_targets(arr, grid, size, threshold, downsample)
            else:
                raise ValueError(f"scores must be patch scores [N] or part scores [N, P], got shape {arr.shape}.")
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
        for arr in (state.points, state.labels):
            frozen(arr)
        self._undo.append(self._state)
        del self._undo[:-_HISTORY_LIMIT]
        self._redo.clear()
        self._state = state

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
        """Point the predictor at a cached embedding (the bookkeeping SamPredictor.set_torch_image does)."""
        predictor = self.predictor
        predictor.reset_image()
        predictor.features = embedding.features
        predictor.original_size = embedding.original_size
        predictor.input_size = embedding.input_size
        predictor.is_image_set = True
        if key != self._image_key:
            self._state, self._result = NO_PROMPTS, None
            self._undo.clear()
            self._redo.clear()
        self._image_key = key
        self._image_size = embedding.original_size


def load_sam_from_env(default: str = DEFAULT_SAM_SPEC, device: str | torch.device | None = None,
                      **kwargs: Any) -> SamRefiner:
    """The SAM named by the ``CLIPSURGERY_SAM`` environment variable (notebooks use this).

    Values: ``"tiny"`` (a tiny random SAM: fast, masks mean nothing; the tests use it),
    ``"vit_b"`` (the default), ``"vit_l"`` or ``"vit_h"`` (official weights, downloaded once and
    cached; offline this fails at once with instructions), or ``"vit_b:/path/sam_vit_b_01ec64.pth"``
    for a file you have (a bare path infers the size from the weights). Other keyword arguments go
    to :class:`SamRefiner` (e.g. ``cache_dir`` for embeddings on disk).
    """
    from .downloads import SAM_CHECKPOINTS

    spec = os.environ.get(SAM_ENV, "").strip() or default
    model_type, _, path = spec.partition(":")
    if model_type not in SAM_ARCHITECTURES and (os.sep in spec or Path(spec).suffix in (".pth", ".pt")):
        model_type, path = None, spec  # a bare path
    if path:
        return SamRefiner.from_checkpoint(path, model_type, device, **kwargs)
    if model_type == "tiny":
        from ..loading import default_device

        return SamRefiner(build_tiny_sam().to(default_device(device)), **kwargs)
    if model_type in SAM_CHECKPOINTS:
        try:
            return SamRefiner.from_pretrained(model_type, device=device, **kwargs)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc} Or set {SAM_ENV}={model_type}:/path/to/the/file.pth to use a checkpoint you "
                                 f"already have, or {SAM_ENV}=tiny for a tiny random SAM (fast, its masks mean "
                                 f"nothing).") from None
    raise UnsupportedModelError(f"{SAM_ENV}={spec!r} is not a SAM this package knows: use 'tiny', 'vit_b', 'vit_l', "
                                f"'vit_h', or a model type and a checkpoint path such as "
                                f"'vit_b:/path/to/sam_vit_b_01ec64.pth'.")


__all__ = ["SamRefiner", "SamResult", "PromptState", "InstancePrompt", "InstanceMasks", "build_tiny_sam",
           "instance_prompts", "load_sam_from_env", "SAM_ARCHITECTURES", "SAM_ENV", "TINY_SAM_SEED"]
