"""Segmentation inference, step by step on hand-built inputs, then end to end on the tiny ViT.

Expected values are computed by hand (in comments) or by independent loops in this file.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine import benchmark_classes, segment
from clipsurgery_widgets.engine.errors import ClipSurgeryError, TextInputError, UnsupportedModelError
from clipsurgery_widgets.engine.loading import OPENAI_MEAN, OPENAI_STD
from clipsurgery_widgets.engine.segmentation import (
    BENCHMARKS,
    class_features,
    inference,
    parse_class_names,
    read_class_file,
)
from clipsurgery_widgets.engine.segmentation.resize import keep_ratio_size, normalise_rgb, prepare_rgb, resize_rgb
from clipsurgery_widgets.engine.segmentation.scores import area_rule, class_max, class_probabilities, labels_from
from clipsurgery_widgets.engine.segmentation.windows import sliding_cosines, window_grid, window_starts
from clipsurgery_widgets.engine.text.encoding import TEMPLATES


def rgb_image(h=120, w=150, seed=0):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


# --- step 1: classes ---------------------------------------------------------------------------

def test_entries_split_on_commas_and_lists_kept():
    assert parse_class_names(["sky, wall ,tree", ["person", " man "], "cat"]) == [
        ["sky", "wall", "tree"], ["person", "man"], ["cat"]]


@pytest.mark.parametrize("name, count", [("voc21", 21), ("voc20", 20), ("context60", 60), ("context59", 59),
                                         ("coco_object", 81), ("coco_stuff164k", 171), ("cityscapes", 19),
                                         ("ade20k", 150)])
def test_benchmark_sets_have_their_class_counts(name, count):
    assert len(benchmark_classes(name)) == count
    assert parse_class_names(name) == benchmark_classes(name)


def test_benchmark_synonyms():
    voc = benchmark_classes("voc21")
    assert len(voc[0]) == 26 and voc[0][0] == "sky" and voc[0][-1] == "fence"
    assert voc[15] == ["person", "person in shirt", "person in jeans", "person in dress", "person in sweater",
                       "person in skirt", "person in jacket"]
    assert voc[1:] == benchmark_classes("voc20")
    coco = benchmark_classes("coco_object")
    assert coco[0] == voc[0] and coco[1] == voc[15] + ["body"]
    assert benchmark_classes("context60")[0] == ["background"]
    assert set(BENCHMARKS) == {"voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff164k",
                               "cityscapes", "ade20k"}


def test_read_class_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\ncat, kitty\ndog\n\n")
    assert read_class_file(path) == [["background"], ["cat", "kitty"], ["dog"]]
    path.write_text("background\n\ndog\n")
    with pytest.raises(TextInputError, match="line 2 is blank"):
        read_class_file(path)
    with pytest.raises(TextInputError, match="not found"):
        read_class_file(tmp_path / "missing.txt")


@pytest.mark.parametrize("bad, match", [
    ([], "No classes"), (["cat", ""], "Class 1 has no names"), (["cat", []], "Class 1 has no names"),
    (["cat,,dog"], "empty name"), ("cat", "single string"), ("voc22", "voc21"), ([3], "int"),
    (["cat", ["dog", 1]], "not a string")])
def test_bad_class_names(bad, match):
    with pytest.raises(TextInputError, match=match):
        parse_class_names(bad)


# --- step 3: resize ----------------------------------------------------------------------------

def test_keep_ratio_sizes_by_hand():
    assert keep_ratio_size(375, 500, 336) == (336, 448)  # r = 336/375: 500 r = 448
    assert keep_ratio_size(500, 333, 336) == (505, 336)  # 500 * 336/333 = 504.50 -> +0.5 -> 505
    assert keep_ratio_size(100, 4000, 336) == (51, 2048)  # long side caps: r = 0.512, 51.2 -> 51
    assert keep_ratio_size(4, 6, 3) == (3, 5)  # 6 * 0.75 = 4.5 rounds half UP to 5
    assert keep_ratio_size(448, 448, 448) == (448, 448)


def reference_bilinear(rgb, size):
    """Half-pixel-centre bilinear with clamped edges, float64 loops, rounded to uint8."""
    h, w = rgb.shape[:2]
    out = np.zeros((*size, 3))
    for i in range(size[0]):
        sy = max((i + 0.5) * h / size[0] - 0.5, 0.0)
        y0 = min(int(math.floor(sy)), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(size[1]):
            sx = max((j + 0.5) * w / size[1] - 0.5, 0.0)
            x0 = min(int(math.floor(sx)), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = rgb[y0, x0] * (1 - fx) + rgb[y0, x1] * fx
            bottom = rgb[y1, x0] * (1 - fx) + rgb[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return np.round(out)


@pytest.mark.parametrize("size", [(4, 6), (11, 9), (7, 13)])
def test_resize_is_half_pixel_bilinear(size):
    rgb = rgb_image(7, 9, seed=1)
    got = resize_rgb(rgb, size)
    assert got.dtype == np.uint8 and got.shape == (*size, 3)
    assert np.abs(got.astype(int) - reference_bilinear(rgb.astype(float), size)).max() <= 1


def test_normalise_and_prepare():
    rgb = rgb_image(375, 500)
    x = prepare_rgb(rgb, 336, OPENAI_MEAN, OPENAI_STD)
    assert x.shape == (1, 3, 336, 448) and x.dtype == torch.float32
    y = normalise_rgb(rgb[:2, :2], (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert y[0, 1, 1, 0].item() == pytest.approx((rgb[1, 0, 1] / 255 - 0.5) / 0.5, abs=1e-6)


# --- step 4: windows ---------------------------------------------------------------------------

def test_window_positions_by_hand():
    # h=300, c=224, t=112: n = (300 - 224 + 111) // 112 + 1 = 2; window 1: y2 = min(336, 300), y1 = 300 - 224.
    assert window_starts(300, 224, 112) == [(0, 224), (76, 300)]
    assert window_starts(150, 224, 112) == [(0, 150)]  # h < c: one window, the whole side
    assert window_starts(224, 224, 112) == [(0, 224)]
    assert window_starts(225, 224, 112) == [(0, 224), (1, 225)]
    assert window_starts(448, 224, 112) == [(0, 224), (112, 336), (224, 448)]
    assert window_grid(300, 150, 224, 112) == [(0, 224, 0, 150), (76, 300, 0, 150)]
    assert window_grid(300, 150, 0, 112) == window_grid(300, 150, None, None) == [(0, 300, 0, 150)]


def position_pixels(h, w):
    """Channel 0 holds the row index, channel 1 the column index."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([ys, xs, torch.zeros_like(ys)])[None]


