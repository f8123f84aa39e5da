"""q-k / v-v attention rows and their statistics (engine/attention.py), against independent references."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.attention import (
    AttentionCapture,
    AttentionInputError,
    attention_layout,
    attention_rows,
    capture_attention,
    cell_box,
    check_query,
    neighbourhood,
)
from clipsurgery_widgets.engine.images import preprocess, sample_image
from clipsurgery_widgets.engine.regions import patch_at


def _pixels(loaded, size=224):
    return preprocess(sample_image("cat"), size, loaded.mean, loaded.std, loaded.patch_size)


@pytest.fixture(scope="module")
def vit_capture(tiny_vit):
    return capture_attention(tiny_vit, _pixels(tiny_vit))


@pytest.fixture(scope="module")
def reference_ln1(tiny_vit):
    """ln_1 outputs [1, T, C] of every block, taken by hooks during the model's own encode_image."""
    blocks = tiny_vit.model.visual.transformer.resblocks
    seen = {}
    handles = [b.ln_1.register_forward_hook(lambda m, i, o, n=n: seen.setdefault(n, o.detach().clone()))
               for n, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            tiny_vit.model.encode_image(_pixels(tiny_vit))
    finally:
        for h in handles:
            h.remove()
    return [seen[n] for n in range(len(blocks))]


def _mha_weights(block, x_ln):
    """Per-head softmax(q k^T / sqrt(d)) from nn.MultiheadAttention itself: [H, T, T]."""
    with torch.no_grad():
        _, w = block.attn(x_ln, x_ln, x_ln, need_weights=True, average_attn_weights=False)
    return w[0]


def _vv_weights(block, x_ln):
    """softmax(v v^T / sqrt(d)) per head, written out from the packed in-projection: [H, T, T]."""
    attn = block.attn
    c, heads = attn.embed_dim, attn.num_heads
    d = c // heads
    w_v, b_v = attn.in_proj_weight[2 * c:], attn.in_proj_bias[2 * c:]
    v = (x_ln[0] @ w_v.T + b_v).reshape(-1, heads, d).permute(1, 0, 2)  # [H, T, d]
    logits = torch.einsum("htd,hsd->hts", v, v) / math.sqrt(d)
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    return (e / e.sum(-1, keepdim=True)).detach()


def _token(cell, gw):
    return 1 + cell[0] * gw + cell[1]


# --- rows ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", [(0, 0), (5, 9), (13, 13), "global"])
@pytest.mark.parametrize("head", [None, 0, 1])
def test_rows_sum_to_one(vit_capture, query, head):
    for layer in range(vit_capture.num_layers):
        rows = vit_capture.rows(layer, query, head)
        assert rows.qk.shape == rows.vv.shape == (14, 14)
        assert rows.qk.dtype == np.float32
        assert rows.qk.sum() + rows.qk_global == pytest.approx(1.0, abs=1e-5)
        assert rows.vv.sum() + rows.vv_global == pytest.approx(1.0, abs=1e-5)
        assert (rows.qk >= 0).all() and (rows.vv >= 0).all()


@pytest.mark.parametrize("layer", [0, 3, 5])
def test_qk_rows_match_multihead_attention(tiny_vit, vit_capture, reference_ln1, layer):
    block = tiny_vit.model.visual.transformer.resblocks[layer]
    weights = _mha_weights(block, reference_ln1[layer])
    for cell in [(0, 0), (7, 2), (13, 12)]:
        rows = vit_capture.rows(layer, cell, head=1)
        expected = weights[1, _token(cell, 14)]
        np.testing.assert_allclose(rows.qk.ravel(), expected[1:].numpy(), atol=1e-6)
        assert rows.qk_global == pytest.approx(float(expected[0]), abs=1e-6)
    rows = vit_capture.rows(layer, "global", head=0)
    np.testing.assert_allclose(rows.qk.ravel(), weights[0, 0, 1:].numpy(), atol=1e-6)


@pytest.mark.parametrize("layer", [1, 4])
def test_vv_rows_equal_independent_softmax_of_scaled_vvT(tiny_vit, vit_capture, reference_ln1, layer):
    block = tiny_vit.model.visual.transformer.resblocks[layer]
    expected = _vv_weights(block, reference_ln1[layer])
    for head in (0, 1):
        for cell in [(2, 3), (10, 0)]:
            rows = vit_capture.rows(layer, cell, head)
            row = expected[head, _token(cell, 14)]
            np.testing.assert_allclose(rows.vv.ravel(), row[1:].numpy(), atol=1e-6)
            assert rows.vv_global == pytest.approx(float(row[0]), abs=1e-6)


def test_mean_over_heads_is_mean_of_head_rows(tiny_vit, vit_capture, reference_ln1):
    layer, cell = 2, (6, 6)
    per_head = [vit_capture.rows(layer, cell, h) for h in range(vit_capture.num_heads)]
    mean = vit_capture.rows(layer, cell, None)
    np.testing.assert_allclose(mean.qk, np.mean([r.qk for r in per_head], axis=0), atol=1e-7)
    np.testing.assert_allclose(mean.vv, np.mean([r.vv for r in per_head], axis=0), atol=1e-7)
    assert mean.vv_global == pytest.approx(np.mean([r.vv_global for r in per_head]), abs=1e-7)
    # nn.MultiheadAttention's own head average agrees.
    block = tiny_vit.model.visual.transformer.resblocks[layer]
    with torch.no_grad():
        x = reference_ln1[layer]
        _, avg = block.attn(x, x, x, need_weights=True, average_attn_weights=True)
    np.testing.assert_allclose(mean.qk.ravel(), avg[0, _token(cell, 14), 1:].numpy(), atol=1e-6)
    assert mean.head is None and per_head[1].head == 1


def test_layer_indexing(tiny_vit, vit_capture, reference_ln1):
    count = len(tiny_vit.model.visual.transformer.resblocks)
    assert vit_capture.num_layers == count == len(vit_capture.layer_names)
    last, minus_one = vit_capture.rows(count - 1, (4, 4)), vit_capture.rows(-1, (4, 4))
    np.testing.assert_array_equal(last.qk, minus_one.qk)
    assert minus_one.layer == count - 1
    # Each layer matches its own block's attention and not its neighbour's.
    blocks = tiny_vit.model.visual.transformer.resblocks
    for layer in range(count):
        own = _mha_weights(blocks[layer], reference_ln1[layer])[0, _token((4, 4), 14), 1:].numpy()
        np.testing.assert_allclose(vit_capture.rows(layer, (4, 4), 0).qk.ravel(), own, atol=1e-6)
    other = _mha_weights(blocks[1], reference_ln1[1])[0, _token((4, 4), 14), 1:].numpy()
    assert np.abs(vit_capture.rows(0, (4, 4), 0).qk.ravel() - other).max() > 1e-4
    for bad in (count, -count - 1, 1.0, True, "0", None):
        with pytest.raises(AttentionInputError, match="layer"):
            vit_capture.rows(bad, (0, 0))


def test_all_layers_in_order(vit_capture):
    rows = vit_capture.all_layers((3, 8), head=1)
    assert [r.layer for r in rows] == list(range(vit_capture.num_layers))
    np.testing.assert_array_equal(rows[2].vv, vit_capture.rows(2, (3, 8), 1).vv)


def test_attention_rows_one_shot_equals_capture(tiny_vit, vit_capture):
    rows = attention_rows(tiny_vit, _pixels(tiny_vit), 3, (1, 2), head=0)
    np.testing.assert_array_equal(rows.qk, vit_capture.rows(3, (1, 2), 0).qk)
    # A bare CLIP module and its image tower work too.
    rows_tower = attention_rows(tiny_vit.model.visual, _pixels(tiny_vit), 3, (1, 2), head=0)
    np.testing.assert_array_equal(rows_tower.vv, rows.vv)


def test_capture_leaves_model_unchanged(tiny_vit):
    model = tiny_vit.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pos_before = model.visual.positional_embedding.detach().clone()
    pixels = _pixels(tiny_vit)
    with torch.no_grad():
        encoded_before = model.encode_image(pixels)
    capture = capture_attention(tiny_vit, _pixels(tiny_vit, (160, 288)))  # resized positional table
    assert capture.grid == (10, 18)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert torch.equal(model.visual.positional_embedding, pos_before)
    assert not model.training
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), encoded_before)


