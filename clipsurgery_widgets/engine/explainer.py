"""Explainer: image + labels -> Explanation, with the caches that make interaction fast."""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cache import FeatureStore, LRUCache, content_hash, default_cache_dir
from .errors import TextInputError
from .images import ImageInput, check_input_size, load_image, preprocess
from .limits import MAX_TOKENS, check_memory
from .loading import LoadedModel, load_model, wrap_model
from .notices import quote, warn_user
from .precision import Precision, check_precision, resolve_precision, using_precision
from .results import Explanation, ImageTokens, MapSet
from .surgery import feature_surgery as surgery_scores  # renamed: explain() has a flag called feature_surgery
from .text.encoding import TEMPLATES, check_templates, encode_texts
from .text.labels import parse_labels, parse_target
from .towers.dense import encode_dense_many
from .towers.dense_params import METHODS as DENSE_METHODS
from .towers.encode import encode_image_tokens

# "surgery" is CLIP Surgery's short name; "both" = raw and clip_surgery from one pass, as before.
ALIASES = {"surgery": "clip_surgery"}
METHODS = ("surgery", "raw", "both") + tuple(m for m in DENSE_METHODS if m not in ("raw",))
REDUNDANCY_MODES = ("auto", "labels", "empty", "none")


class Explainer:
    """Explains images with one CLIP model, caching image tokens and label features.

    Args:
        model: a LoadedModel, an open_clip CLIP module, or a name for :func:`load_model`.
        cache_dir: where label features are stored on disk; None for the default user cache dir
            (``$CLIPSURGERY_CACHE_DIR`` overrides it), False to keep them in memory only.
        max_cached_images: how many (image, size, depth) token sets stay in memory.
        precision: "auto" (default: bf16 on a CUDA GPU, fp32 on the CPU), "fp32", "bf16" or "fp16"
            (CUDA only). Reduced precisions run the towers under autocast (the model is not
            converted); every cache keeps fp32 and reduced-precision results apart. Each method
            also takes ``precision=`` for one call, and a ``using_precision(...)`` block other than
            "auto" overrides this setting for the calls inside it.

    Safe to call from several threads (widgets compute in the background): model work is
    serialised by ``model_lock``; code that runs ``self.model.model`` directly holds it too.
    """

    max_tokens: int = MAX_TOKENS  # explain() refuses larger inputs; set per instance or pass max_tokens=

    def __init__(self, model: LoadedModel | nn.Module | str, cache_dir: str | os.PathLike | bool | None = None,
                 max_cached_images: int = 16, precision: str = "auto"):
        if isinstance(model, str):
            model = load_model(model)
        elif isinstance(model, nn.Module):
            model = wrap_model(model)
        self.model: LoadedModel = model
        self.precision: str = check_precision(precision)
        resolve_precision(precision, self.model.device)  # fp16 on the CPU fails here, not at the first call
        self._tokens = LRUCache(max_cached_images)
        self._labels: dict[tuple[str, str], torch.Tensor] = {}
        self._store = None if cache_dir is False else FeatureStore(default_cache_dir() if cache_dir in (None, True)
                                                                   else cache_dir)
        self.model_lock = threading.RLock()
        self._fingerprint_seen = self.model.fingerprint

    def _weights(self) -> tuple[str, tuple]:
        """(fingerprint, signature) of the weights now; in-memory entries of older weights are dropped.

        Results are cached only if ``self.model.watch.unchanged(signature)`` still holds after they
        are computed, so nothing is stored under a fingerprint it does not belong to.
        """
        fingerprint, signature = self.model.watch.snapshot()
        if fingerprint != self._fingerprint_seen:
            self._tokens.clear()
            self._labels.clear()
            self._fingerprint_seen = fingerprint
        return fingerprint, signature

    def resolved_precision(self, precision: str | None = None) -> Precision:
        """What a call with ``precision`` runs in on this model's device (see ``precision`` above)."""
        return Precision.resolve(precision, self.model.device, own=check_precision(self.precision))

    # --- inputs ---------------------------------------------------------------------------

    def prepare_image(self, image: ImageInput) -> np.ndarray:
        """Any image input -> RGB uint8 [H, W, 3] (load once, then pass the array around)."""
        return image if _is_rgb(image) else load_image(image)

    def image_tokens(self, rgb: np.ndarray, size: int | tuple[int, int] = 224, depth: int = 6,
                     resnet_mode: str = "repo", precision: str | None = None) -> ImageTokens:
        """Raw and surgery tokens of one RGB image ([1, 1+N, D] each), cached by content, settings and precision."""
        return self.image_tokens_many([rgb], size, depth, resnet_mode, precision)[0]

    def image_tokens_many(self, rgbs: Sequence[np.ndarray], size: int | tuple[int, int] = 224, depth: int = 6,
                          resnet_mode: str = "repo", precision: str | None = None) -> list[ImageTokens]:
        """:meth:`image_tokens` of several RGB images; the uncached ones run as ONE batch [B, 3, S_h, S_w]."""
        hw = check_input_size(size, self.model.patch_size)
        p = self.resolved_precision(precision)
        fingerprint, signature = self._weights()
        setting = depth if self.model.family == "vit" else resnet_mode
        keys = [(content_hash(rgb), hw, setting, fingerprint, *p.cache_tag) for rgb in rgbs]
        found = [self._tokens.get(key) for key in keys]
        missing = [i for i, tokens in enumerate(found) if tokens is None]
        if missing:
            pixels = torch.cat([preprocess(rgbs[i], hw, self.model.mean, self.model.std, self.model.patch_size)
                                for i in missing]).to(self.model.device)
            with self.model_lock:
                batch = encode_image_tokens(self.model.model, pixels, depth=depth, resnet_mode=resnet_mode,
                                            precision=p.name)
            keep = self.model.watch.unchanged(signature)
            for row, i in enumerate(missing):
                found[i] = ImageTokens(raw=batch.raw[row:row + 1].float().cpu().clone(),
                                       surgery=batch.surgery[row:row + 1].float().cpu().clone(), grid=batch.grid)
                if keep:
                    self._tokens.put(keys[i], found[i])
        return found

    def method_tokens(self, rgb: np.ndarray, size: int | tuple[int, int], methods: Sequence[str], depth: int = 6,
                      resnet_mode: str = "repo", method_params: dict | None = None, precision: str | None = None
                      ) -> tuple[dict, tuple[int, int]]:
        """Projected tokens [1, 1+N, D] (CPU float32) of each dense method, and the grid.

        raw and clip_surgery come from :meth:`image_tokens` (ViT and ResNet); the other methods
        from one shared pass of :func:`encode_dense_many`, cached per (image, size, method, params).
        """
        params = method_params or {}
        p = self.resolved_precision(precision)
        out: dict[str, torch.Tensor] = {}
        if {"raw", "clip_surgery"} & set(methods) and not set(params) & {"raw", "clip_surgery"}:
            tokens = self.image_tokens(rgb, size, depth, resnet_mode, precision=p.name)
            out.update(raw=tokens.raw, clip_surgery=tokens.surgery)
            grid = tokens.grid
        others = [m for m in methods if m not in out]
        if not others:
            return {m: out[m] for m in methods}, grid
        hw = check_input_size(size, self.model.patch_size)
        fingerprint, signature = self._weights()
        image_key = (content_hash(rgb), hw, fingerprint, *p.cache_tag)
        requests = [(m, dict(params.get(m, {}), **({"depth": depth} if m == "clip_surgery" else {}))) for m in others]
        keys = {m: image_key + (m, tuple(sorted(p.items()))) for m, p in requests}
        found = {m: self._tokens.get(keys[m]) for m, _ in requests}
        missing = [(m, p) for m, p in requests if found[m] is None]
        if missing:
            pixels = preprocess(rgb, hw, self.model.mean, self.model.std, self.model.patch_size).to(self.model.device)
            with self.model_lock, using_precision(p.name):
                dense = encode_dense_many(self.model.model, pixels, missing)
            keep = self.model.watch.unchanged(signature)
            for m, _ in missing:
                found[m] = (dense[m].tokens.float().cpu(), dense[m].grid)
                if keep:
                    self._tokens.put(keys[m], found[m])
        for m in others:
            out[m], grid = found[m]
        return {m: out[m] for m in methods}, grid

    def label_features(self, labels: Sequence[str], templates: Sequence[str] | None = TEMPLATES,
                       precision: str | None = None) -> torch.Tensor:
        """Normalised prompt-ensembled features [T, D] (CPU float32), each label computed once per precision.

        Disk entries are validated (shape [D], float32, finite); a bad one is deleted and recomputed.
        """
        labels = list(labels)  # any iterable, read once
        templates = None if templates is None else check_templates(templates)
        p = self.resolved_precision(precision)
        fingerprint, signature = self._weights()
        namespace = content_hash(fingerprint, templates, *p.cache_tag)  # fp32 namespaces as before
        found: dict[str, torch.Tensor] = {}
        for label in dict.fromkeys(labels):
            memo = self._labels.get((namespace, label))
            stored = None if memo is not None or not self._store else \
                self._store.get(namespace, label, (self.model.text_dim,))
            if memo is not None or stored is not None:
                found[label] = memo if memo is not None else torch.from_numpy(stored)
                self._labels[(namespace, label)] = found[label]
        missing = [label for label in dict.fromkeys(labels) if label not in found]
        if missing:
            with self.model_lock:
                feats = encode_texts(self.model.model, self.model.tokenizer, missing, templates=templates,
                                     precision=p.name)
            keep = self.model.watch.unchanged(signature)  # else these belong to weights changed meanwhile
            for label, feat in zip(missing, feats.float().cpu()):
                found[label] = feat
                if keep:
                    self._labels[(namespace, label)] = feat
                    if self._store:
                        self._store.put(namespace, label, feat.numpy())
        return torch.stack([found[label] for label in labels])

    def empty_feature(self, templates: Sequence[str] | None = TEMPLATES, precision: str | None = None) -> torch.Tensor:
        """The redundant feature r [D]: prompt-ensembled "" (docs/algorithms.md#feature-surgery), computed once per model and templates."""
        return self.label_features([""], templates, precision)[0]

    def target_features(self, targets: Sequence[str], templates: Sequence[str] | None = TEMPLATES,
                        precision: str | None = None) -> torch.Tensor:
        """Features [T, D] of targets; an "a+b" target is the normalised mean of its parts' features."""
        parts = [parse_target(t) for t in targets]
        flat = self.label_features([p for ps in parts for p in ps], templates, precision)
        out, i = [], 0
        for ps in parts:
            out.append(F.normalize(flat[i:i + len(ps)].mean(0), dim=-1) if len(ps) > 1 else flat[i])
            i += len(ps)
        return torch.stack(out)

    # --- explanation ----------------------------------------------------------------------

    def explain(self, image: ImageInput, labels: Sequence[str] | str, method: str = "surgery",
                redundancy: str = "auto", size: int | tuple[int, int] = 224, depth: int = 6,
                templates: Sequence[str] | None = TEMPLATES, resnet_mode: str = "repo",
                methods: Sequence[str] | None = None, feature_surgery: bool | None = None,
                method_params: dict[str, dict] | None = None, max_tokens: int | None = None,
                precision: str | None = None) -> Explanation:
        """Similarity maps of ``labels`` on ``image``.

        Args:
            image: path, PIL image, array or tensor (see :func:`load_image`), or an RGB array.
            labels: a list of labels, or one comma-separated string. "a+b" combines targets.
            method: any dense method ("raw", "clip_surgery" or its alias "surgery", "maskclip",
                "sclip", "clearclip", "naclip", "gem"; docs/algorithms.md#dense-methods), or "both"
                (raw and clip_surgery from one pass, maps = clip_surgery's).
            redundancy: feature-surgery mode where feature surgery is on: "auto", "labels", "empty", "none".
            size: model input size S or (S_h, S_w), multiples of the patch size.
            depth: number of final blocks with the v-v path of clip_surgery (ViT), 1..L.
            templates: prompt templates (default the 85 of docs/algorithms.md#text-features), or None for bare labels.
            methods: several methods computed from one forward pass; ``result.by_method[name]`` holds each.
            feature_surgery: None = as the papers use them (on for clip_surgery only); True/False = for all.
            method_params: per-method parameters, e.g. {"naclip": {"gaussian_std": 3.0}}.
            max_tokens: the most patch tokens an input may have (default ``self.max_tokens``,
                :data:`~.limits.MAX_TOKENS` = 4,096); larger sizes are refused before anything runs.
            precision: this call's precision ("auto", "fp32", "bf16", "fp16"); None: the explainer's.

        Memory: the result keeps patch scores only, 4 * T * (N + 1) bytes per method; full-size
        maps are made when read (``maps``: 4 * T * H * W bytes, ``map_for``: 4 * H * W).
        Labels follow :mod:`.text.labels` (repeats dropped with a notice; "\\+" is a literal plus);
        labels that read the same to the model get a notice, or an error where multi-label
        feature surgery would cancel them out.
        """
        t0 = time.perf_counter()
        labels = parse_labels(labels)
        main, names = _resolve_methods(method, methods, self.model.family)
        if redundancy not in REDUNDANCY_MODES:
            raise ValueError(f"redundancy must be one of {REDUNDANCY_MODES}, not {redundancy!r}.")
        hw = check_input_size(size, self.model.patch_size)
        check_memory(self.model, hw, len(labels), len(names), self.max_tokens if max_tokens is None else max_tokens)
        rgb = self.prepare_image(image)
        precision = self.resolved_precision(precision).name  # one precision for the whole call
        tokens, grid = self.method_tokens(rgb, size, names, depth, resnet_mode, method_params, precision)
        t1 = time.perf_counter()
        text = self.target_features(labels, templates, precision)
        mode = ("labels" if len(labels) >= 2 else "empty") if redundancy == "auto" else redundancy
        redundant = self.empty_feature(templates, precision) if mode == "empty" else None
        t2 = time.perf_counter()
        image_size = rgb.shape[:2]
        modes = {name: mode if (name == "clip_surgery" if feature_surgery is None else feature_surgery) else "none"
                 for name in names}
        _check_distinct(labels, text, cancels="labels" in modes.values())
        results = {name: surgery_scores(F.normalize(tokens[name], dim=-1), text, redundant=redundant,
                                                mode=modes[name])[0] for name in names}
        t3 = time.perf_counter()
        mapsets = {name: _mapset(scores, grid, image_size) for name, scores in results.items()}
        global_raw = F.normalize(tokens[names[0]][0, 0], dim=-1) @ text.T  # token 0 is CLIP's own for every method
        probs = torch.softmax(self.model.logit_scale * global_raw, dim=-1).numpy().astype(np.float32)
        t4 = time.perf_counter()
        return Explanation(
            labels=tuple(labels), image_size=(int(image_size[0]), int(image_size[1])), grid=grid,
            input_size=hw, surgery=mapsets.get("clip_surgery"), raw=mapsets.get("raw"), probs=probs,
            redundancy=modes[main], method=main, by_method=mapsets,
            timings={"image": t1 - t0, "text": t2 - t1, "surgery": t3 - t2, "maps": t4 - t3, "total": t4 - t0})

    def target_part_scores(self, image: ImageInput, target: str, size: int | tuple[int, int] = 224,
                           depth: int = 6, templates: Sequence[str] | None = TEMPLATES,
                           precision: str | None = None) -> np.ndarray:
        """Single-text surgery patch scores [N, P] of each part of an "a+b" target (for SAM points)."""
        rgb = self.prepare_image(image)
        precision = self.resolved_precision(precision).name
        tokens = self.image_tokens(rgb, size, depth, precision=precision)
        parts = parse_target(target)
        feats = F.normalize(tokens.surgery, dim=-1)
        redundant = self.empty_feature(templates, precision)
        cols = [surgery_scores(feats, self.label_features([p], templates, precision), redundant=redundant,
                                mode="empty")[0, 1:, 0] for p in parts]
        return torch.stack(cols, dim=1).numpy().astype(np.float32)

    def explain_many(self, images: Iterable[ImageInput], labels: Sequence[str] | str, batch_size: int | None = None,
                     progress: bool = True, on_result: Callable[[int, np.ndarray, Explanation], None] | None = None,
                     **options) -> list[Explanation]:
        """:meth:`explain` for each image, the image towers run in batches (see :mod:`.batch_explain`;
        ``batch_size`` None: one image per pass on the CPU, where batches were not faster, 8 on a GPU).

        Results equal ``[self.explain(image, labels, **options) for image in images]`` (to float
        rounding); ``progress`` shows a tqdm bar; ``on_result(index, rgb, explanation)`` is called as
        each image is done (images are loaded a batch at a time). ``options``: explain()'s keywords.
        """
        from .batch_explain import explain_many

        return explain_many(self, images, labels, batch_size=batch_size, progress=progress, on_result=on_result,
                            **options)

    def clear_cache(self) -> None:
        """Forget cached image tokens and in-memory label features (the disk store is kept)."""
        self._tokens.clear()
        self._labels.clear()


