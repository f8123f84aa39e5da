"""Dense methods (docs/algorithms.md#dense-methods) against the literal block-by-block
re-implementation in dense_reference.py (open_clip weights and plain tensor algebra only), at the
native 14x14 grid and non-square ones, plus identities, one-pass sharing and bad input."""
from __future__ import annotations

import copy
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import jittered, random_pixels
from dense_reference import ln, ref_dense, ref_qkv, ref_table, ref_weights, softmax_rows

from clipsurgery_widgets.engine import (
    METHODS,
    DenseTokens,
    MethodError,
    encode_dense,
    encode_dense_many,
    encode_image_tokens,
    method_attention,
)
from clipsurgery_widgets.engine.errors import ImageInputError, UnsupportedModelError
from clipsurgery_widgets.engine.loading import wrap_model

NATIVE, WIDE, STRIP = (224, 224), (160, 256), (112, 448)  # grids 14x14, 10x16, 7x28 (= 196 patches)
TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
DEFAULTS = {
    "raw": {"pos_resize": "bilinear"},
    "clip_surgery": {"depth": 6, "pos_resize": "bilinear"},
    "maskclip": {"pos_resize": "bicubic-offset"},
    "sclip": {"pos_resize": "bicubic-offset"},
    "clearclip": {"attention": "qq", "residual": False, "pos_resize": "bicubic-offset"},
    "naclip": {"gaussian_std": 5.0, "reduced": True, "pos_resize": "bicubic-offset"},
    "gem": {"depth": 6, "iterations": 1, "inv_temperature": None, "pos_resize": "bicubic-aa"},
}


def pixels(size=NATIVE, batch=2, seed=0):
    return random_pixels(batch, size, seed)


@pytest.fixture(scope="module")
def vit(perturbed_vit):
    return perturbed_vit


@pytest.fixture(scope="module")
def scaled_vit():
    """A 4-block ViT with layer scales and exact GELU, perturbed: checks ls_1 / ls_2 placement."""
    torch.manual_seed(5)
    model = open_clip.CLIP(embed_dim=32, text_cfg=TEXT_CFG, quick_gelu=False, vision_cfg={
        "image_size": 224, "layers": 4, "width": 64, "head_width": 32, "patch_size": 16, "ls_init_value": 0.5})
    return jittered(model, seed=2)


def close_tokens(actual, expected, tol=1e-4):
    """Every token within tol of its (expected) norm."""
    assert actual.shape == expected.shape
    err = (actual - expected).norm(dim=-1)
    bound = tol * expected.norm(dim=-1).clamp_min(1e-3)
    assert bool((err <= bound).all()), f"max relative error {float((err / bound).max()) * tol:.3g}"


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, model.training


def assert_untouched(model, before):
    state, training = before
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    assert model.training == training
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)


CASES = [(name, {}) for name in METHODS] + [
    ("clip_surgery", {"depth": 2}), ("raw", {"pos_resize": "bicubic-aa"}), ("maskclip", {"pos_resize": "bilinear"}),
    ("clearclip", {"attention": "kk"}), ("clearclip", {"attention": "vv", "residual": True}),
    ("clearclip", {"attention": "qk", "residual": True}), ("naclip", {"reduced": False, "gaussian_std": 1.5}),
    ("naclip", {"gaussian_std": 0.0}), ("gem", {"depth": 3, "iterations": 2}),
    ("gem", {"iterations": 0, "inv_temperature": 4.0, "pos_resize": "bicubic-offset"}),
]


# --- parity with the references -----------------------------------------------------------------

