"""Decomposing a whole image set: one image at a time, with progress, saved per image, resumable.

Each image's per-head terms (summed over positions: L * H * D floats, 0.3 MB for ViT-B/16) are
written to ``<cache>/decomposition/<model>/<image>.npz`` as soon as they are computed, keyed by
the image's pixels, the input size and the model fingerprint (checked against in-place weight
changes); a damaged or foreign file is deleted and recomputed. An interrupted pass (Ctrl-C, a
closed widget, an error) therefore resumes where it stopped, and gives bitwise the same result as
an uninterrupted one: every image is computed alone, so batching never changes the arithmetic.
"""
from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cache import (content_hash, default_cache_dir, npz_bytes, read_cache_file, write_cache_file)
from ..errors import ClipSurgeryError, ImageInputError
from ..images import check_input_size, load_image, preprocess
from ..loading import LoadedModel, wrap_model
from ..precision import Precision
from .ablation import IMAGE_SUFFIXES
from .terms import decompose, vision_tower

# Bump when the saved terms change meaning, so that old files are not reused.
FORMAT_VERSION = 1


class PassInterrupted(ClipSurgeryError):
    """A pass over an image set was stopped; what was computed is saved and the next call resumes."""


@dataclass(frozen=True)
class ImageSetTerms:
    """Per-head decomposition terms of K images (float32, CPU).

    attn:  [K, L, H, D] each head's direct contribution (summed over positions).
    mlp:   [K, L + 1, D] embedding (index 0) and MLP terms (index l + 1 for block l).
    norms: [K] ||encode_image|| of each image.
    keys:  K content keys (one per image; equal images have equal keys).
    """

    attn: torch.Tensor
    mlp: torch.Tensor
    norms: torch.Tensor
    keys: tuple[str, ...]

    @property
    def num_layers(self) -> int:
        return int(self.attn.shape[1])

    @property
    def num_heads(self) -> int:
        return int(self.attn.shape[2])

    def head_terms(self) -> torch.Tensor:
        """[K, L, H, D] (the same as ``attn``; matches :meth:`Decomposition.head_terms`)."""
        return self.attn

    def embeddings(self) -> torch.Tensor:
        """[K, D] normalised image embeddings (the sum of all terms)."""
        return self.attn.sum(dim=(1, 2)) + self.mlp.sum(1)


def decompose_images(model: Any, images: Iterable[Any], size: int | tuple[int, int] | None = None,
                     cache_dir: str | os.PathLike | bool | None = None, progress: bool = True,
                     stop: Callable[[], bool] | threading.Event | None = None,
                     on_image: Callable[[int, int | None], None] | None = None,
                     lock: ContextManager | None = None, precision: str | None = None) -> ImageSetTerms:
    """Per-head terms of every image of a set, saved per image and resumed from what is saved.

    Args:
        model: LoadedModel, Explainer or open_clip CLIP module (ViT).
        images: image inputs (paths, arrays, PIL images...; see :func:`load_image`), read one at a time.
        size: model input size (default: the model's native size).
        cache_dir: where per-image results go (``<cache_dir>/decomposition/...``); None for the user
            cache dir (``$CLIPSURGERY_CACHE_DIR`` overrides it); False to keep nothing on disk.
        progress: show a tqdm progress bar.
        stop: a callable or threading.Event checked before each image; when true the pass raises
            :class:`PassInterrupted` (the images done so far stay saved).
        on_image: called as ``on_image(done, total)`` after each image (total None if unknown).
        lock: held while each image runs through the model (e.g. ``Explainer.model_lock``), so that
            other threads can use the model between images.
        precision: "fp32" (None: fp32, or an enclosing using_precision block's), "bf16", "fp16" or
            "auto"; saved results are kept apart per precision (fp32 keys are as before).
    """
    loaded = _loaded(model)
    visual = vision_tower(loaded)
    p = Precision.resolve(precision, loaded.device)
    hw = check_input_size(size if size is not None else tuple(visual.image_size), loaded.patch_size)
    fingerprint, signature = loaded.watch.snapshot()
    folder = _folder(cache_dir, fingerprint)
    shapes = _term_shapes(visual)
    total = len(images) if hasattr(images, "__len__") else None
    should_stop = stop.is_set if isinstance(stop, threading.Event) else stop
    results: list[dict[str, np.ndarray]] = []
    keys: list[str] = []
    bar = tqdm(total=total, desc="Decomposing images", unit="image", disable=not progress)
    try:
        for image in images:
            if should_stop is not None and should_stop():
                raise PassInterrupted(f"Stopped after {len(results)} of {total or 'the'} images; their results are "
                                      f"saved, so running the same pass again resumes from there.")
            rgb = image if _is_rgb(image) else load_image(image)
            key = content_hash(rgb, hw, fingerprint, FORMAT_VERSION, *p.cache_tag)
            saved = read_cache_file(folder / f"{key}.npz", shapes) if folder else None  # validated
            if saved is None:
                with lock if lock is not None else nullcontext():
                    saved = _compute(loaded, rgb, hw, p.name)
                if folder and loaded.watch.unchanged(signature):  # never under another weights' key
                    write_cache_file(folder / f"{key}.npz", npz_bytes(saved), folder.parents[1])
            results.append(saved)
            keys.append(key)
            bar.update(1)
            if on_image is not None:
                on_image(len(results), total)
    finally:
        bar.close()
    if not results:
        raise ValueError("No images given: pass at least one image (paths, arrays or PIL images).")
    return ImageSetTerms(attn=torch.from_numpy(np.stack([r["attn"] for r in results])),
                         mlp=torch.from_numpy(np.stack([r["mlp"] for r in results])),
                         norms=torch.from_numpy(np.stack([r["norm"] for r in results])),
                         keys=tuple(keys))


def _compute(loaded: LoadedModel, rgb: np.ndarray, hw: tuple[int, int], precision: str) -> dict[str, np.ndarray]:
    pixels = preprocess(rgb, hw, loaded.mean, loaded.std, loaded.patch_size).to(loaded.device)
    terms = decompose(loaded, pixels, spatial=False, precision=precision)
    return {"attn": terms.attn[0].cpu().numpy(), "mlp": terms.mlp[0].cpu().numpy(),
            "norm": terms.norm[0].cpu().numpy()}


def _loaded(model: Any) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    inner = getattr(model, "model", None)  # an Explainer carries its LoadedModel
    return inner if isinstance(inner, LoadedModel) else wrap_model(model)


def _folder(cache_dir: str | os.PathLike | bool | None, fingerprint: str) -> Path | None:
    if cache_dir is False:
        return None
    root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
    return root / "decomposition" / content_hash(fingerprint)


def _term_shapes(visual: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of one image's saved terms: attn [L, H, D], mlp [L + 1, D], norm []."""
    blocks = visual.transformer.resblocks
    width = int(visual.output_dim)
    return {"attn": (len(blocks), int(blocks[0].attn.num_heads), width), "mlp": (len(blocks) + 1, width), "norm": ()}


def image_list(images: Any) -> list[Any]:
    """The set as a list: a folder path gives its image files (sorted, recursively)."""
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        images = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif isinstance(images, (str, os.PathLike, np.ndarray)) or not hasattr(images, "__len__"):
        images = [images]
    images = list(images)
    if not images:
        raise ImageInputError("No images: pass a list of images (paths, arrays, PIL images) or a folder of images; "
                              "they are the set TEXTSPAN describes heads with and ablation takes means over.")
    return images


def _is_rgb(image: object) -> bool:
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
