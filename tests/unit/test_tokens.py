"""Token attributions (docs/algorithms.md#token-attribution): caption pieces, token features, scores, filters, regions, captions."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.attribution import (
    attribute_tokens,
    caption_matches,
    region_weights,
    token_attributions,
)
from clipsurgery_widgets.engine.errors import TextInputError, UnsupportedModelError
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.text.captions import (
    END_TEXT,
    PARTIAL_TEXT,
    START_TEXT,
    is_punctuation,
    token_features,
    tokenize_caption,
)
from clipsurgery_widgets.engine.text.encoding import encode_texts

CAPTIONS = [
    "A cat sitting on a sofa.",
    "Two dogs, one   black and one white, playing in the SNOW!",
    "a cat-dog's toy (unbelievably wonderful) x2",
    "naïve café owner with a 🐱 and 東京 tower",
]


@pytest.fixture(scope="module")
def image():
    gen = np.random.default_rng(0)
    return gen.integers(0, 256, size=(90, 130, 3), dtype=np.uint8)


def reference_token_features(clip, tokenizer, caption):
    """Every position's feature from the plain full-context encode_text, captured at ln_final."""
    captured = {}
    handle = clip.ln_final.register_forward_hook(lambda m, i, o: captured.setdefault("x", o.detach()))
    try:
        ids = tokenizer([caption])
        with torch.no_grad():
            pooled = clip.encode_text(ids)
    finally:
        handle.remove()
    length = int(ids[0].argmax()) + 1  # end-of-text has the largest id
    feats = captured["x"][0, :length] @ clip.text_projection.detach()
    return F.normalize(feats, dim=-1), F.normalize(pooled[0], dim=-1)


def literal_surgery(image_feats, text_feats):
    """docs/algorithms.md#feature-surgery multi-label surgery, 4-D form: w = T softmax(2 F0.G); (w F*G - mean_t) summed over C."""
    f = image_feats[0].double()
    g = text_feats.double()
    w = g.shape[0] * torch.softmax(2 * (f[0] @ g.T), dim=-1)
    products = f[:, None, :] * g[None, :, :] * w[None, :, None]  # [1+N, T, C]
    return (products - products.mean(dim=1, keepdim=True)).sum(-1)  # [1+N, T]


# --- caption pieces -------------------------------------------------------------------------------

@pytest.mark.parametrize("caption", CAPTIONS)
def test_pieces_map_back_to_the_caption(tiny_vit, caption):
    tokens = tokenize_caption(tiny_vit.tokenizer, caption)
    expected_ids = tiny_vit.tokenizer([caption])[0]
    expected_ids = expected_ids[:int(expected_ids.argmax()) + 1].numpy()
    np.testing.assert_array_equal(tokens.ids, expected_ids)
    assert tokens.pieces[0] == START_TEXT and tokens.pieces[-1] == END_TEXT
    assert tokens.word_index[0] == -1 and tokens.word_index[-1] == -1
    # words, in order, spell the caption without spaces (lower-cased)
    assert "".join(tokens.words) == "".join(caption.lower().split())
    for w, (word, span) in enumerate(zip(tokens.words, tokens.word_spans)):
        assert span is not None and caption[span[0]:span[1]].lower() == word
        members = np.flatnonzero(tokens.word_index == w)
        assert len(members) >= 1 and np.all(np.diff(members) == 1)  # a word's pieces are contiguous
        # pieces' spans tile the word's span
        spans = [tokens.spans[t] for t in members]
        assert spans[0][0] == span[0] and spans[-1][1] == span[1]
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    # display texts keep the caption's case and spacing
    joined = "".join((" " if space else "") + (text if text != PARTIAL_TEXT else "")
                     for text, space in zip(tokens.texts[1:-1], tokens.space_before[1:-1]))
    assert joined.strip() == " ".join(caption.split())
    for t in range(1, len(tokens) - 1):
        start, end = tokens.spans[t]
        assert tokens.texts[t] == (caption[start:end] or PARTIAL_TEXT)
        piece = tokens.pieces[t]
        if "\ufffd" not in piece:  # a piece holding part of a multi-byte character reads as U+FFFD
            assert caption[start:end].lower() == piece


