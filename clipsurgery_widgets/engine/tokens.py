"""Multimodal attribution: which caption tokens match the image, and where (SPEC 7).

The caption runs through the text transformer and every position from start-of-text to
end-of-text is kept (ln_final, text_projection, L2-normalised). These T token features are the
labels of a multi-label feature surgery (SPEC 4) against the image's surgery tokens:

    scores [1+N, T] = feature_surgery(F, G_tokens, mode="labels")

A token's score is its value at the global token ("global") or its maximum over the patches
("max"). Leaving out start/end tokens or punctuation only hides them from the ranking: the
surgery always uses every token, so one token's score never depends on the display toggles.
The caption's own map is the free-sentence surgery of its pooled (end-of-text) feature with the
prompt-ensembled empty string as redundancy (SPEC 4, single text).
"""
from __future__ import annotations

import contextlib

import string
import unicodedata
import warnings
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import TextInputError, UnsupportedModelError
from .images import ImageInput
from .maps import similarity_maps
from .regions import patch_at
from .surgery import feature_surgery

SCORE_SOURCES = ("global", "max")
START_TEXT, END_TEXT = "<start>", "<end>"  # readable text of the two special tokens
PARTIAL_TEXT = "\u00b7"  # shown for a piece holding only part of a multi-byte character


# --- caption -> token pieces ---------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CaptionTokens:
    """A caption's BPE tokens from start-of-text to end-of-text, with their place in the caption.

    caption:        the caption as given.
    ids:            int64 [T] token ids fed to the text transformer (start and end included).
    pieces:         T readable texts: each BPE piece decoded ("</w>" removed, lower case as the
                    tokenizer sees it); START_TEXT/END_TEXT for the special tokens.
    texts:          T display texts: the caption's own characters at ``spans`` (original case),
                    falling back to ``pieces`` where there is no span; PARTIAL_TEXT for a piece
                    holding only the first bytes of a character that a later piece completes.
    space_before:   bool [T], True where the caption has white space before the token (or a new
                    word follows a special token): join the texts with spaces only there.
    word_index:     int64 [T] index into ``words`` of each token's word; -1 for special tokens.
    spans:          T character spans (start, end) of each token in ``caption``; None for special
                    tokens and for text the tokenizer rewrote (HTML entities, Unicode fixes).
    words:          the words: runs of pieces ending in "</w>" (the tokenizer's pre-tokens, e.g.
                    "dog", "'s", ",").
    word_spans:     character span of each word in ``caption`` (None when not found literally).
    is_special:     bool [T], True for the start and end tokens.
    is_punctuation: bool [T], True for tokens made only of punctuation characters.
    dropped:        number of caption tokens cut off to fit the text context (0 normally).
    """

    caption: str
    ids: np.ndarray
    pieces: tuple[str, ...]
    word_index: np.ndarray
    spans: tuple[tuple[int, int] | None, ...]
    words: tuple[str, ...]
    word_spans: tuple[tuple[int, int] | None, ...]
    is_special: np.ndarray
    is_punctuation: np.ndarray
    texts: tuple[str, ...]
    space_before: np.ndarray
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.pieces)

    def word_of(self, token: int) -> str | None:
        """The word token ``token`` belongs to (None for start/end tokens)."""
        index = int(self.word_index[token])
        return None if index < 0 else self.words[index]


