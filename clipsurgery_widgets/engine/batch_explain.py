"""Explaining many images: image towers in batches, label features once, a progress bar.

Every image is resized to the same model input size, so consecutive images form batches of
``batch_size``: their raw and surgery tokens come from one forward pass of the image tower
(:meth:`Explainer.image_tokens_many`) and land in the explainer's token cache, then
:meth:`Explainer.explain` builds each result from the cache exactly as it would one at a time.
Methods other than raw / clip_surgery ("surgery", "both") run image by image.

By default (``batch_size=None``) a CPU runs one image per pass and a GPU eight: on this project's
CPUs a batch ran no faster per image than a single image (ViT-B-16 fp32 tokens, per image: 0.110 s
alone against 0.123 s in a batch of 8 at 224, 0.563 s against 0.614 s at 448; the matmuls of one
image already fill the cores, and a batch's activations no longer fit in the cache), while GPUs
gain from batches (benchmarks/bench_explain_many.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .images import ImageInput, check_input_size
from .limits import check_memory
from .results import Explanation
from .text.labels import parse_labels

if TYPE_CHECKING:
    from .explainer import Explainer

BATCHED_METHODS = ("surgery", "clip_surgery", "raw", "both")
CPU_BATCH_SIZE, ACCELERATOR_BATCH_SIZE = 1, 8


def default_batch_size(device: Any) -> int:
    """Images per tower pass when none is given: 1 on the CPU, 8 on a GPU (see the module docstring)."""
    return CPU_BATCH_SIZE if str(device).startswith("cpu") else ACCELERATOR_BATCH_SIZE


def explain_many(explainer: "Explainer", images: Iterable[ImageInput], labels: Sequence[str] | str,
                 batch_size: int | None = None, progress: bool = True,
                 on_result: Callable[[int, np.ndarray, Explanation], None] | None = None,
                 **options: Any) -> list[Explanation]:
    """[explainer.explain(image, labels, **options) for image in images], with batched image towers.

    batch_size: images per forward pass (memory grows with it: about batch_size times one image's
    activations); capped at the explainer's token-cache size so a batch is never evicted before use.
    None: :func:`default_batch_size` of the model's device.
    progress: show a tqdm progress bar (images done / total).
    on_result: called as on_result(index, rgb, explanation) when each image is done; images (paths
    or arrays) are loaded one batch at a time, so a folder never has to fit in memory at once.
    """
    if batch_size is None:
        batch_size = default_batch_size(explainer.model.device)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None (1 on the CPU, 8 on a GPU), "
                         f"not {batch_size!r}.")
    images = list(images)
    batch_size = min(batch_size, explainer._tokens.max_items)
    batched = options.get("method", "surgery") in BATCHED_METHODS and not options.get("methods")
    results: list[Explanation] = []
    with _progress(len(images), progress) as bar:
        for chunk in _chunks(images, batch_size):
            rgbs = [explainer.prepare_image(image) for image in chunk]
            if batched and len(rgbs) > 1:
                _check_batch(explainer, labels, len(rgbs), options)
                explainer.image_tokens_many(rgbs, options.get("size", 224), options.get("depth", 6),
                                            options.get("resnet_mode", "repo"), options.get("precision"))
            for rgb in rgbs:
                results.append(explainer.explain(rgb, labels, **options))
                if on_result is not None:
                    on_result(len(results) - 1, rgb, results[-1])
                bar.update(1)
    return results


def _check_batch(explainer: "Explainer", labels: Sequence[str] | str, count: int, options: dict) -> None:
    """explain()'s size and memory checks, before a batch runs (one image's activations times ``count``)."""
    hw = check_input_size(options.get("size", 224), explainer.model.patch_size)
    max_tokens = options.get("max_tokens")
    check_memory(explainer.model, hw, len(parse_labels(labels)), count,
                 explainer.max_tokens if max_tokens is None else max_tokens)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _NoBar:
    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def _progress(total: int, show: bool):
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="explaining", unit="image")
