"""Multimodal attribution: which caption tokens match the image, and where
(docs/algorithms.md#token-attribution).

The caption runs through the text transformer and every position from start-of-text to
end-of-text is kept (ln_final, text_projection, L2-normalised). These T token features are the
labels of a multi-label feature surgery (docs/algorithms.md#feature-surgery) against the image's
surgery tokens:

    scores [1+N, T] = feature_surgery(F, G_tokens, mode="labels")

A token's score is its value at the global token ("global") or its maximum over the patches
("max"). Leaving out start/end tokens or punctuation only hides them from the ranking: the
surgery always uses every token, so one token's score never depends on the display toggles.
The caption's own map is the free-sentence surgery of its pooled (end-of-text) feature with the
prompt-ensembled empty string as redundancy (the single-text case of feature surgery).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import TextInputError
from .images import ImageInput
from .maps import similarity_maps
from .regions import patch_at
from .surgery import feature_surgery
from .text.captions import (CaptionTokens, CaptionWords, caption_words, token_features, tokenize_caption)

SCORE_SOURCES = ("global", "max")

# --- attributions --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class RegionRanking:
    """Caption tokens ranked by their surgery score inside one image region.

    weights: float32 [N] share of each patch in the region (sums to 1).
    scores:  float32 [T] weighted mean of each token's patch scores over the region.
    order:   int64 [K] shown tokens (see ``TokenAttribution.shown``), best first.
    """

    weights: np.ndarray
    scores: np.ndarray
    order: np.ndarray


@dataclass(frozen=True, eq=False)
class TokenAttribution:
    """How each caption token matches one image (what :func:`token_attributions` returns).

    tokens:         CaptionTokens (T tokens, start and end included); CaptionWords after :meth:`by_word`.
    score_source:   "global" or "max": what ``scores`` holds.
    include_special, include_punctuation: the display filters that made ``shown``.
    global_scores:  float32 [T] surgery score of each token at the image's global token.
    patch_scores:   float32 [N, T] surgery scores at the patches (row-major grid).
    scores:         float32 [T] the chosen source: global_scores, or patch_scores.max(0).
    shown:          bool [T] tokens kept by the filters.
    order:          int64 [K] shown tokens by descending score (ties: caption order).
    rank:           int64 [T] 0 for the best shown token, 1 for the next...; -1 when hidden.
    token_maps:     float32 [T, gh, gw] each token's patch scores min-max normalised to [0, 1].
    caption_map:    float32 [H, W] the whole caption's map at image size, in [0, 1].
    caption_patch_scores: float32 [N] free-sentence surgery scores of the caption at the patches.
    grid:           (gh, gw).    image_size: (H, W) of the original image.
    """

    tokens: CaptionTokens
    score_source: str
    include_special: bool
    include_punctuation: bool
    global_scores: np.ndarray
    patch_scores: np.ndarray
    scores: np.ndarray
    shown: np.ndarray
    order: np.ndarray
    rank: np.ndarray
    token_maps: np.ndarray
    caption_map: np.ndarray
    caption_patch_scores: np.ndarray
    grid: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def caption(self) -> str:
        return self.tokens.caption

    def top(self, k: int = 3) -> list[int]:
        """Indices of the k best shown tokens (the paper marks three: red, yellow, cyan)."""
        return [int(t) for t in self.order[:k]]

    def image_map(self, token: int) -> np.ndarray:
        """float32 [H, W] in [0, 1]: token ``token``'s map, resized bilinearly to the image."""
        if not 0 <= token < len(self.tokens):
            raise IndexError(f"Token index {token} out of range: the caption has {len(self.tokens)} tokens "
                             f"(0 = start, {len(self.tokens) - 1} = end).")
        scores = torch.from_numpy(np.ascontiguousarray(self.patch_scores[:, token:token + 1]))[None]
        return similarity_maps(scores, self.grid, self.image_size)[0, 0].numpy()

    def with_options(self, score: str | None = None, include_special: bool | None = None,
                     include_punctuation: bool | None = None) -> "TokenAttribution":
        """The same attribution with another score source or filters (no model call)."""
        score = self.score_source if score is None else score
        special = self.include_special if include_special is None else include_special
        punctuation = self.include_punctuation if include_punctuation is None else include_punctuation
        scores, shown, order, rank = _ranking(self.tokens, self.global_scores, self.patch_scores, score, special,
                                              punctuation)
        return replace(self, score_source=score, include_special=special, include_punctuation=punctuation,
                       scores=scores, shown=shown, order=order, rank=rank)

    def by_word(self) -> "TokenAttribution":
        """The same attribution with one unit per word instead of one per BPE piece (no model call).

        A word's scores are the mean of its pieces' (docs/algorithms.md#token-attribution): at the
        global token, at each patch (so its map, its "max" score and its region scores come from
        those means). ``tokens`` becomes a :class:`CaptionWords`, indices count units (0 = start,
        last = end); a caption of single-piece words keeps its indices and scores.
        """
        if isinstance(self.tokens, CaptionWords):
            return self
        words = caption_words(self.tokens)
        global_scores, patch_scores = words.pool(self.global_scores), words.pool(self.patch_scores)
        scores, shown, order, rank = _ranking(words, global_scores, patch_scores, self.score_source,
                                              self.include_special, self.include_punctuation)
        maps = similarity_maps(torch.from_numpy(patch_scores)[None], self.grid, self.grid)[0].numpy()
        return replace(self, tokens=words, global_scores=global_scores, patch_scores=patch_scores, scores=scores,
                       shown=shown, order=order, rank=rank, token_maps=maps)

    def patch_at(self, x: float, y: float) -> int:
        """Flat row-major index of the patch under image pixel (x = column, y = row)."""
        row, col = patch_at(self.image_size, self.grid, x, y)
        return row * self.grid[1] + col

    def tokens_at(self, region: int | np.ndarray | torch.Tensor) -> RegionRanking:
        """The shown tokens ranked by their score in a region: a flat patch index (see
        :meth:`patch_at`), or a mask of shape (gh, gw) or (H, W) (bool, or non-negative weights)."""
        weights = region_weights(region, self.grid, self.image_size)
        scores = (weights @ self.patch_scores).astype(np.float32)
        return RegionRanking(weights=weights, scores=scores, order=_order(scores, self.shown))