def tokenize_caption(tokenizer: Any, caption: str, context_length: int = 77) -> CaptionTokens:
    """Split a caption into open_clip BPE tokens and map each back to its word and characters.

    Args:
        tokenizer: an open_clip ``SimpleTokenizer`` (``LoadedModel.tokenizer``).
        caption: free text; must contain something to tokenize.
        context_length: the text tower's context (77 for CLIP). Longer captions are truncated
            with a warning, like the tokenizer does: the first ``context_length - 2`` tokens stay.

    Returns:
        CaptionTokens whose ids equal the tokenizer's own output up to end-of-text.
    """
    _check_tokenizer(tokenizer)
    if not isinstance(caption, str):
        raise TextInputError(f"The caption must be a string, not {type(caption).__name__}.")
    cleaned = tokenizer.clean_fn(caption)
    if not cleaned:
        raise TextInputError("The caption is empty: type a sentence describing the image, "
                             "e.g. 'a cat sitting on a sofa'.")
    ids, pieces, word_index, spans, words, word_spans = [], [], [], [], [], []
    finder = _SpanFinder(caption)
    for match in tokenizer.pat.finditer(cleaned):
        word = match.group()
        word_span = finder.find(word)
        word_ids, word_pieces, piece_spans = _word_pieces(tokenizer, word)
        for token_id, piece, (start, end) in zip(word_ids, word_pieces, piece_spans):
            ids.append(token_id)
            pieces.append(piece)
            word_index.append(len(words))
            spans.append(None if word_span is None else (word_span[0] + start, word_span[0] + end))
        words.append(word)
        word_spans.append(word_span)
    if not ids:
        raise TextInputError(f"The caption {caption!r} has nothing the tokenizer can read; type words.")
    _check_against_tokenizer(tokenizer, caption, ids)
    keep = context_length - 2
    dropped = max(0, len(ids) - keep)
    if dropped:
        shown = caption if len(caption) <= 60 else caption[:57] + "..."
        warnings.warn(f"Caption {shown!r} has {len(ids)} tokens; the text context holds {keep}, so the last "
                      f"{dropped} were dropped (like the tokenizer does). Shorten the caption to use all of it.",
                      stacklevel=3)
        ids, pieces, word_index, spans = ids[:keep], pieces[:keep], word_index[:keep], spans[:keep]
        words, word_spans = words[:word_index[-1] + 1], word_spans[:word_index[-1] + 1]
    all_ids = [tokenizer.sot_token_id, *ids, tokenizer.eot_token_id]
    all_pieces = (START_TEXT, *pieces, END_TEXT)
    special = np.zeros(len(all_ids), dtype=bool)
    special[[0, -1]] = True
    all_spans = (None, *spans, None)
    all_words = [-1, *word_index, -1]
    return CaptionTokens(
        caption=caption, ids=np.asarray(all_ids, dtype=np.int64), pieces=all_pieces,
        word_index=np.asarray(all_words, dtype=np.int64), spans=all_spans,
        words=tuple(words), word_spans=tuple(word_spans), is_special=special,
        is_punctuation=np.array([not s and is_punctuation(p) for s, p in zip(special, all_pieces)]),
        texts=tuple(_display_text(caption, piece, span) for piece, span in zip(all_pieces, all_spans)),
        space_before=_space_before(caption, all_spans, all_words), dropped=dropped)


def _display_text(caption: str, piece: str, span: tuple[int, int] | None) -> str:
    if span is None:
        return piece
    return caption[span[0]:span[1]] or PARTIAL_TEXT


def _space_before(caption: str, spans: Sequence[tuple[int, int] | None], words: Sequence[int]) -> np.ndarray:
    """Whether each token starts after white space (new words without spans count as spaced)."""
    out = np.zeros(len(spans), dtype=bool)
    for t in range(1, len(spans)):
        if words[t] == words[t - 1] and words[t] >= 0:
            continue  # a later piece of the same word
        previous, current = spans[t - 1], spans[t]
        out[t] = previous is None or current is None or caption[previous[1]:current[0]] != ""
    return out


def is_punctuation(text: str) -> bool:
    """True when ``text`` is non-empty and made only of punctuation characters (ASCII or Unicode)."""
    return bool(text) and all(c in string.punctuation or unicodedata.category(c).startswith("P") for c in text)


class _SpanFinder:
    """Finds the tokenizer's (lower-cased, cleaned) words in the original caption, left to right."""

    def __init__(self, caption: str):
        lowered = caption.lower()
        # Character positions only line up when lower-casing keeps the length (true for nearly all text).
        self._text = lowered if len(lowered) == len(caption) else None
        self._cursor = 0

    def find(self, word: str) -> tuple[int, int] | None:
        if self._text is None:
            return None
        start = self._text.find(word, self._cursor)
        if start < 0:
            return None  # the tokenizer rewrote this text (HTML entity, Unicode fix): no literal span
        self._cursor = start + len(word)
        return start, self._cursor