@pytest.mark.parametrize("size", [NATIVE, WIDE], ids=["14x14", "10x16"])
@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_tokens_match_literal_reference(vit, method, params, size):
    px = pixels(size, seed=len(method))
    result = encode_dense(vit, px, method, **params)
    prm = {**DEFAULTS[method], **params}
    close_tokens(result.tokens, ref_dense(vit.visual, px, method, prm))
    assert result.grid == (size[0] // 16, size[1] // 16) and result.tokens.shape[-1] == 32
    assert result.method == method and dict(result.params) == prm


@pytest.mark.parametrize("method", list(METHODS))
def test_layer_scales_and_gelu_model(scaled_vit, method):
    params = {"depth": 3} if method in ("clip_surgery", "gem") else {}
    if method in ("sclip", "gem"):  # also exercise a kept-residual/FFN path with layer scales
        params["pos_resize"] = "bilinear"
    px = pixels(WIDE, batch=1, seed=9)
    close_tokens(encode_dense(scaled_vit, px, method, **params).tokens,
                 ref_dense(scaled_vit.visual, px, method, {**DEFAULTS[method], **params}))


@pytest.mark.parametrize("method", ["maskclip", "naclip", "gem", "raw"])
def test_strip_grid_with_native_token_count_is_resized(vit, method):
    """7x28 has 1 + 14^2 tokens but is not the native grid: the table is resampled."""
    px = pixels(STRIP, batch=1, seed=3)
    result = encode_dense(vit, px, method)
    close_tokens(result.tokens, ref_dense(vit.visual, px, method, DEFAULTS[method]))
    table = ref_table(vit.visual, (7, 28), DEFAULTS[method]["pos_resize"])
    assert table.shape == vit.visual.positional_embedding.shape
    assert not torch.allclose(table, vit.visual.positional_embedding, atol=1e-3)


def test_float64_model_computes_in_float64(vit):
    model = copy.deepcopy(vit).double()
    px = pixels(WIDE, batch=1, seed=4).double()
    for method in METHODS:
        # (the bilinear table is interpolated in float32 by the shared tower helper, so use bicubic here)
        tokens = encode_dense(model, px, method, pos_resize="bicubic-offset").tokens
        assert tokens.dtype == torch.float64
        prm = {**DEFAULTS[method], "pos_resize": "bicubic-offset"}
        close_tokens(tokens, ref_dense(model.visual, px, method, prm), tol=1e-9)


# --- token 0, model untouched ----------------------------------------------------------------

def test_token0_is_encode_image_and_model_untouched(tiny_vit):
    model = tiny_vit.model
    before = snapshot(model)
    table = model.visual.positional_embedding.clone()
    px = pixels(NATIVE, batch=2, seed=7)
    with torch.no_grad():
        expected = model.encode_image(px)
    for method in METHODS:
        result = encode_dense(tiny_vit, px, method)
        torch.testing.assert_close(result.tokens[:, 0], expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
        encode_dense(tiny_vit, pixels(WIDE, batch=1), method)
        method_attention(tiny_vit, pixels(WIDE, batch=1), method)
        assert_untouched(model, before)
    assert torch.equal(model.visual.positional_embedding, table)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(px), expected, rtol=0, atol=0)


def test_token0_is_ordinary_global_token_of_the_methods_table(vit):
    px = pixels(WIDE, batch=1, seed=8)
    results = encode_dense_many(vit, px)
    by_mode = {}
    for name, result in results.items():
        by_mode.setdefault(result.params["pos_resize"], []).append(result.tokens[:, 0])
    for tokens in by_mode.values():
        for t in tokens[1:]:
            torch.testing.assert_close(t, tokens[0], rtol=0, atol=1e-5)
    assert len(by_mode) == 3


# --- one pass for many methods ----------------------------------------------------------------

@pytest.mark.parametrize("size", [NATIVE, WIDE], ids=["native", "wide"])
def test_many_equals_each_alone(vit, size):
    px = pixels(size, batch=2, seed=11)
    requests = ["raw", "maskclip", ("gem", {"depth": 2}), "gem", ("clip_surgery", {"depth": 1}), "sclip",
                ("clearclip", {"residual": True, "attention": "qk"}), "naclip", ("raw", {"pos_resize": "bicubic-aa"}),
                "clip_surgery", ("naclip", {"reduced": False}), ("gem", {"depth": 2}), "clearclip"]
    results = encode_dense_many(vit, px, requests)
    assert list(results) == ["raw", "maskclip", "gem", "gem#2", "clip_surgery", "sclip", "clearclip", "naclip",
                             "raw#2", "clip_surgery#2", "naclip#2", "clearclip#2"]
    expected_params = {"gem": {"depth": 2}, "gem#2": {}, "clip_surgery": {"depth": 1}, "clip_surgery#2": {},
                       "clearclip": {"residual": True, "attention": "qk"}, "raw#2": {"pos_resize": "bicubic-aa"},
                       "naclip#2": {"reduced": False}}
    for key, result in results.items():
        name = key.split("#")[0]
        params = expected_params.get(key, {})
        assert isinstance(result, DenseTokens) and result.method == name
        assert dict(result.params) == {**DEFAULTS[name], **params}
        alone = encode_dense(vit, px, name, **params)
        torch.testing.assert_close(result.tokens, alone.tokens, rtol=0, atol=1e-5 * float(alone.tokens.abs().max()))
        assert result.grid == alone.grid
    assert set(encode_dense_many(vit, px)) == set(METHODS)
    assert list(encode_dense_many(vit, px, "sclip")) == ["sclip"]


# --- specific identities ------------------------------------------------------------------------

def test_naclip_without_gaussian_is_kk(vit):
    px = pixels(WIDE, batch=2, seed=12)
    plain = encode_dense(vit, px, "naclip", gaussian_std=0, pos_resize="bicubic-offset").tokens
    kk = encode_dense(vit, px, "clearclip", attention="kk", residual=False).tokens
    torch.testing.assert_close(plain, kk, rtol=0, atol=1e-6)
    kept = encode_dense(vit, px, "naclip", gaussian_std=0.0, reduced=False).tokens
    torch.testing.assert_close(kept, encode_dense(vit, px, "clearclip", attention="kk", residual=True).tokens)
    assert not torch.allclose(encode_dense(vit, px, "naclip").tokens, plain, atol=1e-3)


@torch.no_grad()
def test_clearclip_qk_without_residual_is_last_attention_output(vit):
    """A hand-run model up to z_{L-1}, then nn.MultiheadAttention's own output as Y (no residual)."""
    visual = vit.visual
    px = pixels(NATIVE, batch=2, seed=13)
    x = visual.conv1(px).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], 1) + visual.positional_embedding
    z = visual.ln_pre(x)
    for blk in visual.transformer.resblocks[:-1]:
        z = blk(z)
    last = visual.transformer.resblocks[-1]
    h = last.ln_1(z)
    y = last.attn(h, h, h, need_weights=False)[0]
    expected = visual.ln_post(y[:, 1:]) @ visual.proj
    got = encode_dense(vit, px, "clearclip", attention="qk", residual=False).tokens
    close_tokens(got[:, 1:], expected)
    close_tokens(got[:, :1], visual.ln_post(last(z)[:, :1]) @ visual.proj)


