"""Image towers: raw and CLIP Surgery tokens (docs/algorithms.md#architecture-surgery-vit and #architecture-surgery-resnet) against literal re-implementations."""
from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import jittered, random_pixels
from torch import nn

from clipsurgery_widgets.engine.errors import ImageInputError, UnsupportedModelError
from clipsurgery_widgets.engine.loading import build_tiny_model
from clipsurgery_widgets.engine.towers.encode import (
    attention_weights,
    encode_image_tokens,
    resized_pos_embed,
    split_heads_qkv,
    vit_embed,
    vit_stream,
)

SQUARE, WIDE = (224, 224), (160, 256)
TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def pixels(size=SQUARE, batch=1, seed=0):
    return random_pixels(batch, size, seed)


@pytest.fixture(scope="module")
def vit(perturbed_vit):
    return perturbed_vit


@pytest.fixture(scope="module")
def resnet():
    return jittered(build_tiny_model("tiny-random-resnet"))


# --- literal references, written from docs/algorithms.md#architecture-surgery-vit and #architecture-surgery-resnet with plain tensor algebra --------------------

def ref_layer_norm(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def ref_activation(module, x):
    if type(module).__name__ == "QuickGELU":
        return x * torch.sigmoid(1.702 * x)
    assert isinstance(module, nn.GELU) and module.approximate == "none"
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def ref_gamma(layer_scale):
    return layer_scale.gamma if hasattr(layer_scale, "gamma") else 1.0


def heads(x, h):  # [B, T, C] -> [B, H, T, d]
    b, t, c = x.shape
    return x.reshape(b, t, h, c // h).permute(0, 2, 1, 3)


def unheads(x):  # [B, H, T, d] -> [B, T, C]
    b, h, t, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, t, h * d)


def attend(q, k, v, scale):
    return torch.softmax(scale * (q @ k.transpose(-1, -2)), dim=-1) @ v


def ref_resize(table, old, new):
    if tuple(old) == tuple(new):
        return table
    c = table.shape[1]
    cells = table[1:].reshape(old[0], old[1], c).permute(2, 0, 1)[None]
    cells = F.interpolate(cells, size=new, mode="bilinear", align_corners=False)[0]
    return torch.cat([table[:1], cells.reshape(c, new[0] * new[1]).T])


@torch.no_grad()
def ref_vit(visual, px, depth):
    """docs/algorithms.md#architecture-surgery-vit block by block: returns (raw, surgery) [B, 1+N, D]."""
    w = visual.conv1.weight
    x = F.conv2d(px, w, stride=w.shape[-1])
    b, c, gh, gw = x.shape
    x = x.reshape(b, c, gh * gw).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.reshape(1, 1, c).repeat(b, 1, 1), x], dim=1)
    z = ref_layer_norm(x + ref_resize(visual.positional_embedding, visual.grid_size, (gh, gw)), visual.ln_pre)
    blocks = list(visual.transformer.resblocks)
    y = None
    for i, blk in enumerate(blocks):
        a, nh = blk.attn, blk.attn.num_heads
        h = ref_layer_norm(z, blk.ln_1)
        wq, wk, wv = a.in_proj_weight[:c], a.in_proj_weight[c:2 * c], a.in_proj_weight[2 * c:]
        bq, bk, bv = a.in_proj_bias[:c], a.in_proj_bias[c:2 * c], a.in_proj_bias[2 * c:]
        q, k, v = heads(h @ wq.T + bq, nh), heads(h @ wk.T + bk, nh), heads(h @ wv.T + bv, nh)
        s = (c // nh) ** -0.5
        o_qk = unheads(attend(q, k, v, s)) @ a.out_proj.weight.T + a.out_proj.bias
        if i >= len(blocks) - depth:
            y = z.clone() if y is None else y
            o_vv = unheads(attend(v, v, v, s)) @ a.out_proj.weight.T + a.out_proj.bias
            y = y + ref_gamma(blk.ls_1) * o_vv
        z = z + ref_gamma(blk.ls_1) * o_qk
        m = ref_layer_norm(z, blk.ln_2) @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias
        m = ref_activation(blk.mlp.gelu, m) @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias
        z = z + ref_gamma(blk.ls_2) * m
    raw = ref_layer_norm(z, visual.ln_post) @ visual.proj
    surgery = ref_layer_norm(torch.cat([z[:, :1], y[:, 1:]], dim=1), visual.ln_post) @ visual.proj
    return raw, surgery


@torch.no_grad()
def ref_resnet(visual, px, mode):
    """docs/algorithms.md#architecture-surgery-resnet from the layer4 features: returns (raw, surgery) [B, 1+N, D]."""
    f = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(px)))))
    b, c, gh, gw = f.shape
    t = f.reshape(b, c, gh * gw).permute(0, 2, 1)
    t = torch.cat([t.mean(dim=1, keepdim=True), t], dim=1)
    table = visual.attnpool.positional_embedding
    side = int(round((table.shape[0] - 1) ** 0.5))
    t = t + ref_resize(table, (side, side), (gh, gw))
    pool, nh = visual.attnpool, visual.attnpool.num_heads
    q = heads(t @ pool.q_proj.weight.T + pool.q_proj.bias, nh)
    k = heads(t @ pool.k_proj.weight.T + pool.k_proj.bias, nh)
    v = heads(t @ pool.v_proj.weight.T + pool.v_proj.bias, nh)
    s = (c // nh) ** -0.5
    raw = unheads(attend(q, k, v, s)) @ pool.c_proj.weight.T + pool.c_proj.bias
    if mode == "repo":
        a = attend(v, v, v, s)
    else:
        n = v / (torch.sqrt((v ** 2).sum(-1, keepdim=True)) + 1e-6)
        a = attend(n, n, v, 8 * s)
    surgery = unheads(a) @ pool.c_proj.weight.T + pool.c_proj.bias
    surgery[:, 0] = raw[:, 0]
    return raw, surgery


def close(actual, expected, tol=1e-5):
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=tol * max(scale, 1.0))