def _mapset(scores: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int]) -> MapSet:
    """scores [1+N, T] -> patch and global scores; maps at the image size are made when read."""
    return MapSet(patch_scores=scores[1:].numpy().astype(np.float32), global_scores=scores[0].numpy().astype(np.float32),
                  grid=tuple(grid), image_size=tuple(int(s) for s in image_size))


def _check_distinct(labels: Sequence[str], text: torch.Tensor, cancels: bool) -> None:
    """Notice (or, where multi-label feature surgery cancels them, an error) for labels the model reads alike.

    "cat" and "Cat" are different strings but one text to CLIP's tokenizer (it ignores case and
    extra spaces), so their features are equal; with only such labels every "labels"-mode map is 0.
    text: [T, D] unit rows. Rows are compared a block at a time (memory 4 * 1024 * T bytes).
    """
    same: list[tuple[int, int]] = []
    for start in range(0, len(labels), 1024):
        close = (text[start:start + 1024] @ text.T) > 1 - 1e-5  # [block, T]
        for i, j in close.nonzero().tolist():
            if j < start + i and not any(k == start + i for k, _ in same):
                same.append((start + i, j))
    if not same:
        return
    pairs = ", ".join(f"{quote(labels[i])} and {quote(labels[j])}" for i, j in same[:5])
    message = f"Labels {pairs} read the same to the model (its tokenizer ignores case and extra spaces)"
    if cancels and len(same) == len(labels) - 1:
        raise TextInputError(f"{message}: multi-label feature surgery removes what all labels share, so every "
                             f"map would be 0. Remove the repeats, add other labels, or use redundancy='empty'.")
    warn_user(f"{message}; their maps are identical. Remove the repeats to explain each text once.")