def test_maskclip_is_value_path_only(vit):
    visual = vit.visual
    px = pixels(NATIVE, batch=1, seed=14)
    with torch.no_grad():
        x = visual.conv1(px).flatten(2).transpose(1, 2)
        z = visual.ln_pre(torch.cat([visual.class_embedding.expand(1, 1, -1), x], 1) + visual.positional_embedding)
        for blk in visual.transformer.resblocks[:-1]:
            z = blk(z)
        last = visual.transformer.resblocks[-1]
        c = z.shape[-1]
        v = last.ln_1(z) @ last.attn.in_proj_weight[2 * c:].T + last.attn.in_proj_bias[2 * c:]
        y = last.attn.out_proj(v)
        expected = visual.ln_post(y[:, 1:]) @ visual.proj
    close_tokens(encode_dense(vit, px, "maskclip").tokens[:, 1:], expected)


# --- resnet ------------------------------------------------------------------------------------

def test_resnet_delegates_and_refuses_vit_methods(tiny_resnet):
    px = pixels(NATIVE, batch=2, seed=15)
    tokens = encode_image_tokens(tiny_resnet, px)
    torch.testing.assert_close(encode_dense(tiny_resnet, px, "raw").tokens, tokens.raw)
    torch.testing.assert_close(encode_dense(tiny_resnet, px, "clip_surgery").tokens, tokens.surgery)
    many = encode_dense_many(tiny_resnet, px, ["raw", "clip_surgery"])
    torch.testing.assert_close(many["clip_surgery"].tokens, tokens.surgery)
    assert many["raw"].grid == (7, 7)
    for method in ("maskclip", "sclip", "clearclip", "naclip", "gem"):
        with pytest.raises(UnsupportedModelError, match="ViT"):
            encode_dense(tiny_resnet, px, method)
    with pytest.raises(MethodError, match="pos_resize"):
        encode_dense(tiny_resnet, px, "raw", pos_resize="bicubic-aa")
    with pytest.raises(MethodError, match="ViT"):
        method_attention(tiny_resnet, px, "raw")


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method,params,match", [
    ("segformer", {}, "raw, clip_surgery, maskclip, sclip, clearclip, naclip, gem"),
    ("sclip", {"depth": 3}, "no parameter 'depth'.*pos_resize"),
    ("gem", {"temperature": 2}, "inv_temperature"),
    ("clip_surgery", {"depth": 0}, "1 to 6"), ("clip_surgery", {"depth": 7}, "1 to 6"),
    ("gem", {"depth": 2.0}, "depth"), ("gem", {"iterations": -1}, ">= 0"), ("gem", {"iterations": True}, "iterations"),
    ("gem", {"inv_temperature": 0}, "> 0"), ("naclip", {"gaussian_std": -1.0}, ">= 0"),
    ("naclip", {"gaussian_std": float("nan")}, "gaussian_std"), ("naclip", {"reduced": 1}, "True or False"),
    ("clearclip", {"attention": "kq"}, "qq, kk, vv, qk"), ("clearclip", {"residual": "no"}, "True or False"),
    ("raw", {"pos_resize": "nearest"}, "bilinear, bicubic-offset, bicubic-aa"),
])
def test_bad_methods_and_params(tiny_vit, method, params, match):
    with pytest.raises(MethodError, match=match) as info:
        encode_dense(tiny_vit, pixels(batch=1), method, **params)
    assert isinstance(info.value, ValueError)
    with pytest.raises(MethodError, match=match):
        encode_dense_many(tiny_vit, pixels(batch=1), ["raw", (method, params)])


