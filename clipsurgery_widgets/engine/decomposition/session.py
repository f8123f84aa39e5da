"""DecompositionSession: one image set's decomposition, kept and reused (no UI).

Explaining heads with the text-based decomposition (docs/algorithms.md#text-based-decomposition)
needs an expensive pass over an image set (per-head terms of every image, and their means) and a
spatial decomposition of the image being looked at. Once those exist, each question a person asks
(which heads carry this label, what does this head encode, what if these heads are mean-ablated)
is cheap. The session does the passes once, keeps their results and answers with numpy arrays and
small frozen records.

Thread-safe: the caches are guarded by one lock, which is never held while the model runs; model
work holds the Explainer's ``model_lock`` one image at a time; passes over the set run one at a time.
"""
from __future__ import annotations

import operator
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..cache import LRUCache
from ..errors import ClipSurgeryError, ImageInputError
from ..explainer import Explainer
from ..images import preprocess
from ..precision import Precision, check_precision
from ..text.encoding import TEMPLATES
from ..text.labels import parse_labels
from ..towers.vit import num_blocks
from .ablation import (Ablation, AblationResult, DecompositionInputError, MeanTerms,
                       ablated_embeddings, evaluate_ablation, mean_terms, zero_shot_probs)
from .dataset_pass import ImageSetTerms, decompose_images, image_list
from .names import image_names
from .terms import Decomposition, decompose, spatial_maps, vision_tower
from .textspan import encode_text_pool, text_pool, text_span

Progress = Callable[[str], None]
HeadTexts = tuple[tuple[str, float], ...]


class DecompositionNotReady(ClipSurgeryError):
    """A question needs the image set's terms, and the pass over the set has not finished."""


@dataclass(frozen=True)
class ImageContributions:
    """Direct contributions of one image's terms to each of T labels (dot products with the labels'
    normalised text embeddings; the terms sum to the normalised image embedding).

    index: the image's position in the set.   rgb: uint8 [H, W, 3] the image.
    labels: the T labels.                     heads: float32 [T, L, H] per attention head.
    layers: float32 [T, L] per attention layer.  mlps: float32 [T, L] per MLP (block l).
    embedding: float32 [T] the class-token embedding term.
    """

    index: int
    rgb: np.ndarray
    labels: tuple[str, ...]
    heads: np.ndarray
    layers: np.ndarray
    mlps: np.ndarray
    embedding: np.ndarray

    def row(self, label: str) -> int:
        """Position of ``label`` in :attr:`labels`."""
        if label not in self.labels:
            raise DecompositionInputError(f"{label!r} is not one of the labels ({', '.join(self.labels)}).")
        return self.labels.index(label)


@dataclass(frozen=True)
class Prediction:
    """Zero-shot prediction of one image over T labels, before and after a mean ablation.

    before / after: float32 [T] softmax(logit_scale * cosine) over the labels.
    """

    labels: tuple[str, ...]
    before: np.ndarray
    after: np.ndarray
    ablation: Ablation

    @property
    def top_before(self) -> str:
        return self.labels[int(self.before.argmax())]

    @property
    def top_after(self) -> str:
        return self.labels[int(self.after.argmax())]


