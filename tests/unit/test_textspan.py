"""TEXTSPAN (docs/algorithms.md#text-based-decomposition) on planted data, against a literal numpy reference; the text pool and its loader."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.decomposition.textspan import (
    TEXT_POOL_PATH,
    encode_text_pool,
    load_text_pool,
    text_pool,
    text_span,
    text_span_heads,
)
from clipsurgery_widgets.engine.errors import TextInputError
from clipsurgery_widgets.engine.text.encoding import encode_texts

D = 16


def planted(seed=0, k=400, stds=(3.0, 2.0, 1.0), noise=0.05, distractors=30):
    """Contributions = 3 orthonormal directions with decreasing spread + a constant offset + noise.

    Texts: the three directions (slightly perturbed) hidden among random distractors.
    """
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0].T  # orthonormal rows
    coeffs = torch.randn(k, len(stds), generator=g, dtype=torch.float64) * torch.tensor(stds, dtype=torch.float64)
    c = coeffs @ basis[: len(stds)] + 0.7 * basis[5] + noise * torch.randn(k, D, generator=g, dtype=torch.float64)
    texts = [f"distractor {i}" for i in range(distractors)]
    feats = [F.normalize(torch.randn(D, generator=g, dtype=torch.float64), dim=0) for _ in range(distractors)]
    names = ["big spread", "medium spread", "small spread"]
    for i, name in enumerate(names):
        pos = int(torch.randint(0, len(texts) + 1, (1,), generator=g))
        texts.insert(pos, name)
        feats.insert(pos, F.normalize(basis[i] + 0.05 * torch.randn(D, generator=g, dtype=torch.float64), dim=0))
    return c.float(), torch.stack(feats).float(), texts, basis


def reference_text_span(c, t, texts, m, rank):
    """docs/algorithms.md#text-based-decomposition written literally with numpy: projector V^T (V V^T)^-1 V, centring, greedy removal."""
    c = np.asarray(c, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    v = np.linalg.svd(c, full_matrices=False)[2][:rank]
    t = (v.T @ np.linalg.inv(v @ v.T) @ v @ t.T).T
    c = c - c.mean(0)
    total = (c ** 2).sum()
    out = []
    for _ in range(m):
        variances = [np.var(c @ t[j]) for j in range(len(t))]
        j = int(np.argmax(variances))
        norm2 = t[j] @ t[j]
        before = (c ** 2).sum()
        c = c - np.outer(c @ t[j] / norm2, t[j])
        t = t - np.outer(t @ t[j] / norm2, t[j])
        out.append((texts[j], (before - (c ** 2).sum()) / total))
    return out


def test_planted_directions_are_found_in_order_of_spread():
    c, t, texts, _ = planted()
    result = text_span(c, t, texts, m=3, rank=D)
    assert [name for name, _ in result] == ["big spread", "medium spread", "small spread"]
    fractions = [f for _, f in result]
    # each planted direction carries std^2 / sum(std^2) of the variance (9, 4, 1 out of 14)
    np.testing.assert_allclose(fractions, [9 / 14, 4 / 14, 1 / 14], atol=0.06)
    assert sum(fractions) <= 1 + 1e-9


def test_matches_the_literal_reference_on_random_data():
    g = torch.Generator().manual_seed(3)
    c = torch.randn(60, D, generator=g) @ torch.randn(D, D, generator=g)
    t = F.normalize(torch.randn(40, D, generator=g), dim=-1)
    texts = [f"t{i}" for i in range(40)]
    ours = text_span(c, t, texts, m=8, rank=10)
    ref = reference_text_span(c, t, texts, m=8, rank=10)
    assert [name for name, _ in ours] == [name for name, _ in ref]
    np.testing.assert_allclose([f for _, f in ours], [f for _, f in ref], rtol=1e-6, atol=1e-9)


def test_text_components_outside_the_head_span_do_not_matter():
    c, t, texts, basis = planted(seed=1)
    c = c - 0.7 * basis[5].float()  # contributions now live in span(basis[:3]) (+ small noise)
    c = (c @ basis[:3].T.float()) @ basis[:3].float()  # exactly rank 3
    off_span = t + 3.0 * basis[10].float()  # every text gets a large component the head never writes
    assert [n for n, _ in text_span(c, t, texts, m=3, rank=3)] == \
        [n for n, _ in text_span(c, off_span, texts, m=3, rank=3)]


def test_stops_when_texts_run_out_and_never_repeats():
    c, t, texts, _ = planted(distractors=2)
    result = text_span(c, t, texts, m=50, rank=D)
    names = [name for name, _ in result]
    assert len(names) == len(set(names)) <= len(texts)


def test_constant_contributions_have_nothing_to_explain():
    c = torch.ones(10, D)
    assert text_span(c, F.normalize(torch.randn(5, D), dim=-1), list("abcde")) == []


def test_text_span_errors():
    c, t, texts, _ = planted()
    with pytest.raises(ValueError, match="same CLIP model"):
        text_span(c, t[:, :8], texts)
    with pytest.raises(ValueError, match="one string per row"):
        text_span(c, t, texts[:-1])
    with pytest.raises(ValueError, match="2-D"):
        text_span(c[0], t, texts)
    with pytest.raises(ValueError, match="at least 1"):
        text_span(c, t, texts, m=0)


def test_text_span_heads_labels_the_last_layers():
    c, t, texts, _ = planted()
    per_head = torch.zeros(c.shape[0], 3, 2, D)
    per_head[:, 2, 1] = c  # only head (2, 1) varies over images
    out = text_span_heads(per_head, t, texts, last_layers=2, m=2, rank=D, progress=False)
    assert sorted(out) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert [n for n, _ in out[(2, 1)]] == ["big spread", "medium spread"] and out[(1, 0)] == []
    only = text_span_heads(per_head, t, texts, heads=[(2, 1)], m=1, rank=D, progress=False)
    assert list(only) == [(2, 1)]
    with pytest.raises(ValueError, match="last_layers must be from 1 to 3"):
        text_span_heads(per_head, t, texts, last_layers=4, progress=False)


# --- the text pool --------------------------------------------------------------------------------

def test_shipped_pool_is_a_few_thousand_distinct_short_descriptions():
    pool = load_text_pool()
    assert 2000 <= len(pool) <= 10000
    assert len({p.lower() for p in pool}) == len(pool)
    assert all(p == p.strip() and 0 < len(p) <= 80 for p in pool)
    raw_lines = TEXT_POOL_PATH.read_text(encoding="utf-8").splitlines()
    assert len(raw_lines) == len(pool)  # the file itself is clean: no blanks, comments or repeats
    # a spread of kinds of descriptions, not one template
    for word in ("photo", "red", "texture", "painting", "letters", "view", "light", "three", "made of"):
        assert any(word in p for p in pool), word


def test_own_pool_file_and_list(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("# my texts\na red car\n\n  a red car \na blue sky\n", encoding="utf-8")
    assert load_text_pool(path) == ["a red car", "a blue sky"]
    assert text_pool(str(path)) == ["a red car", "a blue sky"]
    assert text_pool(["x", "y", "x"]) == ["x", "y"]
    assert text_pool(None) == load_text_pool()


def test_pool_errors(tmp_path):
    with pytest.raises(TextInputError, match="Cannot read the text pool"):
        load_text_pool(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(TextInputError, match="has no texts"):
        load_text_pool(tmp_path / "empty.txt")
    with pytest.raises(TextInputError, match="non-empty strings"):
        text_pool(["ok", ""])
    with pytest.raises(TextInputError, match="empty"):
        text_pool([])


def test_encode_text_pool_matches_encode_texts_in_chunks(tiny_vit):
    texts = ["a red car", "a dog", "stripes", "a photo taken at night", "lettering", "x", "a cat"]
    chunked = encode_text_pool(tiny_vit, texts, chunk=3, progress=False)
    direct = encode_texts(tiny_vit, None, texts, templates=None)
    torch.testing.assert_close(chunked, direct, atol=1e-5, rtol=1e-5)


def test_encoded_pool_is_cached_in_one_file(tiny_vit, tmp_path, monkeypatch):
    from clipsurgery_widgets.engine.decomposition import textspan

    texts = ["a red car", "a dog", "stripes"]
    first = encode_text_pool(tiny_vit, texts, progress=False, cache_dir=tmp_path)
    assert len(list(tmp_path.rglob("*.npy"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the cached pool should have been read")

    monkeypatch.setattr(textspan, "encode_texts", fail)
    assert torch.equal(encode_text_pool(tiny_vit, texts, progress=False, cache_dir=tmp_path), first)
    with pytest.raises(AssertionError):  # other texts are another pool
        encode_text_pool(tiny_vit, texts[:2], progress=False, cache_dir=tmp_path)


def test_stops_when_the_head_variance_is_explained():
    """With K images, the projected texts span at most K directions: the head is explained by then."""
    g = torch.Generator().manual_seed(5)
    c = torch.randn(3, D, generator=g)
    t = F.normalize(torch.randn(50, D, generator=g), dim=-1)
    result = text_span(c, t, [str(i) for i in range(50)], m=20, rank=D)
    assert 2 <= len(result) <= 3
    assert sum(f for _, f in result) == pytest.approx(1.0, abs=1e-6)