def test_multi_piece_words_keep_their_mapping(tiny_vit):
    tokens = tokenize_caption(tiny_vit.tokenizer, "onerror naïve")
    assert tokens.words == ("onerror", "naïve")
    first = [tokens.pieces[t] for t in np.flatnonzero(tokens.word_index == 0)]
    assert len(first) >= 2 and "".join(first) == "onerror"
    assert tokens.word_of(1) == "onerror" and tokens.word_of(0) is None


def test_pieces_splitting_a_character(tiny_vit):
    tokens = tokenize_caption(tiny_vit.tokenizer, "東京 cat")
    kyo = [t for t in range(len(tokens)) if tokens.word_index[t] == 0]
    # the byte-level pieces of 東京 spell it in order; partial pieces read as a dot, never as nothing
    assert "".join(tokens.texts[t] for t in kyo).replace(PARTIAL_TEXT, "") == "東京"
    assert all(tokens.texts[t] for t in kyo)
    assert tokens.spans[kyo[-1]][1] == 2 and tokens.texts[kyo[-1] + 1] == "cat"


def test_rewritten_text_has_no_literal_span(tiny_vit):
    tokens = tokenize_caption(tiny_vit.tokenizer, "fish &lt;3")  # the tokenizer unescapes HTML entities
    assert tokens.words == ("fish", "<", "3")
    assert tokens.word_spans[1] is None and tokens.spans[2] is None
    assert tokens.word_spans[2] == (9, 10)  # later words are still found


def test_punctuation_and_special_flags(tiny_vit):
    tokens = tokenize_caption(tiny_vit.tokenizer, "a cat, (sleeping)... «quietly» 's")
    flagged = {tokens.pieces[t] for t in np.flatnonzero(tokens.is_punctuation)}
    assert flagged == {",", "(", ")...", "«", "»"}
    assert not any(tokens.is_punctuation[t] for t, p in enumerate(tokens.pieces) if p in ("a", "cat", "'s"))
    np.testing.assert_array_equal(np.flatnonzero(tokens.is_special), [0, len(tokens) - 1])
    assert not tokens.is_punctuation[0] and not tokens.is_punctuation[-1]
    assert is_punctuation("«»") and is_punctuation("...") and not is_punctuation("x2") and not is_punctuation("")


def test_long_caption_is_truncated_with_a_warning(tiny_vit):
    caption = " ".join(f"word{i}" for i in range(60))  # "word", digit(s): well over 75 tokens
    with pytest.warns(UserWarning, match="dropped"):
        tokens = tokenize_caption(tiny_vit.tokenizer, caption)
    assert len(tokens) == 77 and tokens.dropped > 0
    full = tiny_vit.tokenizer([caption])[0].numpy()
    np.testing.assert_array_equal(tokens.ids, full)  # same truncation as the tokenizer
    assert tokens.word_index[-2] == len(tokens.words) - 1


def test_caption_exactly_filling_the_context_does_not_warn(tiny_vit):
    caption = " ".join(["cat"] * 75)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens = tokenize_caption(tiny_vit.tokenizer, caption)
    assert len(tokens) == 77 and tokens.dropped == 0


@pytest.mark.parametrize("caption", ["", "   \n\t "])
def test_empty_caption_is_a_clear_error(tiny_vit, explainer, image, caption):
    with pytest.raises(TextInputError, match="empty"):
        tokenize_caption(tiny_vit.tokenizer, caption)
    with pytest.raises(TextInputError, match="empty"):
        token_attributions(explainer, image, caption)


def test_non_string_caption_and_foreign_tokenizer_are_refused(tiny_vit):
    with pytest.raises(TextInputError, match="string"):
        tokenize_caption(tiny_vit.tokenizer, ["a cat"])
    with pytest.raises(UnsupportedModelError, match="SimpleTokenizer"):
        tokenize_caption(lambda texts: None, "a cat")