def test_rows_agree_with_full_matrices_on_a_non_square_grid(tiny_vit):
    capture = capture_attention(tiny_vit, _pixels(tiny_vit, (64, 96)))  # 4 x 6 grid
    assert capture.grid == (4, 6)
    qk, vv = capture.matrices(2, head=0)  # [T, T], the whole matrix at once
    rows = capture.rows(2, (3, 1), head=0)  # one row: token 1 + 3 * 6 + 1
    assert rows.qk.shape == rows.vv.shape == (4, 6)
    np.testing.assert_allclose(rows.qk.ravel(), qk[1 + 3 * 6 + 1, 1:].numpy(), atol=1e-7)
    np.testing.assert_allclose(rows.vv.ravel(), vv[1 + 3 * 6 + 1, 1:].numpy(), atol=1e-7)


# --- ResNet ----------------------------------------------------------------------------------------

def test_resnet_attention_pool_is_the_one_layer(tiny_resnet):
    visual = tiny_resnet.model.visual
    pixels = _pixels(tiny_resnet)
    seen = {}
    handle = visual.attnpool.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach().clone()))
    try:
        with torch.no_grad():
            tiny_resnet.model.encode_image(pixels)
    finally:
        handle.remove()
    pool = visual.attnpool
    # The pool's own recipe (open_clip AttentionPool2d.forward), with every token as a query.
    x = seen["x"].flatten(2).permute(2, 0, 1)  # [N, 1, C]
    x = torch.cat([x.mean(0, keepdim=True), x]) + pool.positional_embedding[:, None]
    with torch.no_grad():
        _, weights = F.multi_head_attention_forward(
            x, x, x, x.shape[-1], pool.num_heads, None,
            torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False, 0.0,
            pool.c_proj.weight, pool.c_proj.bias, training=False, need_weights=True, use_separate_proj_weight=True,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            average_attn_weights=False)
    capture = capture_attention(tiny_resnet, pixels)
    assert capture.num_layers == 1 and capture.family == "resnet" and capture.grid == (7, 7)
    for query, token in [("global", 0), ((3, 5), 1 + 3 * 7 + 5)]:
        rows = capture.rows(0, query, head=2)
        np.testing.assert_allclose(rows.qk.ravel(), weights[0, 2, token, 1:].numpy(), atol=1e-6)
        assert rows.qk.sum() + rows.qk_global == pytest.approx(1.0, abs=1e-5)
        assert rows.vv.sum() + rows.vv_global == pytest.approx(1.0, abs=1e-5)
    # v-v from the pool's v projection, written out.
    v = pool.v_proj(x[:, 0]).detach()  # [T, C]
    d = v.shape[-1] // pool.num_heads
    v2 = v[:, 2 * d:3 * d]
    expected = torch.softmax(v2 @ v2.T / math.sqrt(d), dim=-1)[1 + 3 * 7 + 5]
    np.testing.assert_allclose(capture.rows(-1, (3, 5), 2).vv.ravel(), expected[1:].numpy(), atol=1e-6)
    with pytest.raises(AttentionInputError, match="attention pool"):
        capture.rows(1, (0, 0))


