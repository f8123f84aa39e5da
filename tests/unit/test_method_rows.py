"""The attention each dense method uses, one query at a time (engine/method_rows.py).

Rows are checked against the weights of method_attention read directly here (mean over heads or one
head, the query's row, reshaped to the grid), and against formulas written out from the captured
q, k, v (at the native grid every method sees the same last-block input).
"""
import math

import numpy as np
import pytest
import torch

from clipsurgery_widgets.engine.attention import AttentionInputError, capture_attention
from clipsurgery_widgets.engine.errors import MethodError
from clipsurgery_widgets.engine.images import preprocess, sample_image
from clipsurgery_widgets.engine.method_rows import (
    METHOD_KINDS,
    KindRow,
    check_kinds,
    image_kind_attention,
    kind_attention,
    method_rows,
)
from clipsurgery_widgets.engine.towers.dense_attention import method_attention

# The method (with parameters) whose attention each kind is, and what its rows are divided by (the brief).
SOURCES = {"qk": ("raw", {}, 1), "vv": ("clip_surgery", {}, 1), "qq": ("clearclip", {"attention": "qq"}, 1),
           "kk": ("naclip", {"gaussian_std": 0}, 1), "qq+kk": ("sclip", {}, 2), "kk+gauss": ("naclip", {}, 1),
           "gem": ("gem", {}, 1)}


def _pixels(model, size=224):
    return preprocess(sample_image("cat"), size, model.mean, model.std, model.patch_size)


@pytest.fixture(scope="module")
def attentions(tiny_vit):
    return {kind: kind_attention(tiny_vit, _pixels(tiny_vit), kind) for kind in METHOD_KINDS}


def _direct(model, pixels, kind, query, head=None):
    """(grid map, global share) read straight from method_attention's weights."""
    method, params, divide = SOURCES[kind]
    result = method_attention(model, pixels, method, **params)
    gh, gw = result.grid
    token = 1 + query[0] * gw + query[1]
    weights = result.weights[0, :, token]  # [H, T]
    row = (weights.mean(0) if head is None else weights[head]) / divide
    return row[1:].reshape(gh, gw).numpy(), float(row[0])


@pytest.mark.parametrize("kind", METHOD_KINDS)
def test_rows_are_the_rows_of_method_attention(tiny_vit, attentions, kind):
    pixels = _pixels(tiny_vit)
    for query, head in [((7, 7), None), ((2, 11), 1)]:
        row = attentions[kind].rows(query, head)
        patches, global_token = _direct(tiny_vit, pixels, kind, query, head)
        np.testing.assert_allclose(row.patches, patches, atol=1e-6)
        assert row.global_token == pytest.approx(global_token, abs=1e-6)
        assert row.patches.sum() + row.global_token == pytest.approx(1.0, abs=1e-4)  # a distribution
        assert (row.kind, row.method, row.layer, row.query, row.head, row.grid) == \
            (kind, SOURCES[kind][0], 5, query, head, (14, 14))


def test_sclip_rows_are_halved_and_say_so(tiny_vit, attentions):
    raw = method_attention(tiny_vit, _pixels(tiny_vit), "sclip").weights[0]
    np.testing.assert_allclose(raw.sum(-1).numpy(), 2.0, atol=1e-4)  # the method's own rows sum to 2
    halved = attentions["qq+kk"]
    assert halved.scale == 2.0 and halved.rows((3, 3)).scale == 2.0
    np.testing.assert_allclose(halved.weights.numpy(), raw.numpy() / 2, atol=1e-7)
    assert all(attentions[kind].scale == 1.0 for kind in METHOD_KINDS if kind != "qq+kk")


def test_self_attention_kinds_match_formulas_from_the_captured_qkv(tiny_vit, attentions):
    """At the native grid the last block's q, k, v are the capture's: write each formula out here."""
    capture = capture_attention(tiny_vit, _pixels(tiny_vit))
    q, k, v = capture.q[-1].double(), capture.k[-1].double(), capture.v[-1].double()  # [H, T, d]
    s = q.shape[-1] ** -0.5
    soft = lambda a, b: torch.softmax(s * a @ b.transpose(-1, -2), -1)  # noqa: E731
    gh, gw = capture.grid
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    omega = np.zeros((1 + gh * gw,) * 2)
    omega[1:, 1:] = np.exp(-((rows[:, None] - rows) ** 2 + (cols[:, None] - cols) ** 2) / (2 * 5.0 ** 2))
    expected = {"qk": soft(q, k), "vv": soft(v, v), "qq": soft(q, q), "kk": soft(k, k),
                "qq+kk": (soft(q, q) + soft(k, k)) / 2,
                "kk+gauss": torch.softmax(s * k @ k.transpose(-1, -2) + torch.from_numpy(omega), -1)}
    for kind, weights in expected.items():
        np.testing.assert_allclose(attentions[kind].weights.double().numpy(), weights.numpy(), atol=1e-5,
                                   err_msg=kind)
    # q-k and v-v at the last block are the capture's rows too.
    for kind in ("qk", "vv"):
        np.testing.assert_allclose(attentions[kind].rows((4, 9)).patches,
                                   capture.rows(-1, (4, 9)).kind(kind)[0], atol=1e-6)