# --- raw tokens ------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_resnet"])
def test_raw_token0_is_encode_image(fixture, request):
    loaded = request.getfixturevalue(fixture)
    px = pixels(batch=2)
    tokens = encode_image_tokens(loaded, px)
    with torch.no_grad():
        expected = loaded.model.encode_image(px)
    close(tokens.raw[:, 0], expected)
    assert torch.equal(tokens.surgery[:, 0], tokens.raw[:, 0])


def test_raw_vit_tokens_equal_plain_forward(vit):
    px = pixels(batch=2, seed=3)
    visual = vit.visual
    with torch.no_grad():
        x = visual.conv1(px).flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], dim=1) + visual.positional_embedding
        x = visual.transformer(visual.ln_pre(x))
        expected = visual.ln_post(x) @ visual.proj
    tokens = encode_image_tokens(vit, px)
    close(tokens.raw, expected)
    assert tokens.grid == (14, 14) and tokens.raw.shape == (2, 197, 32)


def test_raw_resnet_tokens_equal_plain_attention_pool(resnet):
    px = pixels(batch=2, seed=4)
    visual, pool = resnet.visual, resnet.visual.attnpool
    with torch.no_grad():
        f = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(px)))))
        x = f.flatten(2).permute(2, 0, 1)  # (HW) B C
        x = torch.cat([x.mean(0, keepdim=True), x]) + pool.positional_embedding[:, None]
        out, _ = F.multi_head_attention_forward(
            x, x, x, x.shape[-1], pool.num_heads, None,
            torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False, 0.0,
            pool.c_proj.weight, pool.c_proj.bias, training=False, need_weights=False,
            use_separate_proj_weight=True, q_proj_weight=pool.q_proj.weight,
            k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight)
    tokens = encode_image_tokens(resnet, px)
    close(tokens.raw, out.transpose(0, 1))
    assert tokens.grid == (7, 7)


# --- surgery tokens against the literal references ---------------------------------------------