# --- input checks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("query, message", [
    ((14, 0), "outside the 14x14"), ((0, -1), "outside"), ("cls", "global"), ((1.5, 2), "two integers"),
    (3, "two integers"), ((1, 2, 3), "two integers"), ((True, 1), "two integers"),
])
def test_bad_queries(vit_capture, query, message):
    with pytest.raises(AttentionInputError, match=message):
        vit_capture.rows(0, query)


@pytest.mark.parametrize("head", [2, -1, True, 0.5, "mean"])
def test_bad_heads(vit_capture, head):
    with pytest.raises(AttentionInputError, match="2 heads"):
        vit_capture.rows(0, (0, 0), head)


def test_query_forms_accepted(vit_capture):
    a = vit_capture.rows(0, (2, 3)).qk
    np.testing.assert_array_equal(vit_capture.rows(0, [2, 3]).qk, a)
    np.testing.assert_array_equal(vit_capture.rows(0, np.array([2, 3])).qk, a)
    assert vit_capture.rows(0, (np.int64(2), np.int64(3))).query == (2, 3)
    assert check_query("global", (2, 2)) == ("global", 0)
    assert check_query((1, 1), (2, 3)) == ((1, 1), 5)


def test_batch_of_several_images_is_refused(tiny_vit):
    pixels = _pixels(tiny_vit).repeat(2, 1, 1, 1)
    with pytest.raises(AttentionInputError, match="one image at a time"):
        capture_attention(tiny_vit, pixels)