# --- token features and scores --------------------------------------------------------------------

@pytest.mark.parametrize("caption", CAPTIONS[:2])
def test_token_features_equal_the_full_context_pass(tiny_vit, caption):
    tokens = tokenize_caption(tiny_vit.tokenizer, caption)
    feats = token_features(tiny_vit.model, tokens.ids)
    expected, pooled = reference_token_features(tiny_vit.model, tiny_vit.tokenizer, caption)
    assert feats.shape == (len(tokens), tiny_vit.model.text_projection.shape[1])
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(feats[-1], pooled, atol=1e-5, rtol=0)  # end-of-text row is the caption feature


@pytest.mark.parametrize("model_fixture", ["tiny_vit", "tiny_resnet"])
def test_scores_equal_the_multi_label_surgery_of_the_token_features(request, model_fixture, image):
    model = request.getfixturevalue(model_fixture)
    explainer = Explainer(model, cache_dir=False)
    caption = "a cat sitting on a sofa."
    result = token_attributions(explainer, image, caption)
    image_feats = F.normalize(explainer.image_tokens(image, 224, 6).surgery, dim=-1)
    text_feats, pooled = reference_token_features(model.model, model.tokenizer, caption)
    expected = literal_surgery(image_feats, text_feats).float()  # [1+N, T]
    np.testing.assert_allclose(result.global_scores, expected[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(result.patch_scores, expected[1:].numpy(), atol=1e-5)
    np.testing.assert_allclose(result.scores, expected[0].numpy(), atol=1e-5)
    as_max = token_attributions(explainer, image, caption, score="max")
    np.testing.assert_allclose(as_max.scores, expected[1:].max(dim=0).values.numpy(), atol=1e-5)
    # the caption's map: free-sentence surgery F_i . (G - r), r the prompt-ensembled empty string
    r = encode_texts(model.model, model.tokenizer, [""])[0]
    caption_scores = image_feats[0, 1:].double() @ (pooled.double() - r.double())
    np.testing.assert_allclose(result.caption_patch_scores, caption_scores.numpy(), atol=1e-5)
    low, high = caption_scores.min(), caption_scores.max()
    gh, gw = result.grid
    expected_map = F.interpolate(((caption_scores - low) / (high - low)).float().reshape(1, 1, gh, gw),
                                 size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    # min-max divides by the spread, which is small for random weights: float error grows accordingly
    np.testing.assert_allclose(result.caption_map, expected_map.numpy(), atol=1e-3)


def test_ranking_and_maps(explainer, image):
    result = token_attributions(explainer, image, "a cat sitting on a sofa.")
    shown = np.flatnonzero(result.shown)
    assert list(shown) == list(range(1, len(result.tokens) - 1))  # default: no start/end, punctuation kept
    by_hand = sorted(shown, key=lambda t: (-result.scores[t], t))
    assert list(result.order) == by_hand and result.top() == by_hand[:3]
    assert [int(result.rank[t]) for t in by_hand] == list(range(len(by_hand)))
    assert result.rank[0] == -1 and result.rank[-1] == -1
    gh, gw = result.grid
    assert result.token_maps.shape == (len(result.tokens), gh, gw)
    for t in (1, 3):
        col = result.patch_scores[:, t]
        np.testing.assert_allclose(result.token_maps[t].ravel(), (col - col.min()) / (col.max() - col.min()),
                                   atol=1e-6)
        full = result.image_map(t)
        expected = F.interpolate(torch.from_numpy(result.token_maps[t])[None, None], size=image.shape[:2],
                                 mode="bilinear", align_corners=False)[0, 0].numpy()
        assert full.shape == image.shape[:2]
        np.testing.assert_allclose(full, expected, atol=1e-6)
    with pytest.raises(IndexError, match="out of range"):
        result.image_map(len(result.tokens))


def test_filters_hide_tokens_without_changing_scores(explainer, image):
    caption = "a cat, on a sofa."
    plain = token_attributions(explainer, image, caption)
    every = token_attributions(explainer, image, caption, include_special=True)
    no_punct = token_attributions(explainer, image, caption, include_punctuation=False)
    np.testing.assert_array_equal(plain.scores, every.scores)
    np.testing.assert_array_equal(plain.scores, no_punct.scores)
    tokens = plain.tokens
    assert every.shown.all()
    np.testing.assert_array_equal(no_punct.shown, ~tokens.is_special & ~tokens.is_punctuation)
    assert {tokens.pieces[t] for t in np.flatnonzero(~no_punct.shown)} == {START_TEXT, END_TEXT, ",", "."}
    # with_options gives what a fresh call gives, without the model
    again = plain.with_options(score="max", include_special=True, include_punctuation=False)
    fresh = token_attributions(explainer, image, caption, score="max", include_special=True,
                               include_punctuation=False)
    np.testing.assert_array_equal(again.order, fresh.order)
    np.testing.assert_array_equal(again.rank, fresh.rank)


def test_bad_options_are_refused(explainer, image):
    with pytest.raises(ValueError, match="'global'"):
        token_attributions(explainer, image, "a cat", score="mean")
    with pytest.raises(TypeError, match="include_special"):
        token_attributions(explainer, image, "a cat", include_special="no")
    with pytest.raises(TypeError, match="Explainer"):
        token_attributions(object(), image, "a cat")


def test_a_loaded_model_is_accepted(tiny_vit, explainer, image):
    direct = token_attributions(tiny_vit, image, "a cat")
    np.testing.assert_allclose(direct.scores, token_attributions(explainer, image, "a cat").scores, atol=1e-6)


# --- the reverse direction: region -> tokens ------------------------------------------------------

def planted(tiny_vit, caption="red apple on blue plate"):
    """Orthonormal token features; each patch is a copy of one token's feature.

    Grid 3 x 4; the top-left 2 x 2 block is token "apple", column 3 is "plate", the rest is "on".
    """
    tokens = tokenize_caption(tiny_vit.tokenizer, caption)
    gen = torch.Generator().manual_seed(0)
    text = torch.linalg.qr(torch.randn(32, len(tokens), generator=gen, dtype=torch.float64))[0].T  # orthonormal
    apple, on, plate = (tokens.pieces.index(w) for w in ("apple", "on", "plate"))
    layout = np.full((3, 4), on)
    layout[:2, :2] = apple
    layout[:, 3] = plate
    glob = F.normalize(text.mean(0), dim=-1)
    image_feats = torch.cat([glob[None], text[layout.ravel()]])[None]  # [1, 1+12, D]
    empty = F.normalize(torch.ones(text.shape[1], dtype=torch.float64), dim=0)
    result = attribute_tokens(tokens, image_feats, text, empty, grid=(3, 4), image_size=(60, 80))
    return result, {"apple": apple, "on": on, "plate": plate}


def test_reverse_direction_on_a_planted_example(tiny_vit):
    result, ids = planted(tiny_vit)
    assert result.tokens_at(0).order[0] == ids["apple"]
    assert result.tokens_at(1 * 4 + 3).order[0] == ids["plate"]
    assert result.tokens_at(2 * 4 + 1).order[0] == ids["on"]
    # clicks in pixels: (x, y) = (10, 10) is patch (0, 0); (75, 5) is patch (0, 3)
    assert result.patch_at(10, 10) == 0 and result.patch_at(75, 5) == 3
    assert result.tokens_at(result.patch_at(75, 5)).order[0] == ids["plate"]
    # a pixel mask over the left half of the top two rows: the apple block
    mask = np.zeros((60, 80), dtype=bool)
    mask[:40, :40] = True
    ranking = result.tokens_at(mask)
    assert ranking.order[0] == ids["apple"]
    np.testing.assert_allclose(ranking.weights.reshape(3, 4)[:2, :2], 0.25)
    # a grid mask mixing 1 apple patch and 3 "on" patches ranks "on" first
    grid_mask = np.zeros((3, 4))
    grid_mask[1, 1] = 1
    grid_mask[2, :3] = 1
    assert result.tokens_at(grid_mask).order[0] == ids["on"]
    # the token's own map peaks where it was planted
    assert np.unravel_index(result.token_maps[ids["plate"]].argmax(), (3, 4))[1] == 3


def test_region_scores_are_weighted_means(tiny_vit):
    result, _ = planted(tiny_vit)
    weights = np.zeros((3, 4))
    weights[0, 0], weights[2, 3] = 3.0, 1.0
    ranking = result.tokens_at(weights)
    expected = (3 * result.patch_scores[0] + result.patch_scores[11]) / 4
    np.testing.assert_allclose(ranking.scores, expected, atol=1e-6)
    assert set(ranking.order) == set(np.flatnonzero(result.shown))


def test_region_errors(tiny_vit):
    result, _ = planted(tiny_vit)
    with pytest.raises(ValueError, match="out of range"):
        result.tokens_at(12)
    with pytest.raises(ValueError, match="empty"):
        result.tokens_at(np.zeros((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        result.tokens_at(np.ones((5, 5), dtype=bool))
    with pytest.raises(ValueError, match="non-negative"):
        region_weights(-np.ones((3, 4)), (3, 4), (60, 80))
    with pytest.raises(ValueError, match="outside"):
        result.patch_at(81, 10)


def test_patch_at_covers_the_image(tiny_vit):
    result, _ = planted(tiny_vit)  # grid 3 x 4 on a 60 x 80 image: 20 x 20 pixel patches
    assert result.patch_at(0, 0) == 0 and result.patch_at(79, 59) == 11
    assert result.patch_at(19.4, 19.4) == 0 and result.patch_at(19.6, 19.6) == 5


# --- several captions -----------------------------------------------------------------------------

def test_caption_matches(explainer, image, tiny_vit):
    captions = ["a cat on a sofa", "a red car", "snow"]
    matches = caption_matches(explainer, image, captions)
    assert [a.caption for a in matches.attributions] == captions
    for caption, attribution in zip(captions, matches.attributions):
        alone = token_attributions(explainer, image, caption)
        np.testing.assert_allclose(attribution.scores, alone.scores, atol=1e-6)
    # independent: pooled features from encode_text, docs/algorithms.md#feature-surgery multi-label surgery across captions
    with torch.no_grad():
        pooled = F.normalize(tiny_vit.model.encode_text(tiny_vit.tokenizer(captions)), dim=-1)
    image_feats = F.normalize(explainer.image_tokens(image, 224, 6).surgery, dim=-1)
    expected = literal_surgery(image_feats, pooled)[1:].float().numpy()
    np.testing.assert_allclose(matches.caption_patch_scores, expected, atol=1e-5)
    gh, gw = matches.grid
    np.testing.assert_array_equal(matches.assignment, expected.argmax(1).reshape(gh, gw))
    # CLIP's own choice: softmax of logit_scale * cosine with the raw global embedding
    tokens = explainer.image_tokens(image, 224, 6)
    logits = tiny_vit.model.logit_scale.exp().item() * (F.normalize(tokens.raw[0, 0], dim=-1) @ pooled.T)
    np.testing.assert_allclose(matches.probs, torch.softmax(logits, -1).numpy(), atol=1e-5)
    region = matches.at(5)
    np.testing.assert_allclose(region.caption_scores, expected[5], atol=1e-5)
    assert region.caption_order[0] == expected[5].argmax()
    np.testing.assert_array_equal(region.rankings[1].order, matches.attributions[1].tokens_at(5).order)


def test_caption_matches_input_errors(explainer, image):
    with pytest.raises(TextInputError, match="list"):
        caption_matches(explainer, image, "a cat")
    with pytest.raises(TextInputError, match="list"):
        caption_matches(explainer, image, [])
    with pytest.raises(TextInputError, match="empty"):
        caption_matches(explainer, image, ["a cat", " "])
    single = caption_matches(explainer, image, ["a cat"])
    assert single.caption_patch_scores.shape[1] == 1 and (single.assignment == 0).all()