@pytest.mark.parametrize("size", [SQUARE, WIDE])
@pytest.mark.parametrize("depth", [1, 6])
def test_vit_surgery_matches_spec(vit, depth, size):
    px = pixels(size, batch=2, seed=depth)
    raw, surgery = ref_vit(vit.visual, px, depth)
    tokens = encode_image_tokens(vit, px, depth=depth)
    assert tokens.grid == (size[0] // 16, size[1] // 16)
    close(tokens.raw, raw)
    close(tokens.surgery, surgery)
    assert (tokens.surgery[:, 1:] - tokens.raw[:, 1:]).abs().max() > 1e-2  # the paths really differ


@pytest.mark.parametrize("size", [SQUARE, WIDE])
@pytest.mark.parametrize("mode", ["repo", "paper"])
def test_resnet_surgery_matches_spec(resnet, mode, size):
    px = pixels(size, batch=2, seed=7)
    raw, surgery = ref_resnet(resnet.visual, px, mode)
    tokens = encode_image_tokens(resnet, px, resnet_mode=mode)
    assert tokens.grid == (size[0] // 32, size[1] // 32)
    close(tokens.raw, raw)
    close(tokens.surgery, surgery)


def test_resnet_modes_differ(resnet):
    px = pixels(seed=8)
    repo = encode_image_tokens(resnet, px, resnet_mode="repo").surgery
    paper = encode_image_tokens(resnet, px, resnet_mode="paper").surgery
    assert torch.equal(repo[:, 0], paper[:, 0])
    assert (repo[:, 1:] - paper[:, 1:]).abs().max() > 1e-4


def test_vit_with_layer_scale_and_other_patch_size():
    torch.manual_seed(5)
    model = open_clip.CLIP(embed_dim=24, text_cfg=TEXT_CFG, quick_gelu=False, vision_cfg={
        "image_size": 96, "layers": 4, "width": 48, "head_width": 16, "patch_size": 8, "ls_init_value": 0.5})
    model = jittered(model, seed=6)  # also makes each layer-scale gamma different per channel
    visual = model.visual
    assert hasattr(visual.transformer.resblocks[0].ls_1, "gamma")
    for size, depth in [((96, 96), 2), ((64, 120), 4)]:
        px = pixels(size, seed=9)
        raw, surgery = ref_vit(visual, px, depth)
        tokens = encode_image_tokens(model, px, depth=depth)
        assert tokens.grid == (size[0] // 8, size[1] // 8)
        close(tokens.raw, raw)
        close(tokens.surgery, surgery)
    with torch.no_grad():
        close(encode_image_tokens(model, pixels((96, 96)), depth=4).raw[:, 0], model.encode_image(pixels((96, 96))))


def test_batch_equals_one_at_a_time(vit, resnet):
    for model, size in [(vit, WIDE), (resnet, SQUARE)]:
        px = pixels(size, batch=3, seed=11)
        together = encode_image_tokens(model, px, depth=3)
        for i in range(3):
            alone = encode_image_tokens(model, px[i:i + 1], depth=3)
            close(together.raw[i:i + 1], alone.raw)
            close(together.surgery[i:i + 1], alone.surgery)


def test_accepts_loaded_model_clip_or_visual(tiny_vit):
    px = pixels(seed=12)
    a = encode_image_tokens(tiny_vit, px)
    b = encode_image_tokens(tiny_vit.model, px)
    c = encode_image_tokens(tiny_vit.model.visual, px)
    assert torch.equal(a.surgery, b.surgery) and torch.equal(a.surgery, c.surgery)


def test_runs_in_the_model_dtype():
    model = build_tiny_model("tiny-random-vit").double()
    tokens = encode_image_tokens(model, pixels(seed=13))  # float32 pixels are cast
    assert tokens.raw.dtype == torch.float64 and tokens.surgery.dtype == torch.float64
    assert not tokens.raw.requires_grad


# --- the user's model is never changed ---------------------------------------------------------

@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_resnet"])
def test_model_never_changes(fixture, request):
    loaded = request.getfixturevalue(fixture)
    model = loaded.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    table_owner = model.visual if fixture == "tiny_vit" else model.visual.attnpool
    table, table_value = table_owner.positional_embedding, table_owner.positional_embedding.detach().clone()
    modules = [(n, type(m)) for n, m in model.named_modules()]
    inputs = {s: pixels(s, seed=sum(s)) for s in [SQUARE, (512, 512), WIDE]}
    kept = {s: px.clone() for s, px in inputs.items()}
    first = {}
    for s in [SQUARE, (512, 512), WIDE, SQUARE, WIDE, (512, 512), SQUARE, WIDE, SQUARE]:
        tokens = encode_image_tokens(loaded, inputs[s])
        if s in first:
            assert torch.equal(tokens.raw, first[s].raw) and torch.equal(tokens.surgery, first[s].surgery)
        first.setdefault(s, tokens)
    assert table_owner.positional_embedding is table and torch.equal(table, table_value)
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())
    assert [(n, type(m)) for n, m in model.named_modules()] == modules
    assert not model.training and all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(inputs[s], kept[s]) for s in inputs)
    with torch.no_grad():
        close(encode_image_tokens(loaded, inputs[SQUARE]).raw[:, 0], model.encode_image(inputs[SQUARE]))


# --- building blocks --------------------------------------------------------------------------

def test_resized_pos_embed_planted_example():
    # grid value = 10 * row + col on a 2x2 grid; bilinear (align_corners=False) to 4x4 samples rows and
    # columns at source coordinates clamp((i + 0.5) / 2 - 0.5) = 0, 0.25, 0.75, 1.
    table = torch.tensor([[-1.0], [0.0], [1.0], [10.0], [11.0]])
    out = resized_pos_embed(table, (2, 2), (4, 4))
    at = torch.tensor([0.0, 0.25, 0.75, 1.0])
    expected = (10 * at[:, None] + at[None, :]).reshape(16, 1)
    assert out[0, 0] == -1.0
    torch.testing.assert_close(out[1:], expected)
    assert resized_pos_embed(table, (2, 2), (2, 2)) is table
    wide = resized_pos_embed(table, (2, 2), (1, 3))  # non-square: one row at coordinate 0.5
    torch.testing.assert_close(wide[1:, 0], torch.tensor([5.0, 5.5, 6.0]))


def test_stream_and_heads_building_blocks(vit):
    px = pixels(WIDE, seed=14)
    stream = vit_stream(vit.visual, px)
    x, grid = vit_embed(vit.visual, px)
    assert grid == stream.grid == (10, 16) and len(stream.inputs) == 6
    assert torch.equal(stream.inputs[0], x)
    blocks = vit.visual.transformer.resblocks
    with torch.no_grad():
        for i in range(5):
            close(stream.inputs[i + 1], blocks[i](stream.inputs[i]))
        close(stream.output, blocks[5](stream.inputs[5]))
        blk = blocks[2]
        h = blk.ln_1(stream.inputs[2])
        q, k, v = split_heads_qkv(blk.attn, h)
        c = h.shape[-1]
        close(q, heads(h @ blk.attn.in_proj_weight[:c].T + blk.attn.in_proj_bias[:c], 2))
        close(v, heads(h @ blk.attn.in_proj_weight[2 * c:].T + blk.attn.in_proj_bias[2 * c:], 2))
        weights = attention_weights(q, k)
        assert weights.shape == (1, 2, 161, 161)
        # the weights reproduce nn.MultiheadAttention's own (head-averaged) attention map
        _, mha_weights = blk.attn(h, h, h, need_weights=True, average_attn_weights=True)
        close(weights.mean(dim=1), mha_weights)
    raw, _ = ref_vit(vit.visual, px, 1)
    close(vit.visual.ln_post(stream.output) @ vit.visual.proj, raw)


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [0, 7, -1, 2.5, True])
def test_bad_depth(tiny_vit, depth):
    with pytest.raises(ValueError, match="from 1 to 6"):
        encode_image_tokens(tiny_vit, pixels(), depth=depth)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(3, 224, 224), "shape"),
    (torch.zeros(1, 1, 224, 224), "shape"),
    (torch.zeros(0, 3, 224, 224), "shape"),
    (torch.zeros(1, 3, 225, 224), "16x16 patches"),
    (torch.zeros(1, 3, 224, 8), "16x16 patches"),
    (torch.zeros(1, 3, 224, 224, dtype=torch.uint8), "normalised floats"),
    (torch.zeros(1, 3, 224, 224).numpy(), "torch tensor"),
])
def test_bad_pixels(tiny_vit, bad, message):
    with pytest.raises(ImageInputError, match=message):
        encode_image_tokens(tiny_vit, bad)


