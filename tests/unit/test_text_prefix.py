"""Prompt ensembles with each template's prefix computed once (docs/algorithms.md#text-features):
features equal the full-context path, and the transformer really runs fewer positions."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import jittered

from clipsurgery_widgets.engine.loading import build_tiny_model, load_model
from clipsurgery_widgets.engine.text.encoding import TEMPLATES, encode_texts, encode_tokens
from clipsurgery_widgets.engine.text.prefix import PromptEncoder, shares_prefixes

LABELS = ["golden retriever", "a red double-decker bus", "cup", "", "café ☕ mug", "person's hat"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_model("tiny-random-vit", device="cpu").tokenizer


@pytest.fixture(scope="module")
def model():
    return jittered(build_tiny_model("tiny-random-vit"))  # non-trivial biases and LayerNorm weights


def full_context(model, tokenizer, labels, templates):
    """Every prompt through encode_text at the full 77-token context, normalised, averaged, normalised."""
    rows = []
    with torch.no_grad():
        for label in labels:
            feats = model.encode_text(tokenizer([t.replace("{}", label) for t in templates]))
            rows.append(F.normalize(F.normalize(feats, dim=-1).mean(0), dim=-1))
    return torch.stack(rows)


def test_ensemble_equals_full_context(model, tokenizer):
    assert shares_prefixes(model)
    fast = encode_texts(model, tokenizer, LABELS)
    torch.testing.assert_close(fast, full_context(model, tokenizer, LABELS, TEMPLATES), atol=1e-5, rtol=0)


def test_prompt_encoder_rows_equal_encode_tokens(model, tokenizer):
    templates = TEMPLATES[:20]
    prompts, index = [], []
    for label in LABELS:
        for j, template in enumerate(templates):
            prompts.append(template.replace("{}", label))
            index.append(j)
    tokens = tokenizer(prompts)
    encoder = PromptEncoder(model, tokenizer, templates)
    with torch.no_grad():
        fast = encoder.encode(tokens, index)
        expected = encode_tokens(model, tokens)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=0)
    # The prefix states are computed once and reused by later calls.
    states = encoder._states
    with torch.no_grad():
        again = encoder.encode(tokens[:5], index[:5])
    assert encoder._states is states
    torch.testing.assert_close(again, expected[:5], atol=1e-5, rtol=0)


def test_rows_whose_tokens_differ_from_the_prefix_take_the_plain_path(model, tokenizer):
    # No space before the label: "a photo of ab" tokenizes "ab" as one word, so the prompt does not
    # start with the tokens of "a photo of a"; a wrong template index must not be trusted either.
    templates = ("a photo of a{}", "a drawing of the {}.")
    tokens = tokenizer(["a photo of ab", "a drawing of the cat.", "a drawing of the cat."])
    encoder = PromptEncoder(model, tokenizer, templates)
    with torch.no_grad():
        fast = encoder.encode(tokens, [0, 1, 0])  # row 2 claims the wrong template
        expected = encode_tokens(model, tokens)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=0)
    assert encoder._matches_prefix(tokens, torch.tensor([0, 1, 0]), encoder._states.lengths[[0, 1, 0]]).tolist() \
        == [False, True, False]
    labels = ["b", "cat"]
    torch.testing.assert_close(encode_texts(model, tokenizer, labels, templates),
                               full_context(model, tokenizer, labels, templates), atol=1e-5, rtol=0)


def test_label_positions_only_run_once_per_prompt(model, tokenizer):
    """The first block's LayerNorm sees each template prefix once plus each prompt's label and suffix only."""
    labels = ["dog", "fire truck", "red traffic light"]
    templates = TEMPLATES[:40]
    seen = []
    handle = model.transformer.resblocks[0].ln_1.register_forward_hook(
        lambda mod, args, out: seen.append(int(args[0].shape[0] * args[0].shape[1])))
    try:
        fast = encode_texts(model, tokenizer, labels, templates)
        shared = sum(seen)
        seen.clear()
        with torch.no_grad():
            prompts = [t.replace("{}", label) for label in labels for t in templates]
            encode_tokens(model, tokenizer(prompts))  # the causal-truncation path, one batch
    finally:
        handle.remove()
    truncated = sum(seen)
    assert shared < 0.75 * truncated, (shared, truncated)
    torch.testing.assert_close(fast, full_context(model, tokenizer, labels, templates), atol=1e-5, rtol=0)


def test_chunking_and_batches_do_not_change_features(model, tokenizer):
    whole = encode_texts(model, tokenizer, LABELS)
    torch.testing.assert_close(encode_texts(model, tokenizer, LABELS, batch_size=7), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(encode_texts(model, tokenizer, LABELS, templates=None),
                               full_context(model, tokenizer, LABELS, ("{}",)), atol=1e-5, rtol=0)


def test_non_causal_tower_falls_back_and_stays_exact(model, tokenizer):
    bidirectional = copy.deepcopy(model)
    bidirectional.attn_mask = None  # every position sees every other: prefixes are not shareable
    assert not shares_prefixes(bidirectional)
    labels = ["dog", "cat"]
    torch.testing.assert_close(encode_texts(bidirectional, tokenizer, labels, TEMPLATES[:10]),
                               full_context(bidirectional, tokenizer, labels, TEMPLATES[:10]), atol=1e-5, rtol=0)
