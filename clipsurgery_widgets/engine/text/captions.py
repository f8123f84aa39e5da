"""Caption tokenisation: BPE pieces merged into words with character spans, and per-token text features."""
from __future__ import annotations

import string
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TextInputError, UnsupportedModelError
from .encoding import check_text_tower

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


# --- words ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CaptionWords:
    """A caption's tokens grouped into units a reader sees: the start token, each word, the end token.

    A word is one of the tokenizer's pre-tokens ("whiskers", "'s", ","), made of one or more BPE
    pieces ("whis" + "kers"). Reads like :class:`CaptionTokens` where a ranking or a figure reads it
    (``len``, ``texts``, ``space_before``, ``is_special``, ``is_punctuation``, ``caption``,
    ``dropped``), with one entry per unit (W units, unit 0 = start, unit W-1 = end).

    tokens:         the CaptionTokens the units are made of (T tokens).
    members:        W tuples of token indices: each unit's pieces, in caption order.
    texts:          W display texts: the word as written in the caption (its pieces joined).
    pieces:         W tuples: the display text of each of the unit's pieces.
    space_before:   bool [W], from each unit's first piece.
    is_special:     bool [W], True for the start and end units.
    is_punctuation: bool [W], True for words made only of punctuation.
    token_unit:     int64 [T] the unit of each token.
    """

    tokens: CaptionTokens
    members: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...]
    pieces: tuple[tuple[str, ...], ...]
    space_before: np.ndarray
    is_special: np.ndarray
    is_punctuation: np.ndarray
    token_unit: np.ndarray

    def __len__(self) -> int:
        return len(self.members)

    @property
    def caption(self) -> str:
        return self.tokens.caption

    @property
    def dropped(self) -> int:
        """Caption tokens cut off to fit the text context (see :class:`CaptionTokens`)."""
        return self.tokens.dropped

    def pool(self, values: np.ndarray) -> np.ndarray:
        """Mean over each unit's pieces along the last axis: float [..., T] -> float32 [..., W]."""
        values = np.asarray(values, dtype=np.float32)
        if values.shape[-1] != len(self.tokens):
            raise ValueError(f"Expected {len(self.tokens)} values per row (one per token), got {values.shape[-1]}.")
        weights = np.zeros((len(self.tokens), len(self.members)), dtype=np.float32)
        for unit, members in enumerate(self.members):
            weights[list(members), unit] = 1.0 / len(members)
        return (values @ weights).astype(np.float32)


def caption_words(tokens: CaptionTokens) -> CaptionWords:
    """Group a caption's BPE tokens into words (runs of pieces of one pre-token); the start and
    end tokens are units of their own. A caption whose words are single pieces keeps its indices."""
    members: list[list[int]] = []
    for t in range(len(tokens)):
        word = int(tokens.word_index[t])
        if members and word >= 0 and int(tokens.word_index[members[-1][0]]) == word:
            members[-1].append(t)
        else:
            members.append([t])
    texts, pieces = [], []
    for group in members:
        spans = [tokens.spans[t] for t in group]
        if all(span is not None for span in spans):  # as written, multi-byte characters whole
            texts.append(tokens.caption[spans[0][0]:spans[-1][1]] or tokens.texts[group[0]])
        else:
            texts.append("".join(tokens.texts[t] for t in group))
        pieces.append(tuple(tokens.texts[t] for t in group))
    token_unit = np.zeros(len(tokens), dtype=np.int64)
    for unit, group in enumerate(members):
        token_unit[group] = unit
    return CaptionWords(
        tokens=tokens, members=tuple(tuple(g) for g in members), texts=tuple(texts), pieces=tuple(pieces),
        space_before=np.array([bool(tokens.space_before[g[0]]) for g in members]),
        is_special=np.array([bool(tokens.is_special[g[0]]) for g in members]),
        is_punctuation=np.array([bool(all(tokens.is_punctuation[t] for t in g)) for g in members]),
        token_unit=token_unit)


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
    check_text_tower(clip, pooled=False)
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