def corner_angle_encoder(p=16, calls=None):
    """Every patch token of a window is (cos a, sin a, 0), a set by the window's top-left pixel."""
    def encode(pixels):
        b, _, h, w = pixels.shape
        if calls is not None:
            calls.append((b, h, w))
        angle = 0.01 * pixels[:, 0, 0, 0] + 0.003 * pixels[:, 1, 0, 0]  # [B]
        token = torch.stack([angle.cos(), angle.sin(), torch.zeros_like(angle)], dim=-1)  # [B, 3]
        n = (h // p) * (w // p)
        return SimpleNamespace(tokens=token[:, None].expand(b, 1 + n, 3) * 2.5, grid=(h // p, w // p))
    return encode


def test_count_map_averages_cosines():
    h, w = 300, 260
    windows = window_grid(h, w, 224, 112)
    assert windows == [(0, 224, 0, 224), (0, 224, 36, 260), (76, 300, 0, 224), (76, 300, 36, 260)]
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    got = sliding_cosines(corner_angle_encoder(), position_pixels(h, w), text, windows, 16, batch_size=3)
    expected = np.zeros((2, h, w))
    count = np.zeros((h, w))
    for y1, y2, x1, x2 in windows:
        a = 0.01 * y1 + 0.003 * x1
        expected[:, y1:y2, x1:x2] += np.array([math.cos(a), math.sin(a)])[:, None, None]
        count[y1:y2, x1:x2] += 1
    expected /= count
    assert got.shape == (2, h, w)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    # e.g. pixel (100, 100) lies in all four windows: the plain mean of four cosines
    four = np.mean([math.cos(0.01 * y + 0.003 * x) for y in (0, 76) for x in (0, 36)])
    assert got[0, 100, 100].item() == pytest.approx(four, abs=1e-6)


def test_windows_batched_like_one_at_a_time():
    pixels, text = position_pixels(300, 410), torch.eye(3)[:2]
    windows = window_grid(300, 410, 224, 112)
    calls = []
    batched = sliding_cosines(corner_angle_encoder(calls=calls), pixels, text, windows, 16, batch_size=4)
    single = sliding_cosines(corner_angle_encoder(), pixels, text, windows, 16, batch_size=1)
    assert len(windows) == 2 * 3 and [c[0] for c in calls] == [4, 2]
    assert torch.equal(batched, single)


def test_trailing_rows_dropped_but_map_stretched_over_full_window():
    calls = []
    windows = window_grid(300, 150, 200, 100)  # windows 200 x 150 -> encoded 192 x 144
    sliding_cosines(corner_angle_encoder(calls=calls), position_pixels(300, 150), torch.eye(3)[:1], windows, 16)
    assert calls == [(len(windows), 192, 144)]

    def two_by_two(pixels):  # a 40 x 40 window keeps 32 x 32: a 2 x 2 grid with tokens e_0 .. e_3
        return SimpleNamespace(tokens=torch.cat([torch.zeros(1, 1, 4), torch.eye(4)[None]], 1), grid=(2, 2))
    text = torch.eye(4)
    got = sliding_cosines(two_by_two, torch.zeros(1, 3, 40, 40), text, [(0, 40, 0, 40)], 16)
    assert got.shape == (4, 40, 40)
    # align_corners=False: pixel 39's centre maps beyond source cell 1 and clamps to it, so the
    # bottom-right pixel is exactly patch (1, 1), i.e. name 3; the trailing 8 pixels still get values.
    assert got[:, 39, 39].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert got[:, 0, 0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert torch.allclose(got.sum(0), torch.ones(40, 40))


# --- step 6: scores ----------------------------------------------------------------------------

def test_synonyms_combined_after_softmax_not_averaged():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    g_b = F.normalize(e1 + 0.2 * e2, dim=0)
    f = e1  # the pixel feature
    # Max rule: class A (names e1, e2) has cosine 1 with f, class B 1/sqrt(1.04) = 0.98 -> A.
    # Averaged features: A would be (e1 + e2)/sqrt 2, cosine 0.707 < 0.98 -> B.
    names_cos = torch.stack([f @ e1, f @ e2, f @ g_b]).reshape(3, 1, 1)
    probs = class_probabilities(names_cos, (0, 0, 1), 2, logit_scale=10.0)
    z = [math.exp(10 * v) for v in (1.0, 0.0, 1 / math.sqrt(1.04))]
    assert probs[:, 0, 0].tolist() == pytest.approx([z[0] / sum(z), z[2] / sum(z)], abs=1e-6)
    assert labels_from(probs, 0.0).item() == 0
    averaged = F.normalize(e1 + e2, dim=0) @ f
    assert averaged < g_b @ f  # averaging would have picked class B
    assert class_max(names_cos, (0, 0, 1), 2)[:, 0, 0].tolist() == pytest.approx([1.0, 1 / math.sqrt(1.04)])


def test_class_probabilities_equal_softmax_then_max():
    gen = torch.Generator().manual_seed(3)
    cosines = torch.rand(7, 5, 6, generator=gen) * 2 - 1
    name_class = (0, 0, 1, 2, 2, 2, 3)
    soft = (50.0 * cosines).softmax(dim=0)
    want = torch.stack([soft[[q for q, c in enumerate(name_class) if c == k]].amax(0) for k in range(4)])
    assert torch.allclose(class_probabilities(cosines, name_class, 4, 50.0), want, atol=1e-6)
    assert class_probabilities(cosines, name_class, 4, 50.0).sum(0).max() <= 1 + 1e-6


def fake_dense(model, pixels, method, **params):
    """Stand-in for encode_dense: each patch token is the pixel vector at the patch's top-left."""
    b, _, h, w = pixels.shape
    feats = pixels[:, :, ::16, ::16].flatten(2).transpose(1, 2)
    return SimpleNamespace(tokens=torch.cat([torch.zeros(b, 1, 3), feats], 1), grid=(h // 16, w // 16))


def test_segment_combines_synonyms_by_max(monkeypatch, tiny_vit):
    monkeypatch.setattr(inference, "encode_dense", fake_dense)
    e1, e2 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    text = torch.tensor([e1, e2, [1.0, 0.2, 0.0]])
    text = F.normalize(text, dim=-1)
    pixels = torch.tensor([3.0, 0.0, 0.0])[None, :, None, None].expand(1, 3, 64, 48).clone()  # feature e1
    seg = segment(tiny_vit, pixels, [["a", "a2"], "b"], text_features=text, logit_scale=10.0)
    assert seg.names == ("a", "a2", "b") and seg.name_class == (0, 0, 1)
    assert (seg.labels == 0).all()
    z = [math.exp(10 * v) for v in (1.0, 0.0, 1 / math.sqrt(1.04))]
    assert seg.probs[:, 5, 7].tolist() == pytest.approx([z[0] / sum(z), z[2] / sum(z)], abs=1e-5)
    assert seg.logits[:, 0, 0].tolist() == pytest.approx([1.0, 1 / math.sqrt(1.04)], abs=1e-6)
    assert seg.input_size == (64, 48) and seg.labels.shape == (64, 48)
    # prob_thd above the best probability sends every pixel to class 0 (here already 0): flip classes.
    seg = segment(tiny_vit, pixels, ["b", ["a", "a2"]], text_features=text[[2, 0, 1]], logit_scale=10.0,
                  prob_thd=0.0)
    assert (seg.labels == 1).all()
    seg = segment(tiny_vit, pixels, ["b", ["a", "a2"]], text_features=text[[2, 0, 1]], logit_scale=10.0,
                  prob_thd=0.7)
    assert (seg.labels == 0).all()  # best probability z0/sum(z) = 0.54 < 0.7


def test_area_rule_by_hand():
    # 2 x 5 pixels, 3 classes; winners per pixel: class 0 x4, class 1 x5, class 2 x1
    winners = torch.tensor([[0, 0, 0, 0, 1], [1, 1, 1, 1, 2]])
    probs = F.one_hot(winners, 3).permute(2, 0, 1).float() * 0.5 + 0.1
    kept = area_rule(probs, 0.2)  # total over classes >= 1: 6; 0.2 * 6 = 1.2; class 2 (1 pixel) dropped
    assert torch.equal(kept[:2], probs[:2]) and (kept[2] == 0).all()
    # the dropped pixel now ties classes 0 and 1 at 0.1: the first maximum (class 0) wins
    assert torch.equal(labels_from(kept, 0.0), torch.tensor([[0, 0, 0, 0, 1], [1, 1, 1, 1, 0]]))
    # n_c <= thd * total drops; equality drops too: classes 1 and 2 win 2 each out of 4, thd 0.5
    winners = torch.tensor([[1, 1, 2, 2]])
    probs = F.one_hot(winners, 3).permute(2, 0, 1).float()
    kept = area_rule(probs, 0.5)
    assert (kept[1:] == 0).all()
    # class 0 is never zeroed, even when it wins nothing and the threshold is 1
    probs = torch.tensor([[[0.2, 0.1]], [[0.5, 0.2]], [[0.3, 0.7]]])
    kept = area_rule(probs, 1.0)
    assert torch.equal(kept[0], probs[0]) and (kept[1:] == 0).all()
    assert torch.equal(area_rule(probs, 0.0), probs)  # no class wins 0 pixels here


def test_labels_threshold_and_ties():
    probs = torch.tensor([[[0.2, 0.3, 0.3, 0.05]],
                          [[0.4, 0.3, 0.1, 0.06]],
                          [[0.4, 0.1, 0.3, 0.07]]])
    # pixel 0: tie 1/2 -> 1; pixel 1: tie 0/1 -> 0; pixel 2: tie 0/2 -> 0; pixel 3: max 0.07
    assert labels_from(probs, 0.0).tolist() == [[1, 0, 0, 2]]
    assert labels_from(probs, 0.07).tolist() == [[1, 0, 0, 2]]  # not below the threshold
    assert labels_from(probs, 0.35).tolist() == [[1, 0, 0, 0]]


# --- end to end on the tiny ViT ----------------------------------------------------------------

@pytest.fixture(scope="module")
def voc_features(tiny_vit):
    return class_features(tiny_vit, "voc21")


def test_default_templates_are_the_openai_80(tiny_vit):
    assert inference.SEGMENTATION_TEMPLATES == TEMPLATES[:80] and len(TEMPLATES[:80]) == 80
    assert "there is a {} in the scene." not in inference.SEGMENTATION_TEMPLATES
    feats = class_features(tiny_vit, ["cat, kitty", "dog"])
    clip, tok = tiny_vit.model, tiny_vit.tokenizer
    with torch.no_grad():  # independent: full encode_text of each prompt, normalise, mean, normalise
        ref = [F.normalize(F.normalize(clip.encode_text(tok([t.format(n) for t in TEMPLATES[:80]])), dim=-1)
                           .mean(0), dim=0) for n in ("cat", "kitty", "dog")]
    assert torch.allclose(feats.features, torch.stack(ref), atol=1e-5)
    assert feats.names == ("cat", "kitty", "dog") and feats.name_class == (0, 0, 1)


def test_end_to_end_voc21(tiny_vit, voc_features):
    image = rgb_image(90, 130)
    seg = segment(tiny_vit, image, "voc21", short_side=112, logit_scale=65.0, prob_thd=0.1, area_thd=0.1,
                  text_features=voc_features)
    assert seg.num_classes == 21 and len(seg.names) == 26 + 7 + 5 + 18
    assert seg.name_class.count(0) == 26 and seg.names[:2] == ("sky", "wall")
    assert seg.labels.shape == (90, 130) and seg.labels.dtype == torch.int64
    assert seg.probs.shape == seg.logits.shape == (21, 90, 130) and seg.probs.dtype == torch.float32
    assert seg.input_size == (112, 162)  # r = 112/90: 130 r = 161.8 -> 162
    assert seg.probs.sum(0).max() <= 1 + 1e-5 and seg.probs.min() >= 0
    assert 0 <= seg.labels.min() and seg.labels.max() < 21
    assert seg.logits.abs().max() <= 1 + 1e-5


def test_text_features_given_equals_computed(tiny_vit, voc_features):
    image = rgb_image(80, 100)
    a = segment(tiny_vit, image, "voc21", crop=64, stride=32)
    b = segment(tiny_vit, image, "voc21", crop=64, stride=32, text_features=voc_features)
    c = segment(tiny_vit, image, "voc21", crop=64, stride=32, text_features=voc_features.features)
    for other in (b, c):
        assert torch.equal(a.logits, other.logits) and torch.equal(a.labels, other.labels)
    with pytest.raises(TextInputError, match="other names"):
        segment(tiny_vit, image, "voc20", text_features=voc_features)
    with pytest.raises(TextInputError, match="one row per name"):
        segment(tiny_vit, image, "voc20", text_features=voc_features.features)
    with pytest.raises(TextInputError, match="unit L2 norm"):
        segment(tiny_vit, image, "voc21", text_features=voc_features.features * 2)


def test_method_params_pass_through(tiny_vit):
    image = rgb_image(64, 80)
    run = dict(crop=0, text_features=class_features(tiny_vit, ["a", "b", "c"]))
    default = segment(tiny_vit, image, ["a", "b", "c"], "naclip", **run)
    narrow = segment(tiny_vit, image, ["a", "b", "c"], "naclip", gaussian_std=3.0, **run)
    assert not torch.allclose(default.logits, narrow.logits)
    assert not torch.allclose(default.logits, segment(tiny_vit, image, ["a", "b", "c"], "sclip", **run).logits)


def test_batching_whole_window_tensor_input_and_out_size(tiny_vit):
    image = rgb_image(100, 140)
    names = ["a", "b, c"]
    feats = class_features(tiny_vit, names)
    one = segment(tiny_vit, image, names, crop=48, stride=32, windows_batch=1, text_features=feats)
    many = segment(tiny_vit, image, names, crop=48, stride=32, windows_batch=5, text_features=feats)
    assert torch.allclose(one.logits, many.logits, atol=1e-5)
    whole = segment(tiny_vit, image, names, crop=0, text_features=feats)
    big = segment(tiny_vit, image, names, crop=512, stride=256, text_features=feats)  # one window too
    assert torch.equal(whole.logits, big.logits)
    pixels = prepare_rgb(image, 64, tiny_vit.mean, tiny_vit.std)
    from_image = segment(tiny_vit, image, names, short_side=64, text_features=feats)
    from_tensor = segment(tiny_vit, pixels, names, out_size=(100, 140), text_features=feats)
    assert from_tensor.input_size == from_image.input_size == (64, 90)
    assert torch.equal(from_image.logits, from_tensor.logits)
    small = segment(tiny_vit, pixels, names, out_size=(20, 30), text_features=feats)
    assert small.labels.shape == (20, 30) and small.probs.shape == (2, 20, 30)
    assert segment(tiny_vit, pixels, names, text_features=feats).labels.shape == (64, 90)


def test_pamr_and_bare_clip(tiny_vit):
    image = rgb_image(64, 64)
    names = ["a", "b", "c"]
    feats = class_features(tiny_vit, names)
    plain = segment(tiny_vit, image, names, crop=0, text_features=feats)
    refined = segment(tiny_vit, image, names, crop=0, text_features=feats, pamr_steps=3, pamr_dilations=(2,))
    assert not torch.allclose(plain.logits, refined.logits)
    assert tiny_vit.mean == OPENAI_MEAN  # so the bare model (OpenAI mean/std) must agree exactly
    bare = segment(tiny_vit.model, image, names, crop=0, pamr_steps=3, pamr_dilations=(2,))
    assert torch.allclose(bare.logits, refined.logits, atol=1e-6)


def test_resnet_raw_works_and_vit_methods_refused(tiny_resnet):
    seg = segment(tiny_resnet, rgb_image(64, 96), ["a", "b"], "raw", crop=0)
    assert seg.labels.shape == (64, 96)
    with pytest.raises(UnsupportedModelError):
        segment(tiny_resnet, rgb_image(64, 96), ["a", "b"], "sclip", crop=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(class_names=[]), "No classes"), (dict(class_names=["a", ""]), "no names"),
    (dict(class_names="cat"), "single string"), (dict(class_names="ade21k"), "ade20k"),
    (dict(crop=8), "smaller than one 16-pixel patch"), (dict(crop=-1), "crop=-1"),
    (dict(stride=0), "stride=0"), (dict(stride=300), "larger than crop"),
    (dict(logit_scale=0), "logit_scale"), (dict(logit_scale=-5.0), "logit_scale"),
    (dict(prob_thd=1.5), "prob_thd"), (dict(prob_thd=-0.1), "prob_thd"), (dict(area_thd=2), "area_thd"),
    (dict(pamr_steps=-1), "pamr_steps"), (dict(pamr_dilations=()), "pamr_dilations"),
    (dict(pamr_dilations=(8, 0)), "pamr_dilations"), (dict(pamr_dilations=8), "pamr_dilations"),
    (dict(out_size=(10,)), "out_size"), (dict(out_size=(10, 0)), "out_size"), (dict(out_size=(1.5, 2)), "out_size"),
    (dict(method="sclipp"), "sclipp"), (dict(method="naclip", gaussian_sd=3.0), "gaussian_sd"),
    (dict(method="naclip", gaussian_std=-1.0), "gaussian_std"), (dict(short_side=0), "short_side"),
    (dict(windows_batch=0), "windows_batch"),
])
def test_bad_input_errors(tiny_vit, kwargs, match):
    args = dict(class_names=["a", "b"])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as info:
        segment(tiny_vit, rgb_image(40, 40), **args)
    assert isinstance(info.value, ClipSurgeryError) or type(info.value) is ValueError


def test_bad_image_inputs(tiny_vit):
    with pytest.raises(ValueError, match="float \\[1, 3, h, w\\]"):
        segment(tiny_vit, torch.zeros(2, 3, 32, 32), ["a", "b"])
    with pytest.raises(ValueError, match="used as is"):
        segment(tiny_vit, torch.zeros(1, 3, 32, 32), ["a", "b"], short_side=64)
    with pytest.raises(ValueError, match="smaller than one 16-pixel patch"):
        segment(tiny_vit, rgb_image(10, 40), ["a", "b"], crop=0)
