"""Text features: templates, prompt ensembles, the causal-truncation path (docs/algorithms.md#text-features)."""
from __future__ import annotations

import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.errors import TextInputError
from clipsurgery_widgets.engine.loading import TINY_CONFIGS, load_model
from clipsurgery_widgets.engine.text.encoding import (
    TEMPLATES,
    encode_texts,
    encode_tokens,
)

SCENE = ("there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
         "this is the {} in the scene.", "this is one {} in the scene.")


@pytest.fixture(scope="module", params=["tiny-random-vit", "tiny-random-resnet"])
def loaded(request):
    return load_model(request.param, device="cpu")


@pytest.fixture(scope="module")
def vit():
    return load_model("tiny-random-vit", device="cpu")


def reference_ensemble(model, tokenizer, labels, templates):
    """Full 77-token encode_text of every prompt, normalised, averaged, normalised."""
    out = []
    with torch.no_grad():
        for label in labels:
            prompts = [t.format(label) for t in templates]
            feats = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
            out.append(F.normalize(feats.mean(0), dim=-1))
    return torch.stack(out)


def snapshot(model):
    return {name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}


def assert_unchanged(model, before):
    after = dict([*model.named_parameters(), *model.named_buffers()])
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name


# --- templates ---------------------------------------------------------------------------------

def test_templates_are_the_80_openai_plus_five_scene_templates():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    assert len(TEMPLATES) == 85 and len(set(TEMPLATES)) == 85
    assert all(isinstance(t, str) and t.count("{}") == 1 for t in TEMPLATES)
    assert set(SCENE) <= set(TEMPLATES)
    assert "a photo of a {}." in TEMPLATES
    assert set(TEMPLATES) == {f("{}") for f in OPENAI_IMAGENET_TEMPLATES} | set(SCENE)


# --- fast path equals the full context ---------------------------------------------------------

def test_ensemble_equals_full_context_and_leaves_model_untouched(loaded):
    model, tokenizer = loaded.model, loaded.tokenizer
    labels = ["dog", "a red double-decker bus", ""]
    before, training = snapshot(model), model.training
    fast = encode_texts(model, tokenizer, labels)
    expected = reference_ensemble(model, tokenizer, labels, TEMPLATES)
    assert fast.shape == (3, model.text_projection.shape[1])
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.norm(dim=-1), torch.ones(3), atol=1e-6, rtol=0)
    assert_unchanged(model, before)
    assert model.training == training


def test_loaded_model_supplies_its_tokenizer_and_batches_do_not_matter(vit):
    labels = ["cat", "bench", "person", "tree"]
    whole = encode_texts(vit, None, labels)
    # batches of 7 prompts cut through labels' ensembles
    torch.testing.assert_close(encode_texts(vit.model, vit.tokenizer, labels, batch_size=7), whole,
                               atol=1e-6, rtol=0)


def test_transformer_runs_only_up_to_the_longest_prompt(vit):
    tokens = vit.tokenizer(["a dog", "a photo of a big dog"])
    longest = int((tokens != 0).sum(dim=1).max())  # incl. start and end tokens
    seen = []
    handle = vit.model.transformer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    try:
        with torch.no_grad():
            fast = encode_tokens(vit.model, tokens)
            full = vit.model.encode_text(tokens)
    finally:
        handle.remove()
    assert seen[0][1] == longest and seen[1][1] == 77
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("text_cfg", [
    {"pool_type": "eos", "eos_id": 49407},
    {"pool_type": "last"},
    {"proj_bias": True},  # text_projection is an nn.Linear
    {"no_causal_mask": True},  # bidirectional: no truncation allowed
])
def test_other_text_towers_match_encode_text(vit, text_cfg):
    cfg = TINY_CONFIGS["tiny-random-vit"]
    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=dict(cfg["vision_cfg"]),
                           text_cfg={**cfg["text_cfg"], **text_cfg}).eval()
    tokens = vit.tokenizer(["a dog", "a photo of a big dog", ""])
    with torch.no_grad():
        torch.testing.assert_close(encode_tokens(model, tokens), model.encode_text(tokens), atol=1e-5, rtol=0)
    labels = ["dog", "cat"]
    templates = TEMPLATES[:10]
    torch.testing.assert_close(encode_texts(model, vit.tokenizer, labels, templates),
                               reference_ensemble(model, vit.tokenizer, labels, templates), atol=1e-5, rtol=0)