def _word_pieces(tokenizer: Any, word: str) -> tuple[list[int], list[str], list[tuple[int, int]]]:
    """BPE ids of one pre-token, each piece's readable text and its character span inside ``word``."""
    raw = word.encode("utf-8")
    symbols = "".join(tokenizer.byte_encoder[b] for b in raw)
    ids, texts, spans, offset = [], [], [], 0
    for piece in tokenizer.bpe(symbols).split(" "):
        ids.append(tokenizer.encoder[piece])
        piece_bytes = bytes(tokenizer.byte_decoder[c] for c in piece.removesuffix("</w>"))
        texts.append(piece_bytes.decode("utf-8", errors="replace"))
        end = offset + len(piece_bytes)
        # A piece that splits a multi-byte character owns that character only where the character ends.
        spans.append((len(raw[:offset].decode("utf-8", "ignore")), len(raw[:end].decode("utf-8", "ignore"))))
        offset = end
    return ids, texts, spans


def _check_tokenizer(tokenizer: Any) -> None:
    needed = ("clean_fn", "pat", "bpe", "encoder", "byte_encoder", "byte_decoder", "sot_token_id", "eot_token_id")
    missing = [name for name in needed if not hasattr(tokenizer, name)]
    if missing:
        raise UnsupportedModelError(
            f"Token attributions need open_clip's BPE SimpleTokenizer (the one of OpenAI CLIP models); "
            f"{type(tokenizer).__name__} lacks {', '.join(missing)}. Use a model such as ViT-B-16 or RN50.")


def _check_against_tokenizer(tokenizer: Any, caption: str, ids: list[int]) -> None:
    expected = tokenizer.encode(caption)
    if expected != ids:  # would mean open_clip changed its tokenizer: refuse rather than mislabel tokens
        raise UnsupportedModelError(f"Could not align the tokenizer's output with the caption {caption!r}; "
                                    f"this tokenizer is not supported for token attributions.")


# --- token features ------------------------------------------------------------------------------

@torch.no_grad()
def token_features(clip: nn.Module, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Features of every caption position: text transformer, ln_final, text_projection, L2-normalised.

    Args:
        clip: an open_clip ``CLIP`` (read, never changed).
        ids: int64 [T] one caption's ids from start-of-text to end-of-text (no padding).

    Returns:
        float32 [T, D] on the CPU, unit rows. The causal mask means position t sees tokens 0..t
        only, so running just T positions gives the same features as the padded 77-token pass;
        the end-of-text row is the caption's ``encode_text`` feature.
    """
    _check_text_tower(clip)
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).reshape(1, -1)
    length, context = ids.shape[1], clip.positional_embedding.shape[0]
    if length > context:
        raise TextInputError(f"{length} caption tokens exceed the text context of {context}; "
                             f"tokenize with tokenize_caption, which truncates.")
    device = clip.positional_embedding.device
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(ids.to(device)).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    mask = getattr(clip, "attn_mask", None)
    x = clip.ln_final(clip.transformer(x, attn_mask=None if mask is None else mask[:length, :length]))[0]
    proj = clip.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return F.normalize(x.float(), dim=-1).cpu()


def _check_text_tower(clip: nn.Module) -> None:
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    missing = [name for name in needed if not hasattr(clip, name)]
    if missing:
        raise UnsupportedModelError(f"The model has no open_clip text transformer (missing {', '.join(missing)}); "
                                    f"use an open_clip CLIP model such as ViT-B-16 or RN50.")


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

    tokens:         CaptionTokens (T tokens, start and end included).
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
    """Image-to-text token attributions of one caption on one image (SPEC 7).

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
    clip = explainer.model.model
    scale = float(clip.logit_scale.detach().exp()) if hasattr(clip, "logit_scale") else 100.0
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
    from .explainer import Explainer  # local import: explainer.py may import this module

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