def test_capture_validates_shapes():
    t = torch.zeros(2, 5, 4)
    with pytest.raises(ValueError, match="1\\+gh\\*gw"):
        AttentionCapture(q=(t,), k=(t,), v=(t,), grid=(3, 3), family="vit", layer_names=("a",))
    with pytest.raises(ValueError, match="same"):
        AttentionCapture(q=(t, t), k=(t,), v=(t,), grid=(2, 2), family="vit", layer_names=("a",))


# --- grid geometry -------------------------------------------------------------------------------

def test_cell_box_round_trips_with_patch_at():
    size, grid = (100, 200), (4, 8)  # cells are 25 x 25 pixels; pixel centres at integers
    assert cell_box((0, 0), size, grid) == (-0.5, -0.5, 24.5, 24.5)
    assert cell_box((1, 2), size, grid) == (49.5, 24.5, 74.5, 49.5)
    for cell in [(0, 0), (1, 2), (3, 7)]:
        x0, y0, x1, y1 = cell_box(cell, size, grid)
        assert patch_at(size, grid, (x0 + x1) / 2, (y0 + y1) / 2) == cell
        assert patch_at(size, grid, x0 + 0.01, y0 + 0.01) == cell
        assert patch_at(size, grid, x1 - 0.01, y1 - 0.01) == cell


def test_normalised_map_peaks_at_one():
    grid = (2, 3)
    v = torch.zeros(1, 7, 7)
    v[0, 1:, 1:] = 20 * torch.eye(6)  # patch queries attend (almost) only to themselves under v-v
    capture = _planted(torch.zeros(1, 7, 7), torch.zeros(1, 7, 7), v, grid)
    rows = capture.rows(0, (1, 2))
    assert rows.normalised("vv").max() == pytest.approx(1.0) and rows.normalised("vv")[1, 2] == pytest.approx(1.0)
    np.testing.assert_allclose(rows.normalised("qk"), np.ones(grid))  # uniform q-k row