def canonical_method(name: str) -> str:
    """A method name as the engine knows it ("surgery" -> "clip_surgery"); ValueError for unknown names."""
    if not isinstance(name, str) or ALIASES.get(name, name) not in DENSE_METHODS:
        raise ValueError(f"Unknown method {name!r}: method must be one of {', '.join(METHODS)}.")
    return ALIASES.get(name, name)


def _resolve_methods(method: str, methods: Sequence[str] | None, family: str) -> tuple[str, list[str]]:
    """(main method, every method to compute, main first) for explain()."""
    if method == "both":
        main, names = "clip_surgery", ["clip_surgery", "raw"]
    else:
        main = canonical_method(method)
        names = [main]
    if methods is not None:
        if isinstance(methods, str):
            methods = [part.strip() for part in methods.split(",") if part.strip()]
        extra = [canonical_method(m) for m in methods]
        if not extra:
            raise ValueError("methods is empty: pass method names such as ['sclip', 'naclip'], or leave it out.")
        names += [m for m in extra if m not in names]
    if family != "vit":
        vit_only = [m for m in names if m not in ("raw", "clip_surgery")]
        if vit_only:
            raise ValueError(f"Method(s) {', '.join(vit_only)} need a ViT image tower; this model's is a {family}. "
                             f"Use 'raw' or 'clip_surgery', or a ViT model such as ViT-B-16.")
    return main, names


def _is_rgb(image: object) -> bool:
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
