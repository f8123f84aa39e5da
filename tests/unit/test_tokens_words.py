"""Words made of several BPE pieces: the engine's grouping and pooling, and the TokenExplorer's word chips,
its "ranked at the clicked patch" line, its control labels, its layout and its non-blocking constructor."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from clipsurgery_widgets.engine.attribution import token_attributions
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.text.captions import CaptionWords, caption_words, tokenize_caption
from clipsurgery_widgets.widgets.tokens import TokenExplorer

CAPTION = "A cat with whiskers, on a ragamuffin sofa."
# what a reader sees: one unit per word, the start and end tokens apart
WORDS = ["<start>", "A", "cat", "with", "whiskers", ",", "on", "a", "ragamuffin", "sofa", ".", "<end>"]


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 256, size=(80, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pieces(explainer, image):
    """The token-level attribution (one entry per BPE piece)."""
    return token_attributions(explainer, image, CAPTION)


@pytest.fixture
def widget(explainer, image):
    w = TokenExplorer(explainer, image, CAPTION)
    assert w.wait(30) and w.error is None, w.error
    return w


def unit_of(words: CaptionWords, text: str) -> int:
    return words.texts.index(text)


# --- engine: grouping ----------------------------------------------------------------------------

def test_caption_words_group_the_pieces_of_each_word(tiny_vit):
    tokens = tokenize_caption(tiny_vit.tokenizer, CAPTION)
    words = caption_words(tokens)
    assert list(words.texts) == WORDS and len(words) == len(WORDS)
    whiskers = unit_of(words, "whiskers")
    assert len(words.pieces[whiskers]) >= 2  # split by BPE (else this test checks nothing)
    assert "".join(words.pieces[whiskers]) == "whiskers"
    for unit, members in enumerate(words.members):  # consecutive pieces of one pre-token word
        assert list(members) == list(range(members[0], members[-1] + 1))
        assert [tokens.texts[t] for t in members] == list(words.pieces[unit])
        assert all(words.token_unit[t] == unit for t in members)
        assert len({int(tokens.word_index[t]) for t in members}) == 1
    assert sum(len(m) for m in words.members) == len(tokens)
    assert words.is_special.tolist() == [t in ("<start>", "<end>") for t in WORDS]
    assert words.is_punctuation.tolist() == [t in (",", ".") for t in WORDS]
    assert words.space_before.tolist() == [False, True, True, True, True, False, True, True, True, True, False,
                                           True]
    assert words.caption == CAPTION and words.dropped == 0


def test_pool_is_the_mean_over_each_words_pieces(tiny_vit):
    words = caption_words(tokenize_caption(tiny_vit.tokenizer, CAPTION))
    values = np.stack([np.arange(len(words.tokens), dtype=np.float32), np.ones(len(words.tokens))])
    pooled = words.pool(values)
    assert pooled.shape == (2, len(words))
    for unit, members in enumerate(words.members):
        assert pooled[0, unit] == pytest.approx(sum(members) / len(members))  # mean of the token indices
    np.testing.assert_allclose(pooled[1], 1.0)
    with pytest.raises(ValueError, match="one per token"):
        words.pool(np.zeros(3))


# --- engine: by_word -------------------------------------------------------------------------------

def test_by_word_pools_scores_maps_and_regions(pieces):
    words = pieces.by_word()
    assert isinstance(words.tokens, CaptionWords) and list(words.tokens.texts) == WORDS
    for unit, members in enumerate(words.tokens.members):
        members = list(members)
        assert words.global_scores[unit] == pytest.approx(pieces.global_scores[members].mean(), abs=1e-6)
        np.testing.assert_allclose(words.patch_scores[:, unit], pieces.patch_scores[:, members].mean(1), atol=1e-6)
    order = [u for u in np.argsort(-words.global_scores, kind="stable") if not words.tokens.is_special[u]]
    assert list(words.order) == order  # ranked by the pooled score, start/end hidden by default
    assert words.image_map(unit_of(words.tokens, "whiskers")).shape == pieces.image_size
    maps = words.token_maps
    assert maps.shape == (len(WORDS), *pieces.grid) and maps.min() >= 0 and maps.max() <= 1
    region = words.tokens_at(5)  # a region ranking follows the pooled patch scores
    np.testing.assert_allclose(region.scores, words.tokens.pool(pieces.tokens_at(5).scores), atol=1e-6)
    maxed = words.with_options(score="max", include_punctuation=False)
    np.testing.assert_allclose(maxed.scores, words.patch_scores.max(0))
    assert not any(words.tokens.is_punctuation[u] for u in maxed.order)
    assert words.by_word() is words


def test_by_word_keeps_single_piece_words_as_they_were(explainer, image):
    a = token_attributions(explainer, image, "a cat on a sofa", include_special=True)
    words = a.by_word()
    assert words.tokens.texts == a.tokens.texts
    np.testing.assert_allclose(words.scores, a.scores, atol=1e-6)
    np.testing.assert_array_equal(words.order, a.order)
    np.testing.assert_allclose(words.image_map(2), a.image_map(2), atol=1e-5)


# --- widget: one chip per word ---------------------------------------------------------------------

def test_one_chip_per_word_with_its_pieces_on_hover(widget, pieces):
    chips = widget.chips
    assert [c["text"] for c in chips] == WORDS[1:-1]
    words = pieces.by_word()
    whiskers = next(c for c in chips if c["text"] == "whiskers")
    members = words.tokens.members[whiskers["token"]]
    assert whiskers["tokens"] == list(members) and whiskers["pieces"] == [pieces.tokens.texts[t] for t in members]
    assert " · ".join(whiskers["pieces"]) in whiskers["tooltip"]
    assert "mean of its BPE pieces' scores" in whiskers["tooltip"]
    assert f"{pieces.global_scores[list(members)].mean():+.4f}" in whiskers["tooltip"]
    assert whiskers["score"] == pytest.approx(pieces.global_scores[list(members)].mean(), abs=1e-6)
    cat = next(c for c in chips if c["text"] == "cat")
    assert "one BPE piece" in cat["tooltip"] and cat["pieces"] == ["cat"]
    assert sorted(c["rank"] for c in chips) == list(range(1, len(chips) + 1))


def test_clicking_a_word_shows_the_mean_map_of_its_pieces_and_hover_names_it(widget, pieces):
    assert "whole caption" in widget.view.describe()["hover"]
    position = [c["text"] for c in widget.chips].index("ragamuffin")
    widget.chip_buttons[position].click()
    unit = widget.chips[position]["token"]
    count = len(widget.chips[position]["pieces"])
    assert count >= 2
    seen = widget.view.describe()
    assert seen["titles"] == [f"Map of “ragamuffin” (mean of {count} BPE pieces)"]
    assert "“ragamuffin”" in seen["hover"] and "raw score" in seen["hover"]
    expected = pieces.by_word().image_map(unit)
    np.testing.assert_allclose(widget.heat, expected)
    members = list(pieces.by_word().tokens.members[unit])
    assert not np.allclose(widget.heat, pieces.image_map(members[0]), atol=1e-3)  # not just one piece's map


def test_hover_label_escapes_the_caption(widget):
    widget.caption = "a <b>cat</b> 100% $x$"
    assert widget.wait(30) and widget.error is None
    widget.select_token(next(c["token"] for c in widget.chips if c["text"] == "%"))
    hover = widget.view.describe()["hover"]
    assert "“&#37;”" in hover and "<b>" not in hover  # a % of the caption cannot start a template field
    widget.select_token(next(c["token"] for c in widget.chips if c["text"] == "<"))
    assert "“&lt;”" in widget.view.describe()["hover"]


# --- widget: re-ranking at a clicked patch says so, and goes back ---------------------------------------

def test_a_click_on_the_image_says_the_chips_are_reranked_and_offers_the_way_back(widget):
    a = widget.attribution
    assert widget.view.describe()["reranked"] is None
    assert widget.view.reranked.layout.display == "none"
    widget.select_token(widget.chips[1]["token"])
    x, y = 90.0, 60.0
    widget.view.panel.click(0, x, y)
    row, col = divmod(a.patch_at(x, y), a.grid[1])
    line = widget.view.describe()["reranked"]
    assert f"row {row}, col {col}" in line and "not over the whole image" in line
    assert widget.view.reranked.layout.display != "none"
    assert "back" in widget.view.unrank.description
    whole = [c["rank"] for c in widget.chips]
    widget.view.unrank.click()  # the button: whole-image ranking again, the word's map stays
    assert widget.point is None and widget.region is None
    assert widget.view.describe()["reranked"] is None and widget.view.reranked.layout.display == "none"
    assert widget.selected_token == widget.chips[1]["token"]
    assert [c["rank"] for c in widget.chips] == [int(a.rank[c["token"]]) + 1 for c in widget.chips]
    assert whole != [c["rank"] for c in widget.chips] or len(whole) < 3  # the click had re-ranked them


# --- widget: controls say what they do -------------------------------------------------------------------

def test_marking_and_score_toggles_are_labelled(widget):
    marking, score = widget.controls["marking"], widget.controls["score"]
    assert marking.description and "colour" in marking.description.lower()
    tips = dict(zip([value for _, value in marking.options], marking.tooltips))
    assert "three best" in tips["top3"] and "colour map" in tips["scale"]
    assert score.description and len(score.tooltips) == len(score.options) and all(score.tooltips)


# --- widget: layout and a constructor that does not wait -------------------------------------------------

def test_the_map_has_no_fixed_width(widget):
    assert widget.view.describe()["width"] is None
    assert widget.current_figure.layout.width is None


class GatedExplainer(Explainer):
    """An explainer whose image pass waits until the test opens the gate."""

    def __init__(self, model):
        super().__init__(model, cache_dir=False)
        self.gate = threading.Event()

    def image_tokens(self, *args, **kwargs):
        assert self.gate.wait(60), "the test never opened the gate"
        return super().image_tokens(*args, **kwargs)


def test_the_constructor_returns_before_the_first_result(tiny_vit, image):
    explainer = GatedExplainer(tiny_vit)
    w = TokenExplorer(explainer, image, CAPTION)  # would hang here if it computed synchronously
    try:
        assert w.busy and w.attribution is None and w.chips == []
        assert "Explaining" in w.status
    finally:
        explainer.gate.set()
    assert w.wait(30) and w.error is None
    assert [c["text"] for c in w.chips] == WORDS[1:-1]
