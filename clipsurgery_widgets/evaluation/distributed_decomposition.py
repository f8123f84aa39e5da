"""``decompose_images`` over a large image set through the Ray engine (docs/algorithms.md#text-based-decomposition).

Each actor loads the model once and runs ``decompose_images`` on one image at a time, exactly the
per-image work of a local pass (same cache folder, same keys), so the assembled
:class:`ImageSetTerms` equal a local ``decompose_images(model, images, ...)``. With a shared
``cache_dir``, images already decomposed (locally or by an earlier run) are read, not recomputed,
and a later local pass or DecompositionSession over the same images finds them all in the cache.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..engine.decomposition import ImageSetTerms, decompose_images
from .ray_engine import iter_items
from .workers import ModelSpec


class _DecomposeTask:
    """The per-image function of ``decompose_images`` as a task for the Ray engine."""

    name = "decompose"

    def __init__(self, images: Sequence[Any], size: Any, cache_dir: Any):
        self.images, self.size, self.cache_dir = list(images), size, cache_dir
        self.model = None

    def items(self) -> list[str]:
        return [str(i) for i in range(len(self.images))]

    def prepare(self, model: Any) -> None:
        self.model = model

    def run_item(self, item_id: str) -> dict[str, dict[str, np.ndarray]]:
        terms = decompose_images(self.model, [self.images[int(item_id)]], size=self.size, cache_dir=self.cache_dir,
                                 progress=False)
        return {"terms": {"attn": terms.attn[0].numpy(), "mlp": terms.mlp[0].numpy(),
                          "norm": terms.norms[0].numpy(), "key": np.array(terms.keys[0])}}


@dataclass
class _DecomposeFactory:
    model: ModelSpec
    images: list
    size: Any
    cache_dir: Any

    def __call__(self) -> _DecomposeTask:
        task = _DecomposeTask(self.images, self.size, self.cache_dir)
        task.prepare(self.model.load())
        return task


def decompose_images_distributed(model: Any, images: Sequence[Any], size: int | tuple[int, int] | None = None,
                                 cache_dir: str | os.PathLike | bool | None = None, num_workers: int = 2,
                                 progress: bool = True, threads: int | None = None,
                                 pretrained: str | None = "openai") -> ImageSetTerms:
    """:func:`decompose_images` with the images spread over Ray actors (one model each).

    Args:
        model: a model name (loaded in each actor, with ``pretrained``) or a LoadedModel (tiny and
            named models travel by name; others are pickled to each actor).
        images: paths (cheapest to send) or arrays; read in the actors.
        size, cache_dir: as for decompose_images (the actors write the same per-image cache files).
        num_workers: actors; threads: torch threads per actor (see ``ray_engine.iter_items``).
    Returns:
        ImageSetTerms in the order of ``images``, equal to a local decompose_images pass.
    """
    images = [os.fspath(i) if isinstance(i, os.PathLike) else i for i in images]
    if not images:
        raise ValueError("No images given: pass at least one image (paths, arrays or PIL images).")
    spec = ModelSpec.from_argument(model, pretrained=pretrained)
    factory = _DecomposeFactory(spec.portable(), images, size, cache_dir)
    items = [str(i) for i in range(len(images))]
    found: dict[str, dict[str, np.ndarray]] = {}
    with tqdm(total=len(items), desc="Decomposing images (Ray)", unit="image", disable=not progress) as bar:
        for item_id, stats in iter_items(factory, items, num_workers, threads=threads):
            if "terms" not in stats:  # a skip record: this function has no skips, so surface it
                raise RuntimeError(f"Image {item_id} could not be decomposed: {stats}")
            found[item_id] = stats["terms"]
            bar.update(1)
    rows = [found[i] for i in items]
    return ImageSetTerms(attn=torch.from_numpy(np.stack([r["attn"] for r in rows])),
                         mlp=torch.from_numpy(np.stack([r["mlp"] for r in rows])),
                         norms=torch.from_numpy(np.stack([r["norm"] for r in rows])),
                         keys=tuple(str(r["key"]) for r in rows))
