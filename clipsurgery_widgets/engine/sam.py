"""Segment Anything refinement: masks from clicks, boxes, or a CLIP Surgery map.

:class:`SamRefiner` wraps a ``segment_anything`` ``Sam`` model and a ``SamPredictor``. It keeps
the image embedding of each image (bounded in-memory cache, optional disk cache keyed by image
content and model weights), the current prompts with an undo/redo history, and the last
prediction.

Thread safety: every public method of SamRefiner may be called from any thread. Prompt state,
predictions and the caches are guarded by one lock, held only briefly. The embedding itself is
computed outside that lock (one computation at a time), so a widget can run :meth:`set_image`
in a background thread while its UI thread keeps reading state; when two ``set_image`` calls
overlap, the later call wins.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError, UnsupportedModelError
from .images import load_image
from .maps import combine_targets, map_to_points

Progress = Callable[[float, str], None]  # progress(fraction in [0, 1], message)

TINY_SAM_SEED = 0
# model type -> (image encoder width, number of encoder blocks); "tiny" is build_tiny_sam().
SAM_ARCHITECTURES: dict[str, tuple[int, int]] = {
    "vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32), "tiny": (64, 2),
}
_HISTORY_LIMIT = 200
_DISK_FORMAT = 1


def build_tiny_sam(seed: int = TINY_SAM_SEED) -> nn.Module:
    """A tiny randomly initialised SAM (256-pixel input, 16x16 embedding) for tests and demos.

    Its masks mean nothing. Built under a fixed seed with the global RNG left untouched.
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=2, embed_dim=64, img_size=256, num_heads=2, patch_size=16, window_size=4,
                global_attn_indexes=[1], use_rel_pos=True, qkv_bias=True, out_chans=256,
                norm_layer=partial(nn.LayerNorm, eps=1e-6)),
            prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(16, 16),
                                         input_image_size=(256, 256), mask_in_chans=16),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
            pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
        )
    return sam.eval()


# --- results ------------------------------------------------------------------------------------

def _frozen(arr: np.ndarray | None) -> np.ndarray | None:
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


_NO_PROMPTS = PromptState(_frozen(np.zeros((0, 2), np.int64)), _frozen(np.zeros((0,), np.uint8)))


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


@dataclass(frozen=True)
class InstancePrompt:
    """Prompts for one connected region of a thresholded surgery map.

    points: int64 [P, 2] (x, y); labels: uint8 [P]; region: bool [gh, gw] the region's grid cells;
    peak: its highest min-max normalised score; cells: its number of grid cells.
    """

    points: np.ndarray
    labels: np.ndarray
    region: np.ndarray
    peak: float
    cells: int


@dataclass(frozen=True)
class InstanceMasks:
    """One SAM call per region: ``prompts[i]`` produced ``results[i]``."""

    prompts: tuple[InstancePrompt, ...]
    results: tuple[SamResult, ...]

    @property
    def masks(self) -> np.ndarray:
        """Best mask per instance, bool [K, H, W] (K may be 0)."""
        if not self.results:
            return np.zeros((0, 0, 0), dtype=bool)
        return np.stack([r.mask for r in self.results])

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.results], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.results)


@dataclass(frozen=True)
class _Embedding:
    features: torch.Tensor          # [1, C, e, e] on the model's device
    original_size: tuple[int, int]  # (H, W) of the image
    input_size: tuple[int, int]     # (h, w) after ResizeLongestSide, before padding


# --- instances (pure functions of a map) --------------------------------------------------------