def test_bad_resnet_pixels_and_mode(tiny_resnet, tiny_vit):
    with pytest.raises(ImageInputError, match="32x32 patches.*224x256"):
        encode_image_tokens(tiny_resnet, torch.zeros(1, 3, 224, 240))
    for model in (tiny_resnet, tiny_vit):
        with pytest.raises(ValueError, match="'repo'.*'paper'"):
            encode_image_tokens(model, pixels(), resnet_mode="cosine")


def test_resnet_in_training_mode_is_refused():
    model = build_tiny_model("tiny-random-resnet").train()
    before = model.visual.bn1.running_mean.clone()
    with pytest.raises(ValueError, match="model.eval"):
        encode_image_tokens(model, pixels())
    assert torch.equal(model.visual.bn1.running_mean, before)


@pytest.mark.parametrize("extra, message", [
    ({"attentional_pool": True}, "attn_pool"),
    ({"qk_norm": True}, "nn.MultiheadAttention"),
])
def test_unsupported_vits_are_refused(extra, message):
    model = open_clip.CLIP(embed_dim=16, text_cfg=TEXT_CFG, vision_cfg={
        "image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16, **extra})
    with pytest.raises(UnsupportedModelError, match=message):
        encode_image_tokens(model, torch.zeros(1, 3, 32, 32), depth=1)


def test_non_clip_module_is_refused():
    with pytest.raises(UnsupportedModelError, match="VisionTransformer or ModifiedResNet"):
        encode_image_tokens(nn.Linear(3, 3), pixels())