def test_bad_pixels_and_requests(tiny_vit):
    with pytest.raises(ImageInputError, match="patches"):
        encode_dense(tiny_vit, torch.randn(1, 3, 224, 200), "gem")
    with pytest.raises(ImageInputError, match="patches"):
        encode_dense_many(tiny_vit, torch.randn(1, 3, 100, 224), ["raw", "naclip"])
    with pytest.raises(MethodError, match="pair"):
        encode_dense_many(tiny_vit, pixels(batch=1), [("gem", 3)])
    with pytest.raises(MethodError, match="No dense method"):
        encode_dense_many(tiny_vit, pixels(batch=1), [])
    with pytest.raises(MethodError, match="layer"):
        method_attention(tiny_vit, pixels(batch=1), "sclip", layer=2)
    with pytest.raises(MethodError, match="layer"):
        method_attention(tiny_vit, pixels(batch=1), "clip_surgery", layer=1, depth=3)


def test_methods_mapping_is_exact_and_read_only():
    assert {k: dict(v) for k, v in METHODS.items()} == DEFAULTS
    assert list(METHODS) == list(DEFAULTS)
    with pytest.raises(TypeError):
        METHODS["new"] = {}
    with pytest.raises(TypeError):
        METHODS["gem"]["depth"] = 3


# --- attention weights for the views --------------------------------------------------------------

@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_method_attention_matches_reference_weights(vit, method, params):
    px = pixels(WIDE, batch=2, seed=16)
    prm = {**DEFAULTS[method], **params}
    result = method_attention(wrap_model(vit), px, method, **params)
    visual = vit.visual
    with torch.no_grad():
        x = F.conv2d(px, visual.conv1.weight, stride=16)
        b, c, gh, gw = x.shape
        x = torch.cat([visual.class_embedding.expand(b, 1, c), x.reshape(b, c, -1).transpose(1, 2)], 1)
        z = ln(x + ref_table(visual, (gh, gw), prm["pos_resize"]), visual.ln_pre)
        for blk in visual.transformer.resblocks[:-1]:
            z = blk(z)
        h, q, k, v = ref_qkv(visual.transformer.resblocks[-1], z)
        expected = ref_weights(method, prm, q, k, v, h, (gh, gw))
    assert result.weights.shape == (2, 2, 161, 161) and result.weights.dtype == torch.float32
    torch.testing.assert_close(result.weights, expected, rtol=0, atol=2e-5)
    assert result.layer == 5 and result.grid == (10, 16)
    rows = 2.0 if method == "sclip" else 1.0
    torch.testing.assert_close(result.weights.sum(-1), torch.full((2, 2, 161), rows), rtol=0, atol=1e-4)


def test_method_attention_layers(vit):
    px = pixels(NATIVE, batch=1, seed=17)
    third = method_attention(vit, px, "gem", layer=3).weights
    assert method_attention(vit, px, "gem", layer=-3).layer == 3
    assert not torch.allclose(third, method_attention(vit, px, "gem").weights)
    assert method_attention(vit, px, "raw", layer=0).layer == 0
    vv = method_attention(vit, px, "clip_surgery", layer=4).weights
    with torch.no_grad():
        z = vit.visual.ln_pre(torch.cat([vit.visual.class_embedding.expand(1, 1, -1),
                                         vit.visual.conv1(px).flatten(2).transpose(1, 2)], 1)
                              + vit.visual.positional_embedding)
        for blk in vit.visual.transformer.resblocks[:4]:
            z = blk(z)
        _, _, _, v = ref_qkv(vit.visual.transformer.resblocks[4], z)
    torch.testing.assert_close(vv, softmax_rows(v @ v.transpose(-1, -2) / math.sqrt(v.shape[-1])), rtol=0, atol=2e-5)