def token_attributions(
    explainer: Any,
    image: ImageInput,
    caption: str,
    score: str = "global",
    include_special: bool = False,
    include_punctuation: bool = True,
    size: int | tuple[int, int] = 224,
    depth: int = 6,
) -> TokenAttribution:
    """Image-to-text token attributions of one caption on one image (docs/algorithms.md#token-attribution).

    Args:
        explainer: an :class:`~clipsurgery_widgets.engine.explainer.Explainer` (or a LoadedModel).
        image: any image input (path, PIL, array, tensor) or an RGB uint8 array.
        caption: free text; over the 77-token context it is truncated with a warning.
        score: "global" (score at the image's global token) or "max" (max over the patches).
        include_special: rank the start/end tokens too.
        include_punctuation: rank tokens made only of punctuation.
        size, depth: model input size and surgery depth, as in ``Explainer.explain``.

    Returns:
        TokenAttribution (scores [T], patch scores [N, T], token maps, caption map).
    """
    explainer = _as_explainer(explainer)
    _check_options(score, include_special, include_punctuation)
    rgb = explainer.prepare_image(image)
    caption_tokens = tokenize_caption(explainer.model.tokenizer, caption, explainer.model.context_length)
    image_tokens = explainer.image_tokens(rgb, size, depth)
    image_feats = F.normalize(image_tokens.surgery, dim=-1)  # [1, 1+N, D]
    text_feats = _token_features(explainer, caption_tokens)  # [T, D]
    return attribute_tokens(caption_tokens, image_feats, text_feats, explainer.empty_feature(), image_tokens.grid,
                            rgb.shape[:2], score, include_special, include_punctuation)


def token_surgery_scores(image_feats: torch.Tensor, token_feats: torch.Tensor) -> torch.Tensor:
    """Multi-label feature surgery with the caption's tokens as labels.

    Args:
        image_feats: [1, 1+N, D] L2-normalised image tokens.
        token_feats: [T, D] L2-normalised token features (T >= 2).

    Returns:
        [1+N, T] scores; row 0 is the global token.
    """
    return feature_surgery(image_feats, token_feats, mode="labels")[0]