def _cell_to_pixel(rows: np.ndarray, cols: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Grid cell centres -> int64 [K, 2] (x, y) pixels, the SPEC 6 mapping."""
    (gh, gw), (h, w) = grid, size
    x = np.minimum((cols + 0.5) * w / gw, w - 1).astype(np.int64)
    y = np.minimum((rows + 0.5) * h / gh, h - 1).astype(np.int64)
    return np.stack([x, y], axis=1)


def instance_prompts(patch_scores: Any, grid: tuple[int, int], image_size: tuple[int, int], threshold: float = 0.8,
                     *, points_per_instance: int = 3, num_negatives: int = 3, min_cells: int = 1,
                     max_instances: int | None = None, other_peaks_negative: bool = True) -> list[InstancePrompt]:
    """Split a surgery map into connected regions and build SAM prompts for each.

    The patch scores [N] (N = gh * gw, row-major) are min-max normalised and thresholded at
    ``threshold``; regions are 8-connected groups of cells above it, largest peak first. Each
    region gets its ``points_per_instance`` highest cells as positives; every region shares the
    ``num_negatives`` lowest cells of the whole map as negatives, plus (``other_peaks_negative``)
    the peak cell of every other region, which tells SAM to keep the instances apart.
    """
    from scipy import ndimage

    gh, gw = int(grid[0]), int(grid[1])
    scores = _as_numpy(patch_scores).astype(np.float64).reshape(-1)
    if scores.size != gh * gw:
        raise ValueError(f"patch_scores has {scores.size} values but grid {gh}x{gw} needs {gh * gw}: pass the patch "
                         f"scores of one label (tokens 1..N) and that explanation's grid.")
    if points_per_instance < 1 or num_negatives < 0:
        raise ValueError("points_per_instance must be >= 1 and num_negatives >= 0.")
    grid_map = scores.reshape(gh, gw)
    lo, hi = grid_map.min(), grid_map.max()
    norm = (grid_map - lo) / (hi - lo) if hi > lo else np.zeros_like(grid_map)
    regions, count = ndimage.label(norm >= threshold, structure=np.ones((3, 3), dtype=bool))

    found = []
    for k in range(1, count + 1):
        cells = regions == k
        if cells.sum() >= min_cells:
            found.append((float(norm[cells].max()), cells))
    found.sort(key=lambda item: -item[0])
    if max_instances is not None:
        found = found[:max_instances]

    flat = norm.reshape(-1)
    lowest = np.argsort(flat, kind="stable")[:num_negatives]
    peaks = [int(np.flatnonzero(cells.reshape(-1))[np.argmax(flat[cells.reshape(-1)])]) for _, cells in found]
    out = []
    for i, (peak, cells) in enumerate(found):
        members = np.flatnonzero(cells.reshape(-1))
        top = members[np.argsort(-flat[members], kind="stable")[:points_per_instance]]
        negatives = list(lowest)
        if other_peaks_negative:
            negatives += [p for j, p in enumerate(peaks) if j != i]
        idx = np.concatenate([top, np.asarray(negatives, dtype=np.int64)])
        points = _cell_to_pixel(idx // gw, idx % gw, (gh, gw), image_size)
        labels = np.concatenate([np.ones(len(top), np.uint8), np.zeros(len(negatives), np.uint8)])
        out.append(InstancePrompt(_frozen(points), _frozen(labels), _frozen(cells), peak, int(cells.sum())))
    return out


# --- the refiner --------------------------------------------------------------------------------

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
        if max_cached_images < 1:
            raise ValueError("max_cached_images must be at least 1.")
        self.model = sam
        self.predictor = SamPredictor(sam)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.max_cached_images = int(max_cached_images)
        self.auto_predict = auto_predict
        self.multimask = multimask
        self._fingerprint = fingerprint
        self._lock = threading.RLock()            # prompt state, predictor, caches
        self._compute_lock = threading.Lock()     # one embedding computation at a time
        self._fingerprint_lock = threading.Lock()
        self._memory: OrderedDict[str, _Embedding] = OrderedDict()
        self._requested = 0                       # set_image tickets: the latest call wins
        self._image_key: str | None = None
        self._image_size: tuple[int, int] | None = None
        self._state = _NO_PROMPTS
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
        from .loading import default_device, read_checkpoint

        path = Path(path).expanduser()
        if model_type is not None and model_type not in SAM_ARCHITECTURES:
            raise UnsupportedModelError(f"Unknown SAM model_type {model_type!r}: choose one of "
                                        f"{', '.join(SAM_ARCHITECTURES)} (or None to infer it from the file).")
        if not path.is_file():
            raise CheckpointError(f"SAM checkpoint not found: {path}. Check the path, or download the official weights "
                                  f"with SamRefiner.from_pretrained({model_type or 'vit_b'!r}).")
        state, _ = read_checkpoint(path, trust_checkpoint)
        found = _architecture_of(state)
        if found is None:
            raise CheckpointError(f"{path} does not look like a Segment Anything checkpoint ({_describe(state)}). "
                                  f"Pass an official SAM file such as sam_vit_b_01ec64.pth.")
        if model_type is None:
            model_type = found
        elif model_type != found:
            raise CheckpointError(f"{path} holds a {found} SAM checkpoint, but model_type={model_type!r} was given: "
                                  f"pass model_type={found!r} (or leave it out to infer it).")
        with torch.random.fork_rng(devices=[]):  # random init before loading must not move the global RNG
            sam = _build_architecture(model_type)
        try:
            sam.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            raise CheckpointError(f"{path} does not match the {model_type} SAM architecture: "
                                  f"{' '.join(lines[:3])[:400]}.") from None
        sam = sam.to(default_device(device)).eval()
        return cls(sam, cache_dir=embedding_cache_dir, **kwargs)

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
                self._fingerprint = _module_fingerprint(self.model)
            return self._fingerprint

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

    def set_image(self, image: Any, progress: Progress | None = None) -> bool:
        """Make ``image`` the current image, computing its SAM embedding only if no cache has it.

        Args:
            image: RGB uint8 [H, W, 3], or anything :func:`load_image` reads (path, PIL image, ...).
            progress: optional ``progress(fraction, message)``, called from this thread.

        A different image than the current one clears the prompts, their history and the result.
        Returns False if a later ``set_image`` call (another thread) took over before this one
        finished; True when this image is now set. Safe to run in a background thread.
        """
        report = progress or (lambda fraction, message: None)
        rgb = load_image(image)
        with self._lock:
            self._requested += 1
            ticket = self._requested
        key = self._embedding_key(rgb)
        embedding = self._cached(key)
        if embedding is None:
            with self._compute_lock:
                embedding = self._cached(key)  # another thread may have computed it meanwhile
                if embedding is None:
                    embedding = self._compute(rgb, report)
                    self._remember(key, embedding)
                    self._store_on_disk(key, embedding)
        with self._lock:
            if ticket != self._requested:
                return False
            self._install(key, embedding)
        report(1.0, "image ready")
        return True

    def clear_cache(self, disk: bool = False) -> None:
        """Forget cached embeddings (memory; also this model's files in ``cache_dir`` with ``disk``)."""
        with self._lock:
            self._memory.clear()
            if disk and self.cache_dir is not None and self.cache_dir.is_dir():
                for path in self.cache_dir.glob("sam-emb-*.pt"):
                    path.unlink(missing_ok=True)

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
            self._push(replace(self._state, mask_input=_frozen(logits)))
            return self._run(self._state, multimask)

    def add_point(self, x: float, y: float, positive: bool = True) -> SamResult | None:
        """Add a click. Returns the new result (when an image is set and auto_predict is on)."""
        with self._lock:
            point = self._check_points(np.array([[x, y]]))
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
            return self._edit(replace(self._state, box=self._check_box(box), mask_input=None))

    def clear(self) -> None:
        """Remove all prompts (undoable) and the result."""
        with self._lock:
            self._edit(_NO_PROMPTS)

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
            arr = _as_numpy(scores)
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

    # --- internals: prompts ---------------------------------------------------------------------

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

    def _check_points(self, points: Any) -> np.ndarray:
        arr = np.asarray(_as_numpy(points), dtype=np.float64)
        if arr.size == 0:
            return np.zeros((0, 2), np.int64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"points must be [P, 2] (x, y) pixels, got shape {arr.shape}.")
        if not np.isfinite(arr).all():
            raise ValueError("points contain NaN or infinity.")
        pts = np.rint(arr).astype(np.int64)
        if self._image_size is not None:
            h, w = self._image_size
            bad = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
            if bad.any():
                raise ValueError(f"Point {pts[bad][0].tolist()} is outside the image (width {w}, height {h}); points "
                                 f"are (x, y) pixels with 0 <= x < {w}, 0 <= y < {h}.")
        return pts

    def _check_box(self, box: Any) -> np.ndarray | None:
        if box is None:
            return None
        arr = np.asarray(_as_numpy(box), dtype=np.float64).reshape(-1)
        if arr.size != 4 or not np.isfinite(arr).all():
            raise ValueError(f"box must be 4 finite numbers [x0, y0, x1, y1], got {np.asarray(box).tolist()}.")
        if self._image_size is not None:
            h, w = self._image_size
            arr = np.clip(arr, 0, [w, h, w, h])
        if not (arr[0] < arr[2] and arr[1] < arr[3]):
            raise ValueError(f"box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1 (inside the image), got "
                             f"{arr.tolist()}.")
        return _frozen(arr.astype(np.float32))

    def _check_mask_input(self, mask_input: Any) -> np.ndarray | None:
        if mask_input is None:
            return None
        arr = np.asarray(_as_numpy(mask_input), dtype=np.float32)
        expected = tuple(self.model.prompt_encoder.mask_input_size)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape != (1, *expected):
            raise ValueError(f"mask_input must be low-res logits [1, {expected[0]}, {expected[1]}] (a result's "
                             f".best_logits), got shape {arr.shape}.")
        return _frozen(np.ascontiguousarray(arr))

    def _make_state(self, points: Any, labels: Any, box: Any, mask_input: Any) -> PromptState:
        pts = self._check_points(points) if points is not None else np.zeros((0, 2), np.int64)
        if labels is None:
            lab = np.ones(len(pts), np.uint8)
        else:
            raw = np.asarray(_as_numpy(labels)).reshape(-1)
            if len(raw) != len(pts):
                raise ValueError(f"{len(pts)} points but {len(raw)} labels: give one label per point "
                                 f"(1 positive, 0 negative).")
            if not np.isin(raw, (0, 1)).all():
                raise ValueError(f"labels must be 1 (positive) or 0 (negative), got {sorted(set(raw.tolist()))}.")
            lab = raw.astype(np.uint8)
        return PromptState(_frozen(pts), _frozen(lab), self._check_box(box), self._check_mask_input(mask_input))

    def _push(self, state: PromptState) -> None:
        for arr in (state.points, state.labels):
            _frozen(arr)
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
        result = SamResult(masks=_frozen(np.asarray(masks, dtype=bool)), scores=_frozen(scores),
                           logits=_frozen(np.asarray(logits, dtype=np.float32)), best=int(np.argmax(scores)),
                           points=state.points, labels=state.labels, box=state.box, image_key=self._image_key)
        if record:
            self._result = result
        return result

    # --- internals: embeddings ------------------------------------------------------------------

    def _embedding_key(self, rgb: np.ndarray) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.fingerprint}|{rgb.shape}|{rgb.dtype}|{self.model.image_encoder.img_size}|".encode())
        h.update(np.ascontiguousarray(rgb).tobytes())
        return h.hexdigest()

    def _cached(self, key: str) -> _Embedding | None:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        embedding = self._load_from_disk(key)
        if embedding is not None:
            self._remember(key, embedding)
        return embedding

    def _remember(self, key: str, embedding: _Embedding) -> None:
        with self._lock:
            self._memory[key] = embedding
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_cached_images:
                self._memory.popitem(last=False)

    def _disk_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"sam-emb-{key}.pt"

    def _load_from_disk(self, key: str) -> _Embedding | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            data = torch.load(path, map_location=self.model.device, weights_only=True)
            features = data["features"]
            encoder = self.model.prompt_encoder
            expected = (1, encoder.embed_dim, *encoder.image_embedding_size)
            if data.get("format") != _DISK_FORMAT or data.get("fingerprint") != self.fingerprint or \
                    tuple(features.shape) != expected:
                return None
            return _Embedding(features, tuple(int(v) for v in data["original_size"]),
                              tuple(int(v) for v in data["input_size"]))
        except Exception:  # unreadable or foreign file: recompute (and overwrite it)
            return None

    def _store_on_disk(self, key: str, embedding: _Embedding) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        torch.save({"format": _DISK_FORMAT, "fingerprint": self.fingerprint,
                    "features": embedding.features.detach().cpu(),
                    "original_size": list(embedding.original_size), "input_size": list(embedding.input_size)}, tmp)
        os.replace(tmp, path)  # atomic: readers never see a half-written file

    def _compute(self, rgb: np.ndarray, report: Progress) -> _Embedding:
        """The image encoder on one image (what SamPredictor.set_image does), with progress per block."""
        report(0.0, "computing the SAM image embedding")
        if self.model.image_format != "RGB":
            rgb = rgb[..., ::-1]
        resized = self.predictor.transform.apply_image(rgb)
        pixels = torch.as_tensor(resized, device=self.model.device).permute(2, 0, 1).contiguous()[None]
        blocks = list(getattr(self.model.image_encoder, "blocks", []))
        hooks = [block.register_forward_hook(
            lambda module, args, output, i=i: report(0.05 + 0.9 * (i + 1) / len(blocks),
                                                      f"SAM image encoder block {i + 1}/{len(blocks)}"))
            for i, block in enumerate(blocks)]
        try:
            with torch.no_grad():
                features = self.model.image_encoder(self.model.preprocess(pixels))
        finally:
            for hook in hooks:
                hook.remove()
        self.embeddings_computed += 1
        return _Embedding(features, (int(rgb.shape[0]), int(rgb.shape[1])), (int(resized.shape[0]), int(resized.shape[1])))

    def _install(self, key: str, embedding: _Embedding) -> None:
        """Point the predictor at a cached embedding (the bookkeeping SamPredictor.set_torch_image does)."""
        predictor = self.predictor
        predictor.reset_image()
        predictor.features = embedding.features
        predictor.original_size = embedding.original_size
        predictor.input_size = embedding.input_size
        predictor.is_image_set = True
        if key != self._image_key:
            self._state, self._result = _NO_PROMPTS, None
            self._undo.clear()
            self._redo.clear()
        self._image_key = key
        self._image_size = embedding.original_size


# --- helpers ------------------------------------------------------------------------------------

def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _build_architecture(model_type: str) -> nn.Module:
    if model_type == "tiny":
        return build_tiny_sam()
    from segment_anything import sam_model_registry

    return sam_model_registry[model_type](checkpoint=None)


def _encoder_shape(state: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None or weight.ndim != 4:
        return None
    blocks = {key.split(".")[2] for key in state if key.startswith("image_encoder.blocks.")}
    return int(weight.shape[0]), len(blocks)


def _architecture_of(state: dict[str, torch.Tensor]) -> str | None:
    shape = _encoder_shape(state)
    if shape is None or "mask_decoder.iou_prediction_head.layers.0.weight" not in state:
        return None
    return next((name for name, arch in SAM_ARCHITECTURES.items() if arch == shape), None)


def _describe(state: dict[str, torch.Tensor]) -> str:
    shape = _encoder_shape(state)
    if shape is not None:
        return f"image encoder width {shape[0]} with {shape[1]} blocks, which matches no known SAM size"
    keys = list(itertools.islice(state, 3))
    return f"{len(state)} tensors, e.g. {', '.join(keys)}" if keys else "no tensors"


def _module_fingerprint(module: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=12)
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return f"sam/{h.hexdigest()}"


__all__ = ["SamRefiner", "SamResult", "PromptState", "InstancePrompt", "InstanceMasks", "build_tiny_sam",
           "instance_prompts", "SAM_ARCHITECTURES"]