class DecompositionSession:
    """The decomposition of an image set with one CLIP ViT, and the questions asked of it.

    Args:
        explainer: an ``Explainer`` (its label-feature cache and model lock are shared) with a ViT,
            or a LoadedModel (an Explainer is made for it).
        images: the set (paths, arrays, PIL images, or a folder path). It gives TEXTSPAN its data
            and ablation its means; :meth:`add_image` appends to it.
        texts: TEXTSPAN text pool: None (the pool shipped with the package), a file path, or a list.
        cache_dir: where per-image terms and the encoded pool are kept (None: the user cache dir;
            False: nothing on disk).
        precision: None (the explainer's), "auto", "fp32", "bf16" or "fp16"; a ``using_precision``
            block other than "auto" overrides it. The session holds one precision's results at a
            time: a call in another precision drops them first (saved per-image terms are kept
            per precision on disk), so results of two precisions never mix.
    """

    def __init__(self, explainer: Any, images: Sequence[Any] | str | os.PathLike,
                 texts: Sequence[str] | str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | bool | None = None, precision: str | None = None):
        visual = vision_tower(explainer)  # refuses ResNets with a clear message
        if not isinstance(explainer, Explainer):
            explainer = Explainer(explainer, cache_dir=cache_dir)
        self._explainer = explainer
        self.num_layers: int = num_blocks(visual)
        self.num_heads: int = int(visual.transformer.resblocks[0].attn.num_heads)
        self._cache_dir = cache_dir
        self._images = image_list(images)
        self._texts = tuple(text_pool(texts))
        self._lock = threading.RLock()  # guards every cache below
        self._pass_lock = threading.Lock()  # one pass over the set at a time
        self._terms: ImageSetTerms | None = None  # covers the first len(terms.keys) images
        self._means: MeanTerms | None = None
        self._pool: torch.Tensor | None = None
        self._rgbs = LRUCache(8)
        self._decompositions = LRUCache(2)  # index -> spatial Decomposition (about 58 MB each for ViT-B/16)
        self._maps = LRUCache(16)
        self._head_texts: dict[tuple, HeadTexts] = {}
        self.precision = None if precision is None else check_precision(precision)
        self._holds = "fp32"  # the precision of everything cached above

    def _in_precision(self) -> str:
        """The resolved precision of this call; cached results of another precision are dropped first."""
        own = self.precision or self._explainer.precision
        name = Precision.resolve(None, self._explainer.model.device, own=own).name
        with self._lock:
            if name != self._holds:
                self._holds, self._terms, self._means, self._pool = name, None, None, None
                for cache in (self._decompositions, self._maps, self._head_texts):
                    cache.clear()
        return name

    # --- the image set -----------------------------------------------------------------------

    @property
    def logit_scale(self) -> float:
        return self._explainer.model.logit_scale

    @property
    def texts(self) -> tuple[str, ...]:
        """The TEXTSPAN text pool."""
        return self._texts

    @property
    def images(self) -> list[Any]:
        """The set's images as given (paths, arrays, ...); added images as RGB arrays."""
        with self._lock:
            return list(self._images)

    @property
    def image_count(self) -> int:
        with self._lock:
            return len(self._images)

    def image_names(self, given: dict[int, str] | None = None) -> list[str]:
        """A short distinct name per image (file name, with folders if shared; else "image <n>"); see
        :func:`.names.image_names`. ``given``: {index: name} for images named by the caller."""
        with self._lock:
            return image_names(self._images, given)

    def add_image(self, image: Any) -> int:
        """Append an image to the set; returns its index. The set's terms then miss it until the
        next :meth:`image_set_terms` (which decomposes only the new images)."""
        rgb = self._explainer.prepare_image(image)
        with self._lock:
            self._images.append(rgb)
            index = len(self._images) - 1
        self._rgbs.put(index, rgb)
        return index

    def image(self, index: int) -> np.ndarray:
        """RGB uint8 [H, W, 3] of image ``index``."""
        index = self._check_index(index)
        rgb = self._rgbs.get(index)
        if rgb is None:
            rgb = self._explainer.prepare_image(self._images[index])
            self._rgbs.put(index, rgb)
        return rgb

    @property
    def set_terms(self) -> ImageSetTerms | None:
        """Per-head terms of every image of the set, or None while some are missing."""
        with self._lock:
            terms = self._terms
            return terms if terms is not None and len(terms.keys) == len(self._images) else None

    @property
    def means(self) -> MeanTerms | None:
        """Means of the terms over the set (what mean ablation substitutes), or None while missing."""
        with self._lock:
            return self._means if self.set_terms is not None else None

    def image_set_terms(self, stop: threading.Event | None = None, progress: Progress | None = None) -> ImageSetTerms:
        """Per-head terms of every image (computing the missing ones; saved per image on disk).

        stop: when set, the pass raises :class:`PassInterrupted` before the next image; what was
        done stays saved and the next call resumes. progress(text) is told how far it is.
        """
        precision = self._in_precision()
        with self._pass_lock:
            while True:
                with self._lock:
                    terms, images = self._terms, list(self._images)
                done = 0 if terms is None else len(terms.keys)
                if done == len(images):
                    return terms
                total = len(images)
                _tell(progress, f"Decomposing the image set: {done}/{total} images…")
                new = decompose_images(
                    self._explainer, images[done:], cache_dir=self._cache_dir, progress=False, stop=stop,
                    lock=self._explainer.model_lock, precision=precision,
                    on_image=lambda n, _: _tell(progress, f"Decomposing the image set: {done + n}/{total} images "
                                                          f"(saved as they finish)…"))
                merged = new if terms is None else ImageSetTerms(
                    attn=torch.cat([terms.attn, new.attn]), mlp=torch.cat([terms.mlp, new.mlp]),
                    norms=torch.cat([terms.norms, new.norms]), keys=terms.keys + new.keys)
                with self._lock:
                    self._terms, self._means = merged, mean_terms(merged)

    # --- one image -----------------------------------------------------------------------------

    def decomposition(self, index: int) -> Decomposition:
        """Spatial decomposition (CPU, float32) of image ``index`` at the model's native size; cached."""
        index, precision = self._check_index(index), self._in_precision()
        cached = self._decompositions.get(index)
        if cached is not None:
            return cached
        rgb = self.image(index)
        model = self._explainer.model
        pixels = preprocess(rgb, tuple(model.image_size), model.mean, model.std, model.patch_size)
        with self._explainer.model_lock:
            d = decompose(model, pixels.to(model.device), spatial=True, precision=precision)
        d = Decomposition(attn=d.attn.cpu(), mlp=d.mlp.cpu(), norm=d.norm.cpu(), grid=d.grid)
        self._decompositions.put(index, d)
        return d

    def cached_decomposition(self, index: int) -> Decomposition | None:
        """The decomposition of image ``index`` if it is in memory (never computes)."""
        return self._decompositions.get(index)

    def label_features(self, labels: Sequence[str] | str) -> torch.Tensor:
        """[T, D] normalised prompt-ensembled label embeddings (the Explainer's cache)."""
        return self._explainer.label_features(parse_labels(labels), TEMPLATES, self._in_precision())

    def contributions(self, index: int, labels: Sequence[str] | str) -> ImageContributions:
        """Each head's, layer's and MLP's direct contribution to each label on image ``index``."""
        labels, _ = tuple(parse_labels(labels)), self._in_precision()
        d = self.decomposition(index)
        features = self.label_features(labels)  # [T, D]
        heads = torch.einsum("lhd,td->tlh", d.head_terms()[0], features)
        layers = d.layer_terms()[0] @ features.T  # [L, T]
        mlps = d.mlp[0, 1:] @ features.T
        embedding = d.mlp[0, 0] @ features.T
        return ImageContributions(index=index, rgb=self.image(index), labels=labels, heads=_np(heads),
                                  layers=_np(layers.T), mlps=_np(mlps.T), embedding=_np(embedding))

    def maps(self, index: int, labels: Sequence[str] | str, heads: Sequence[tuple[int, int]] | None = None,
             size: tuple[int, int] | None = None) -> np.ndarray:
        """float32 [T, h, w] in [0, 1]: each label's zero-shot map from the per-position terms of all
        heads (or only ``heads``), on the patch grid or resized to ``size`` = (h, w)."""
        labels = tuple(parse_labels(labels))
        heads = None if heads is None else tuple((int(l), int(h)) for l, h in heads)
        for layer, head in heads or ():
            self.check_head(layer, head)
        key = (self._check_index(index), labels, heads, None if size is None else tuple(int(s) for s in size),
               self._in_precision())
        cached = self._maps.get(key)
        if cached is None:
            maps = spatial_maps(self.decomposition(index), self.label_features(labels), heads=heads, size=key[3])
            cached = _np(maps[0])
            self._maps.put(key, cached)
        return cached

    # --- TEXTSPAN --------------------------------------------------------------------------------

    def text_features(self, progress: Progress | None = None) -> torch.Tensor:
        """[M, D] embeddings of the text pool (encoded once per model; kept on disk per cache_dir)."""
        precision = self._in_precision()
        with self._lock:
            pool = self._pool
        if pool is None:
            _tell(progress, f"Encoding the {len(self._texts)} pool texts (once per model)…")
            with self._explainer.model_lock:
                pool = encode_text_pool(self._explainer, self._texts, progress=False, cache_dir=self._cache_dir,
                                        precision=precision)
            with self._lock:
                self._pool = pool
        return pool

    def head_texts(self, layer: int, head: int, m: int = 10, rank: int = 80, stop: threading.Event | None = None,
                   progress: Progress | None = None) -> HeadTexts:
        """TEXTSPAN of one head over the whole set: ((text, share of the head's variance), ...).

        Computes what is missing (the set's terms, the encoded pool); ``stop`` and ``progress`` as
        in :meth:`image_set_terms`.
        """
        self.check_head(layer, head)
        terms = self.image_set_terms(stop=stop, progress=progress)
        key = (int(layer), int(head), int(m), int(rank), len(terms.keys))
        with self._lock:
            if key in self._head_texts:
                return self._head_texts[key]
        pool = self.text_features(progress)
        _tell(progress, f"Finding the texts of layer {layer}, head {head}…")
        texts = tuple(text_span(terms.attn[:, layer, head], pool, self._texts, m=m, rank=rank))
        with self._lock:
            self._head_texts[key] = texts
        return texts

    def cached_head_texts(self, layer: int, head: int, m: int = 10, rank: int = 80) -> HeadTexts | None:
        """The head's TEXTSPAN texts over the current set if already computed (never computes)."""
        with self._lock:
            return self._head_texts.get((int(layer), int(head), int(m), int(rank), len(self._images)))

    # --- mean ablation -------------------------------------------------------------------------

    def check_head(self, layer: int, head: int) -> None:
        """Raise DecompositionInputError unless (layer, head) exists in this model."""
        if not (0 <= int(layer) < self.num_layers and 0 <= int(head) < self.num_heads):
            raise DecompositionInputError(
                f"There is no head ({layer}, {head}): this model has layers 0..{self.num_layers - 1} with heads "
                f"0..{self.num_heads - 1} each.")

    def head(self, value: Any) -> tuple[int, int]:
        """(layer, head) from a pair of whole numbers; DecompositionInputError unless the model has it."""
        try:
            layer, head = (operator.index(v) for v in value)
        except (TypeError, ValueError):
            raise DecompositionInputError(f"A head is a (layer, head) pair of whole numbers, not {value!r}.") from None
        self.check_head(layer, head)
        return layer, head

    def check_ablation(self, ablation: Ablation) -> None:
        """Raise DecompositionInputError unless ``ablation`` is an Ablation of this model's terms."""
        if not isinstance(ablation, Ablation):
            raise DecompositionInputError(f"Expected an Ablation, e.g. Ablation(heads={{(10, 2)}}), not "
                                          f"{type(ablation).__name__}.")
        ablation.check(self.num_layers, self.num_heads)

    def prediction(self, index: int, labels: Sequence[str] | str, ablation: Ablation = Ablation()) -> Prediction:
        """Zero-shot prediction of image ``index`` before and after mean-ablating ``ablation``."""
        self.check_ablation(ablation)
        index, _ = self._check_index(index), self._in_precision()
        terms, means = self._ready()
        labels = tuple(parse_labels(labels))
        features = self.label_features(labels)
        one = ImageSetTerms(attn=terms.attn[index:index + 1], mlp=terms.mlp[index:index + 1],
                            norms=terms.norms[index:index + 1], keys=terms.keys[index:index + 1])
        before = zero_shot_probs(one.embeddings(), features, self.logit_scale)[0]
        after = zero_shot_probs(ablated_embeddings(one, means, ablation), features, self.logit_scale)[0]
        return Prediction(labels=labels, before=_np(before), after=_np(after), ablation=ablation)

    def accuracy(self, labels: Sequence[str] | str, targets: Sequence[int], ablation: Ablation) -> AblationResult:
        """Zero-shot accuracy over the set (image i's class is labels[targets[i]]) before and after
        mean-ablating ``ablation``."""
        self.check_ablation(ablation)
        self._in_precision()
        terms, means = self._ready()
        return evaluate_ablation(terms, self.label_features(labels), targets, ablation, means)

    # --- helpers -------------------------------------------------------------------------------

    def _ready(self) -> tuple[ImageSetTerms, MeanTerms]:
        with self._lock:
            terms, means = self.set_terms, self._means
        if terms is None:
            raise DecompositionNotReady("The image set is not decomposed yet: call image_set_terms() first (it "
                                        "resumes from what is saved).")
        return terms, means

    def _check_index(self, index: int) -> int:
        count = self.image_count
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
            raise ImageInputError(f"There is no image {index!r}: the set has {count} images (0..{count - 1}).")
        return int(index)


def _tell(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()