def attribute_tokens(caption_tokens: CaptionTokens, image_feats: torch.Tensor, text_feats: torch.Tensor,
                     empty: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int], score: str = "global",
                     include_special: bool = False, include_punctuation: bool = True) -> TokenAttribution:
    """TokenAttribution from features already computed (what :func:`token_attributions` does after
    the forward passes).

    Args:
        caption_tokens: from :func:`tokenize_caption` (T tokens).
        image_feats: [1, 1+N, D] L2-normalised surgery image tokens.
        text_feats: [T, D] L2-normalised token features (:func:`token_features`).
        empty: [D] redundant feature of the empty string (``Explainer.empty_feature()``).
        grid: (gh, gw) with gh * gw == N.   image_size: (H, W) of the original image.
    """
    if text_feats.shape[0] != len(caption_tokens):
        raise ValueError(f"{text_feats.shape[0]} token features for {len(caption_tokens)} caption tokens.")
    _check_options(score, include_special, include_punctuation)
    surgery = token_surgery_scores(image_feats, text_feats)  # [1+N, T]
    patch = surgery[1:]
    caption_patch = feature_surgery(image_feats, text_feats[-1:], redundant=empty, mode="empty")[0, 1:]  # [N, 1]
    size = (int(image_size[0]), int(image_size[1]))
    global_scores = surgery[0].numpy().astype(np.float32)
    patch_scores = patch.numpy().astype(np.float32)
    scores, shown, order, rank = _ranking(caption_tokens, global_scores, patch_scores, score, include_special,
                                          include_punctuation)
    return TokenAttribution(
        tokens=caption_tokens, score_source=score, include_special=bool(include_special),
        include_punctuation=bool(include_punctuation), global_scores=global_scores, patch_scores=patch_scores,
        scores=scores, shown=shown, order=order, rank=rank,
        token_maps=similarity_maps(patch[None], grid, grid)[0].numpy(),  # same size: min-max only
        caption_map=similarity_maps(caption_patch[None], grid, size)[0, 0].numpy(),
        caption_patch_scores=caption_patch[:, 0].numpy().astype(np.float32), grid=tuple(grid), image_size=size)


# --- several captions ----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class RegionMatch:
    """For one region: how well each caption matches it, and each caption's tokens ranked there.

    caption_scores: float32 [K] region mean of ``CaptionMatches.caption_patch_scores``.
    caption_order:  int64 [K] captions, best first.
    rankings:       K RegionRanking, one per caption (its shown tokens ranked in the region).
    """

    caption_scores: np.ndarray
    caption_order: np.ndarray
    rankings: tuple[RegionRanking, ...]


@dataclass(frozen=True, eq=False)
class CaptionMatches:
    """Several captions on one image: which caption (and which of its words) matches where.

    captions:       the K captions.
    attributions:   K TokenAttribution, one per caption (its words ranked, its own maps).
    caption_patch_scores: float32 [N, K] feature surgery between the captions' pooled features
                    and the patches: multi-label across captions when K >= 2, the empty-string
                    redundancy when K == 1.
    assignment:     int64 [gh, gw] index of the best caption at each patch.
    probs:          float32 [K] CLIP's own choice: softmax over captions of logit_scale * cosine
                    with the raw global image feature.
    grid, image_size: as in TokenAttribution.
    """

    captions: tuple[str, ...]
    attributions: tuple[TokenAttribution, ...]
    caption_patch_scores: np.ndarray
    assignment: np.ndarray
    probs: np.ndarray
    grid: tuple[int, int]
    image_size: tuple[int, int]

    def at(self, region: int | np.ndarray | torch.Tensor) -> RegionMatch:
        """Captions ranked in a region (patch index or mask), with each caption's tokens ranked there."""
        weights = region_weights(region, self.grid, self.image_size)
        caption_scores = (weights @ self.caption_patch_scores).astype(np.float32)
        return RegionMatch(caption_scores=caption_scores,
                           caption_order=np.argsort(-caption_scores, kind="stable").astype(np.int64),
                           rankings=tuple(a.tokens_at(region) for a in self.attributions))


def caption_matches(
    explainer: Any,
    image: ImageInput,
    captions: Sequence[str],
    score: str = "global",
    include_special: bool = False,
    include_punctuation: bool = True,
    size: int | tuple[int, int] = 224,
    depth: int = 6,
) -> CaptionMatches:
    """Token attributions of several captions on one image, and which caption wins each region.

    Arguments as in :func:`token_attributions`; ``captions`` is a list of at least one caption.
    """
    if isinstance(captions, str) or not isinstance(captions, Sequence) or not captions:
        raise TextInputError("captions must be a non-empty list of strings, e.g. ['a cat', 'a sofa'].")
    explainer = _as_explainer(explainer)
    _check_options(score, include_special, include_punctuation)
    rgb = explainer.prepare_image(image)
    image_tokens = explainer.image_tokens(rgb, size, depth)
    image_feats = F.normalize(image_tokens.surgery, dim=-1)
    empty = explainer.empty_feature()
    attributions, pooled = [], []
    for caption in captions:
        caption_tokens = tokenize_caption(explainer.model.tokenizer, caption, explainer.model.context_length)
        text_feats = _token_features(explainer, caption_tokens)
        pooled.append(text_feats[-1])  # end-of-text row == the caption's encode_text feature
        attributions.append(attribute_tokens(caption_tokens, image_feats, text_feats, empty, image_tokens.grid,
                                             rgb.shape[:2], score, include_special, include_punctuation))
    pooled = torch.stack(pooled)
    mode = "labels" if len(captions) >= 2 else "empty"
    cross = feature_surgery(image_feats, pooled, redundant=empty, mode=mode)[0, 1:]  # [N, K]
    cosine = F.normalize(image_tokens.raw[0, 0], dim=-1) @ pooled.T
    scale = explainer.model.logit_scale
    gh, gw = image_tokens.grid
    return CaptionMatches(
        captions=tuple(captions), attributions=tuple(attributions),
        caption_patch_scores=cross.numpy().astype(np.float32),
        assignment=cross.argmax(dim=1).reshape(gh, gw).numpy().astype(np.int64),
        probs=torch.softmax(scale * cosine, dim=-1).numpy().astype(np.float32),
        grid=image_tokens.grid, image_size=(int(rgb.shape[0]), int(rgb.shape[1])))