# --- labels and templates ----------------------------------------------------------------------

def test_empty_string_and_unicode_labels(vit):
    labels = ["", "café ☕", "日本"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning for short labels
        feats = encode_texts(vit, None, labels)
    assert torch.isfinite(feats).all()
    torch.testing.assert_close(feats, reference_ensemble(vit.model, vit.tokenizer, labels, TEMPLATES),
                               atol=1e-5, rtol=0)


def test_templates_none_single_and_user_list(vit):
    labels = ["dog", "cat"]
    with torch.no_grad():
        plain = F.normalize(vit.model.encode_text(vit.tokenizer(labels)), dim=-1)
    torch.testing.assert_close(encode_texts(vit, None, labels, templates=None), plain, atol=1e-5, rtol=0)
    mine = ["a {} on a table.", "an image of {}"]
    torch.testing.assert_close(encode_texts(vit, None, labels, templates=mine),
                               reference_ensemble(vit.model, vit.tokenizer, labels, mine), atol=1e-5, rtol=0)
    single = "a photo of a {}."
    torch.testing.assert_close(encode_texts(vit, None, labels, templates=single),
                               reference_ensemble(vit.model, vit.tokenizer, labels, [single]), atol=1e-5, rtol=0)


def test_long_label_is_truncated_with_a_warning_naming_it(vit):
    long_label = " ".join(["hippopotamus"] * 60)
    with pytest.warns(UserWarning, match="truncated") as record:
        feats = encode_texts(vit, None, ["dog", long_label], templates=TEMPLATES[:4])
    message = " ".join(str(w.message) for w in record)
    assert long_label[:40] in message and long_label not in message and "'dog'" not in message
    torch.testing.assert_close(feats, reference_ensemble(vit.model, vit.tokenizer, ["dog", long_label],
                                                         TEMPLATES[:4]), atol=1e-5, rtol=0)


def test_prompt_filling_the_context_exactly_is_not_reported(vit):
    # "a" is one token: start + 75 words + end == 77 positions, nothing cut
    label = " ".join(["a"] * 75)
    assert len(vit.tokenizer.encode(label)) == 75
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_texts(vit, None, [label], templates=None)


def test_many_labels_in_small_batches(vit):
    labels = [f"thing number {i}" for i in range(1000)]
    feats = encode_texts(vit, None, labels, templates=None, batch_size=128)
    assert feats.shape == (1000, 32)
    torch.testing.assert_close(feats[[0, 517, 999]],
                               reference_ensemble(vit.model, vit.tokenizer, [labels[i] for i in (0, 517, 999)],
                                                  ["{}"]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("labels, templates, match", [
    ([], TEMPLATES, "No labels"),
    ("dog", TEMPLATES, "single string"),
    (["dog", 3], TEMPLATES, "strings"),
    (["dog"], [], "templates is empty"),
    (["dog"], ["a photo of a dog"], "placeholder"),
])
def test_bad_text_inputs(vit, labels, templates, match):
    with pytest.raises(TextInputError, match=match):
        encode_texts(vit, None, labels, templates=templates)


def test_missing_tokenizer_and_bad_batch_size(vit):
    with pytest.raises(ValueError, match="tokenizer"):
        encode_texts(vit.model, None, ["dog"])
    with pytest.raises(ValueError, match="batch_size"):
        encode_texts(vit, None, ["dog"], batch_size=0)