def test_neighbourhood_counts():
    grid = (5, 6)
    near = neighbourhood(grid, 1, "chebyshev")
    brute = np.array([[max(abs(i // 6 - j // 6), abs(i % 6 - j % 6)) <= 1 for j in range(30)] for i in range(30)])
    np.testing.assert_array_equal(near.numpy(), brute)
    near_e = neighbourhood(grid, 1.5, "euclidean")
    brute_e = np.array([[math.hypot(i // 6 - j // 6, i % 6 - j % 6) <= 1.5 for j in range(30)] for i in range(30)])
    np.testing.assert_array_equal(near_e.numpy(), brute_e)
    assert near[0].sum() == 4 and near[1 + 6].sum() == 9 and neighbourhood(grid, 1, "euclidean")[7].sum() == 5


# --- statistics ----------------------------------------------------------------------------------

def _planted(q, k, v, grid):
    return AttentionCapture(q=(q,), k=(k,), v=(v,), grid=grid, family="vit", layer_names=("planted",))


def test_stats_of_uniform_rows_have_known_values():
    grid = (4, 5)
    tokens = 1 + 20
    zeros = torch.zeros(3, tokens, 8)  # q = k = v = 0: every row uniform over the 21 tokens
    capture = _planted(zeros, zeros, zeros, grid)
    corner = capture.stats((0, 0), radius=1)
    inner = capture.stats((2, 2), radius=1)
    for kind in ("qk", "vv"):
        assert corner.kind(kind)["self"][0] == pytest.approx(1 / tokens)
        assert corner.kind(kind)["entropy"][0] == pytest.approx(math.log(tokens))
        assert corner.kind(kind)["global"][0] == pytest.approx(1 / tokens)
        assert corner.kind(kind)["local"][0] == pytest.approx(4 / tokens)
        assert inner.kind(kind)["local"][0] == pytest.approx(9 / tokens)
    assert corner.max_entropy == pytest.approx(math.log(tokens))
    assert capture.stats((2, 2), radius=1, metric="euclidean").qk["local"][0] == pytest.approx(5 / tokens)
    glob = capture.stats("global")
    assert math.isnan(glob.qk["local"][0]) and glob.qk["self"][0] == pytest.approx(1 / tokens)
    everything = capture.stats("all", radius=1)
    counts = [sum(max(abs(r - r2), abs(c - c2)) <= 1 for r2 in range(4) for c2 in range(5))
              for r in range(4) for c in range(5)]
    assert everything.vv["local"][0] == pytest.approx(np.mean(counts) / tokens)
    assert everything.query == "all"


def test_stats_of_peaked_vv_rows():
    grid = (3, 4)
    tokens = 13
    v = 40.0 * torch.eye(tokens)[None]  # orthogonal, long values: v-v attends to itself only
    q = torch.zeros(1, tokens, tokens)
    capture = _planted(q, q, v, grid)
    stats = capture.stats("all", radius=0)
    assert stats.vv["self"][0] == pytest.approx(1.0, abs=1e-6)
    assert stats.vv["local"][0] == pytest.approx(1.0, abs=1e-6)  # radius 0 = the query cell only
    assert stats.vv["entropy"][0] == pytest.approx(0.0, abs=1e-4)
    assert stats.qk["entropy"][0] == pytest.approx(math.log(tokens))
    rows = capture.rows(0, (2, 1))
    assert np.unravel_index(rows.vv.argmax(), rows.vv.shape) == (2, 1)


def _brute_stats(row_map, row_global, cell, radius):
    """Statistics of one row from its maps, with literal formulas (Chebyshev neighbourhood)."""
    p = np.concatenate([[row_global], row_map.ravel()]).astype(np.float64)
    gh, gw = row_map.shape
    entropy = -sum(x * math.log(x) for x in p if x > 0)
    if cell == "global":
        return {"self": row_global, "entropy": entropy, "global": row_global, "local": float("nan")}
    local = sum(row_map[r, c] for r in range(gh) for c in range(gw)
                if max(abs(r - cell[0]), abs(c - cell[1])) <= radius)
    return {"self": row_map[cell], "entropy": entropy, "global": row_global, "local": local}


def test_stats_match_rows_for_one_query_and_all_queries(tiny_vit):
    capture = capture_attention(tiny_vit, _pixels(tiny_vit, (48, 64)))  # 3 x 4 grid: all queries are few
    cells = [(r, c) for r in range(3) for c in range(4)]
    for head in (None, 1):
        one = capture.stats((1, 2), head=head, radius=1)
        every = capture.stats("all", head=head, radius=1)
        for layer in range(capture.num_layers):
            for kind in ("qk", "vv"):
                rows = capture.rows(layer, (1, 2), head)
                expect = _brute_stats(*rows.kind(kind), (1, 2), 1)
                for name, value in expect.items():
                    assert one.kind(kind)[name][layer] == pytest.approx(value, abs=1e-6), (name, kind, layer)
                per_cell = [_brute_stats(*capture.rows(layer, cell, head).kind(kind), cell, 1) for cell in cells]
                for name in expect:
                    mean = np.mean([s[name] for s in per_cell])
                    assert every.kind(kind)[name][layer] == pytest.approx(mean, abs=1e-6), (name, kind, layer)
        glob = capture.stats("global", head=head)
        rows = capture.rows(0, "global", head)
        assert glob.qk["entropy"][0] == pytest.approx(_brute_stats(rows.qk, rows.qk_global, "global", 1)["entropy"],
                                                      abs=1e-6)


def test_stats_layer_subset_and_bad_options(vit_capture):
    sub = vit_capture.stats((0, 0), layers=[-1, 0])
    assert sub.layers == (vit_capture.num_layers - 1, 0)
    full = vit_capture.stats((0, 0))
    assert sub.qk["entropy"][1] == pytest.approx(full.qk["entropy"][0])
    with pytest.raises(AttentionInputError, match="radius"):
        vit_capture.stats(radius=-1)
    with pytest.raises(AttentionInputError, match="metric"):
        vit_capture.stats(metric="manhattan")
    with pytest.raises(AttentionInputError, match="query"):
        vit_capture.stats(query="everything")
    with pytest.raises(AttentionInputError, match="kind"):
        full.kind("kq")


def test_attention_layout_reads_the_towers(tiny_vit, tiny_resnet):
    names, heads = attention_layout(tiny_vit)
    blocks = tiny_vit.model.visual.transformer.resblocks
    assert names == tuple(f"block {i}" for i in range(len(blocks))) and heads == blocks[0].attn.num_heads == 2
    assert attention_layout(tiny_resnet) == (("attention pool",), tiny_resnet.model.visual.attnpool.num_heads)
