"""TEXTSPAN: describe what one attention head writes with a few texts (Gandelsman et al.;
docs/algorithms.md#text-based-decomposition).

A head's contributions over an image set, C [K x D], are explained greedily by texts from a pool:
the texts are first projected onto the span of C's top right singular vectors; then, m times,
the text whose direction varies most over the images is chosen and its direction removed from C
and from every text.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..cache import FeatureStore, content_hash, default_cache_dir
from ..errors import TextInputError
from ..precision import Precision
from ..text.encoding import encode_texts

TEXT_POOL_PATH = Path(__file__).resolve().parents[2] / "data" / "text_pool.txt"


def load_text_pool(path: str | os.PathLike | None = None) -> list[str]:
    """Texts for TEXTSPAN, one per line: the pool shipped with the package, or your own file.

    Blank lines and lines starting with ``#`` are skipped; repeated lines are kept once.
    """
    source = TEXT_POOL_PATH if path is None else Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TextInputError(f"Cannot read the text pool {str(source)!r} ({exc.strerror or exc}); pass a UTF-8 "
                             f"text file with one description per line, or a list of strings.") from None
    texts = list(dict.fromkeys(s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")))
    if not texts:
        raise TextInputError(f"The text pool {str(source)!r} has no texts: write one description per line.")
    return texts


def text_pool(texts: Sequence[str] | str | os.PathLike | None = None) -> list[str]:
    """A text list from None (the shipped pool), a file path, or a list of strings."""
    if texts is None or isinstance(texts, (str, os.PathLike)):
        return load_text_pool(texts)
    texts = list(dict.fromkeys(texts))
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad or not texts:
        raise TextInputError(f"Texts must be non-empty strings; got {bad[0]!r}." if bad else
                             "The text list is empty: pass descriptions, a file path, or None for the shipped pool.")
    return texts


def encode_text_pool(model: Any, texts: Sequence[str], chunk: int = 256, progress: bool = True,
                     cache_dir: str | os.PathLike | bool | None = False, precision: str | None = None) -> torch.Tensor:
    """Normalised embeddings [M, D] (float32, CPU) of pool texts, encoded as written (no templates).

    Args:
        model: an Explainer or a LoadedModel.
        chunk: texts per call of the text encoder (progress is shown per chunk).
        cache_dir: keep the whole pool's embeddings in one file under this folder, keyed by the
            model fingerprint and the texts (None: the user cache dir; False: no file).
        precision: as in :func:`encode_texts`; the file is kept per precision (fp32 keys as before).
    """
    loaded = getattr(model, "model", model) if hasattr(model, "label_features") else model
    texts = list(texts)
    if not texts:
        raise TextInputError("No texts to encode: pass a list of descriptions (or load_text_pool()).")
    store = None if cache_dir is False else FeatureStore(default_cache_dir() if cache_dir in (None, True)
                                                         else cache_dir)
    watch = getattr(loaded, "watch", None)  # a LoadedModel's fingerprint, checked against in-place changes
    if watch is None:
        store = None
    else:
        fingerprint, signature = watch.snapshot()
        tag = Precision.resolve(precision, loaded.device).cache_tag
        namespace, key = content_hash(fingerprint, "text-pool", *tag), content_hash(tuple(texts))
    if store is not None:
        saved = store.get(namespace, key, (len(texts), loaded.text_dim))  # validated; a bad file is recomputed
        if saved is not None:
            return torch.from_numpy(saved)
    feats = []
    for start in tqdm(range(0, len(texts), chunk), desc="Encoding texts", unit="chunk", disable=not progress):
        feats.append(encode_texts(loaded, None, texts[start:start + chunk], templates=None,
                                  precision=precision).float().cpu())
    out = torch.cat(feats)
    if store is not None and watch.unchanged(signature):
        store.put(namespace, key, out.numpy())
    return out


@torch.no_grad()
def text_span(contributions: torch.Tensor, text_features: torch.Tensor, texts: Sequence[str],
              m: int = 20, rank: int = 80) -> list[tuple[str, float]]:
    """TEXTSPAN for one head: the m texts that explain its contributions, in the order chosen.

    Args:
        contributions: C [K, D], the head's term for each of K images.
        text_features: T [M, D], normalised text embeddings; ``texts`` their M strings.
        m: how many texts to choose (fewer if the texts run out of directions).
        rank: project the texts onto the top-``rank`` right singular vectors of C (the paper's 80;
            keep it at least the head's width).
    Returns:
        [(text, fraction of the head's variance its direction removed)], fractions summing to <= 1.
    """
    c = _as_matrix(contributions, "contributions")
    t = _as_matrix(text_features, "text_features").to(c.device)
    if t.shape[1] != c.shape[1]:
        raise ValueError(f"contributions have {c.shape[1]} dims but text_features {t.shape[1]}: use embeddings "
                         f"from the same CLIP model.")
    if len(texts) != t.shape[0]:
        raise ValueError(f"{len(texts)} texts for {t.shape[0]} text embeddings: pass one string per row.")
    if m < 1 or rank < 1:
        raise ValueError(f"m and rank must be at least 1 (got m={m}, rank={rank}).")
    # Texts in the subspace the head actually writes to (right singular vectors of the raw C).
    basis = torch.linalg.svd(c, full_matrices=False).Vh[:rank]  # [r, D], orthonormal rows
    t = (t @ basis.T) @ basis
    c = c - c.mean(0, keepdim=True)
    total = float((c * c).sum())
    chosen: list[tuple[str, float]] = []
    if total <= 0:
        return chosen  # the head writes the same vector for every image: nothing varies
    for _ in range(min(m, t.shape[0])):
        if float((c * c).sum()) <= 1e-10 * total:
            break  # every direction the head varies in is explained (e.g. fewer images than m)
        norms = (t * t).sum(1)
        if float(norms.max()) <= 1e-12 * max(1.0, float(t.abs().max()) ** 2):
            break  # every remaining text has been projected away
        variance = (c @ t.T).pow(2).mean(0)  # C is centred: variance over images of C t_j
        j = int(variance.argmax())
        direction = t[j] / norms[j].sqrt()
        before = float((c * c).sum())
        c = c - torch.outer(c @ direction, direction)
        t = t - torch.outer(t @ direction, direction)
        chosen.append((texts[j], (before - float((c * c).sum())) / total))
    return chosen


def text_span_heads(terms: Any, text_features: torch.Tensor, texts: Sequence[str], last_layers: int = 4,
                    m: int = 20, rank: int = 80, heads: Sequence[tuple[int, int]] | None = None,
                    progress: bool = True) -> dict[tuple[int, int], list[tuple[str, float]]]:
    """TEXTSPAN for every head of the last ``last_layers`` layers (or the given (layer, head) pairs).

    terms: per-head terms of an image set, e.g. :func:`decompose_images`'s ImageSetTerms, or any
    object with ``head_terms()`` -> [K, L, H, D]. Returns {(layer, head): [(text, fraction), ...]}.
    """
    per_head = terms.head_terms() if hasattr(terms, "head_terms") else terms
    if per_head.ndim != 4:
        raise ValueError(f"Expected per-head terms [K, L, H, D], got shape {list(per_head.shape)}.")
    layers, count = per_head.shape[1], per_head.shape[2]
    if heads is None:
        if not 1 <= last_layers <= layers:
            raise ValueError(f"last_layers must be from 1 to {layers} (the model's layers), not {last_layers}.")
        heads = [(layer, h) for layer in range(layers - last_layers, layers) for h in range(count)]
    out = {}
    for layer, head in tqdm(list(heads), desc="TEXTSPAN", unit="head", disable=not progress):
        out[(layer, head)] = text_span(per_head[:, layer, head], text_features, texts, m=m, rank=rank)
    return out


def _as_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a 2-D tensor [rows, D], got shape {list(x.shape)}.")
    return x.double()  # the greedy removals accumulate: double keeps the ranking stable