def test_statistics_against_a_direct_count(attentions):
    attention = attentions["kk+gauss"]
    matrix = attention.weights.double().mean(0).numpy()  # [T, T], mean over heads
    gh, gw = attention.grid
    query = (3, 12)
    token = 1 + query[0] * gw + query[1]
    row = matrix[token]
    near = [1 + r * gw + c for r in range(gh) for c in range(gw) if max(abs(r - 3), abs(c - 12)) <= 2]
    stats = attention.stats(query, None, radius=2)
    assert stats["self"] == pytest.approx(row[token], abs=1e-6)
    assert stats["local"] == pytest.approx(row[near].sum(), abs=1e-6)
    assert stats["entropy"] == pytest.approx(-(row * np.log(row)).sum(), abs=1e-6)
    assert stats["global"] == pytest.approx(row[0], abs=1e-6)
    every = attention.stats("all", 1, radius=0)
    per_head = attention.weights[1].double().numpy()
    assert every["self"] == pytest.approx(np.mean([per_head[t, t] for t in range(1, 1 + gh * gw)]), abs=1e-6)
    assert every["local"] == pytest.approx(every["self"], abs=1e-6)  # radius 0: the query cell only
    assert attention.stats("global")["local"] != attention.stats("global")["local"]  # NaN: no cell
    # The Gaussian prior keeps more of a row near its query than plain k-k does.
    assert attentions["kk+gauss"].stats(radius=1)["local"] > attentions["kk"].stats(radius=1)["local"]


def test_kind_row_from_capture_rows_and_display_values(tiny_vit):
    capture = capture_attention(tiny_vit, _pixels(tiny_vit))
    rows = capture.rows(2, (5, 6), 0)
    row = KindRow.from_rows(rows, "vv")
    assert (row.kind, row.method, row.layer, row.head, row.scale) == ("vv", "clip_surgery", 2, 0, 1.0)
    np.testing.assert_array_equal(row.patches, rows.vv)
    assert row.normalised().max() == pytest.approx(1.0) and row.normalised().shape == (14, 14)


def test_one_shot_rows_non_square_sizes_and_errors(tiny_vit, tiny_resnet):
    rgb = sample_image("cat")
    wide = image_kind_attention(tiny_vit, rgb, (224, 160), "gem")
    assert wide.grid == (14, 10) and wide.weights.shape == (2, 141, 141)
    pixels = _pixels(tiny_vit, (224, 160))
    patches, global_token = _direct(tiny_vit, pixels, "qq", (13, 9))
    np.testing.assert_allclose(method_rows(tiny_vit, pixels, (13, 9), ("qq",))["qq"].patches, patches, atol=1e-6)
    assert list(method_rows(tiny_vit, pixels, "global", ("kk", "qq+kk"), head=1)) == ["kk", "qq+kk"]
    assert check_kinds("qq") == ("qq",) and check_kinds(["gem", "qk"]) == ("gem", "qk")
    for bad in ["xx", (), ("qq", "qq"), (1,)]:
        with pytest.raises(AttentionInputError, match="kinds="):
            check_kinds(bad)
    with pytest.raises(AttentionInputError, match="kinds="):
        kind_attention(tiny_vit, pixels, "q-q")
    with pytest.raises(AttentionInputError, match="one image at a time"):
        kind_attention(tiny_vit, torch.cat([pixels, pixels]), "qq")
    with pytest.raises(AttentionInputError, match="2 heads"):
        wide.rows((0, 0), 2)
    with pytest.raises(AttentionInputError, match="outside the 14x10"):
        wide.rows((0, 10))
    with pytest.raises(MethodError, match="ViT"):
        kind_attention(tiny_resnet, _pixels(tiny_resnet), "qq")
    assert math.isfinite(wide.stats((1, 1))["entropy"])