# --- regions -------------------------------------------------------------------------------------

def region_weights(region: int | np.ndarray | torch.Tensor, grid: tuple[int, int],
                   image_size: tuple[int, int]) -> np.ndarray:
    """Share of each patch in a region: float32 [N] summing to 1.

    region: a flat patch index; or a mask of shape (gh, gw) or (H, W), bool or non-negative
    weights (an image-size mask is averaged over each patch's area).
    """
    gh, gw = grid
    if isinstance(region, (int, np.integer)) and not isinstance(region, bool):
        if not 0 <= region < gh * gw:
            raise ValueError(f"Patch index {region} out of range: the grid is {gh}x{gw} = {gh * gw} patches.")
        weights = np.zeros(gh * gw, dtype=np.float32)
        weights[int(region)] = 1.0
        return weights
    mask = region.detach().cpu().numpy() if isinstance(region, torch.Tensor) else np.asarray(region)
    if mask.shape not in ((gh, gw), tuple(image_size)):
        raise ValueError(f"A region mask must have the grid's shape {(gh, gw)} or the image's {tuple(image_size)}, "
                         f"got {mask.shape}; or pass a patch index (see patch_at).")
    mask = mask.astype(np.float32)
    if not np.isfinite(mask).all() or (mask < 0).any():
        raise ValueError("A region mask must hold booleans or non-negative finite weights.")
    if mask.shape != (gh, gw):
        mask = F.adaptive_avg_pool2d(torch.from_numpy(mask)[None, None], (gh, gw))[0, 0].numpy()
    total = float(mask.sum())
    if total <= 0:
        raise ValueError("The region mask is empty: mark at least one pixel or patch.")
    return (mask / total).reshape(-1).astype(np.float32)


# --- helpers -------------------------------------------------------------------------------------

def _as_explainer(explainer: Any) -> Any:
    from .explainer import (
        Explainer,  # local import: explainer.py may import this module
    )

    if isinstance(explainer, Explainer):
        return explainer
    if hasattr(explainer, "tokenizer") and hasattr(explainer, "model"):  # a LoadedModel
        return Explainer(explainer, cache_dir=False)
    raise TypeError(f"Pass an Explainer (Explainer(load_model(...))), not {type(explainer).__name__}.")


def _check_options(score: str, include_special: bool, include_punctuation: bool) -> None:
    if score not in SCORE_SOURCES:
        raise ValueError(f"score must be 'global' (the image's global token) or 'max' (max over patches), "
                         f"not {score!r}.")
    for name, value in (("include_special", include_special), ("include_punctuation", include_punctuation)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, not {value!r}.")


def _token_features(explainer: Any, caption_tokens: CaptionTokens) -> torch.Tensor:
    # The explainer serialises model work across widget threads; a bare LoadedModel has no lock.
    with getattr(explainer, "model_lock", None) or contextlib.nullcontext():
        return token_features(explainer.model.model, caption_tokens.ids)


def _ranking(caption_tokens: CaptionTokens, global_scores: np.ndarray, patch_scores: np.ndarray, score: str,
             include_special: bool, include_punctuation: bool):
    _check_options(score, include_special, include_punctuation)
    scores = (global_scores if score == "global" else patch_scores.max(axis=0)).astype(np.float32)
    shown = np.ones(len(caption_tokens), dtype=bool)
    if not include_special:
        shown &= ~caption_tokens.is_special
    if not include_punctuation:
        shown &= ~caption_tokens.is_punctuation
    order = _order(scores, shown)
    rank = np.full(len(caption_tokens), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    return scores, shown, order, rank


def _order(scores: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """Indices of shown tokens by descending score, ties in caption order."""
    candidates = np.flatnonzero(shown)
    return candidates[np.argsort(-scores[candidates], kind="stable")].astype(np.int64)
