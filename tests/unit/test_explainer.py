"""Explainer: results, methods, caches (memory and disk), combined targets, bad input."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clipsurgery_widgets.engine.explainer as explainer_module
from clipsurgery_widgets.engine import ImageInputError, TextInputError, load_model
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import preprocess


@pytest.fixture(scope="module")
def vit():
    return load_model("tiny-random-vit", device="cpu")


@pytest.fixture
def explainer(vit):
    return Explainer(vit, cache_dir=False)


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (70, 110, 3), dtype=np.uint8)


def test_explanation_shapes_and_ranges(explainer, photo):
    result = explainer.explain(photo, ["cat", "dog", "sky"], method="both")
    assert result.labels == ("cat", "dog", "sky") and result.image_size == (70, 110)
    assert result.grid == (14, 14) and result.input_size == (224, 224)
    for mapset in (result.surgery, result.raw):
        assert mapset.maps.shape == (3, 70, 110) and mapset.maps.dtype == np.float32
        assert mapset.maps.min() >= 0 and mapset.maps.max() <= 1
        assert mapset.patch_scores.shape == (196, 3) and mapset.global_scores.shape == (3,)
    assert result.probs.shape == (3,) and abs(result.probs.sum() - 1) < 1e-5
    assert result.redundancy == "labels"
    assert set(result.timings) == {"image", "text", "surgery", "maps", "total"}
    assert result.map_for("dog").shape == (70, 110)
    assert result.segmentation().shape == (70, 110)


def test_scores_follow_the_spec(explainer, photo, vit):
    """Surgery scores: feature surgery (docs/algorithms.md#feature-surgery) of the normalised surgery tokens, written out here."""
    result = explainer.explain(photo, ["cat", "dog"], method="both", size=(160, 224))
    pixels = preprocess(photo, (160, 224), vit.mean, vit.std, vit.patch_size)
    tokens = explainer_module.encode_image_tokens(vit.model, pixels, depth=6)
    text = explainer.label_features(["cat", "dog"])
    feats = F.normalize(tokens.surgery[0], dim=-1)
    sim = feats @ text.T  # [1+N, 2]
    w = 2 * torch.softmax(2 * sim[0], dim=-1)
    expected = w * sim - (w * sim).mean(dim=-1, keepdim=True)
    np.testing.assert_allclose(result.surgery.patch_scores, expected[1:].numpy(), atol=1e-5)
    raw = F.normalize(tokens.raw[0], dim=-1) @ text.T
    np.testing.assert_allclose(result.raw.patch_scores, raw[1:].numpy(), atol=1e-5)
    assert result.grid == (10, 14)


def test_single_label_uses_empty_string_redundancy(explainer, photo):
    result = explainer.explain(photo, "cat")
    assert result.redundancy == "empty" and result.labels == ("cat",)
    tokens = explainer.image_tokens(photo, 224, 6)
    r = explainer.empty_feature()
    expected = F.normalize(tokens.surgery[0, 1:], dim=-1) @ (explainer.label_features(["cat"])[0] - r)
    np.testing.assert_allclose(result.surgery.patch_scores[:, 0], expected.numpy(), atol=1e-5)


def test_methods_and_modes(explainer, photo):
    assert explainer.explain(photo, ["a", "b"], method="raw").surgery is None
    assert explainer.explain(photo, ["a", "b"], method="surgery").raw is None
    assert explainer.explain(photo, ["a", "b"], redundancy="none").redundancy == "none"
    with pytest.raises(ValueError, match="method must be one of"):
        explainer.explain(photo, ["a"], method="magic")
    with pytest.raises(ValueError, match="redundancy must be one of"):
        explainer.explain(photo, ["a"], redundancy="some")
    with pytest.raises(ValueError, match="depth"):
        explainer.explain(photo, ["a"], depth=7)
    with pytest.raises(ValueError, match="whole"):
        explainer.explain(photo, ["a"], size=230)


def test_one_forward_pass_and_image_cache(explainer, photo, monkeypatch):
    calls = []
    original = explainer_module.encode_image_tokens
    monkeypatch.setattr(explainer_module, "encode_image_tokens", lambda *a, **k: calls.append(1) or original(*a, **k))
    explainer.explain(photo, ["cat", "dog"], method="both")
    explainer.explain(photo, ["cat", "dog", "tree"], method="both")
    assert len(calls) == 1
    explainer.explain(photo, ["cat"], size=256)  # another size is another forward pass
    explainer.explain(photo.copy(), ["cat"], size=256)  # same content, new array: cached
    assert len(calls) == 2


def test_label_features_computed_once_and_stored_on_disk(vit, photo, tmp_path, monkeypatch):
    calls = []
    original = explainer_module.encode_texts
    monkeypatch.setattr(explainer_module, "encode_texts",
                        lambda m, t, labels, **k: calls.append(list(labels)) or original(m, t, labels, **k))
    first = Explainer(vit, cache_dir=tmp_path)
    first.explain(photo, ["cat", "dog"])
    first.explain(photo, ["dog", "cat", "tree"])
    first.explain(photo, ["tree"])  # needs "" once
    first.explain(photo, ["bird"])  # "" already known
    assert calls == [["cat", "dog"], ["tree"], [""], ["bird"]]
    stored = list((tmp_path / "label-features").rglob("*.npy"))
    assert len(stored) == 5
    second = Explainer(vit, cache_dir=tmp_path)
    again = second.explain(photo, ["cat", "dog"])
    assert len(calls) == 4  # read back from disk, not recomputed
    np.testing.assert_allclose(again.surgery.maps, first.explain(photo, ["cat", "dog"]).surgery.maps)
    # Another template set is another namespace.
    second.label_features(["cat"], templates=("a photo of a {}.",))
    assert calls[-1] == ["cat"]


def test_disk_cache_disabled_writes_nothing(vit, photo, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSURGERY_CACHE_DIR", str(tmp_path))
    Explainer(vit, cache_dir=False).explain(photo, ["cat"])
    assert not any(tmp_path.iterdir())
    Explainer(vit).explain(photo, ["cat"])  # default: the env-var dir
    assert any(tmp_path.rglob("*.npy"))


def test_damaged_cache_file_is_recomputed(vit, tmp_path):
    explainer = Explainer(vit, cache_dir=tmp_path)
    good = explainer.label_features(["cat"])
    for path in (tmp_path / "label-features").rglob("*.npy"):
        path.write_bytes(b"garbage")
    torch.testing.assert_close(Explainer(vit, cache_dir=tmp_path).label_features(["cat"]), good)


def test_combined_targets(explainer, photo):
    result = explainer.explain(photo, ["cat+dog", "sky"])
    assert result.labels == ("cat+dog", "sky")
    parts = explainer.label_features(["cat", "dog"])
    expected = F.normalize(parts.mean(0), dim=-1)
    torch.testing.assert_close(explainer.target_features(["cat+dog"])[0], expected)
    scores = explainer.target_part_scores(photo, "cat + dog")
    assert scores.shape == (196, 2) and scores.dtype == np.float32
    with pytest.raises(ValueError):
        explainer.explain(photo, ["cat+"])


def test_labels_input(explainer, photo):
    assert explainer.explain(photo, "cat, dog,, sky").labels == ("cat", "dog", "sky")
    assert explainer.explain(photo, ["", "café ☕", "日本"]).labels == ("", "café ☕", "日本")
    with pytest.raises(TextInputError, match="No labels"):
        explainer.explain(photo, [])
    with pytest.raises(TextInputError, match="strings"):
        explainer.explain(photo, ["cat", 3])


def test_thousand_labels(explainer, photo):
    labels = [f"thing number {i}" for i in range(1000)]
    result = explainer.explain(photo, labels, templates=None)
    assert result.surgery.maps.shape == (1000, 70, 110)
    assert np.isfinite(result.surgery.maps).all()


def test_bad_image_propagates_clear_error(explainer):
    with pytest.raises(ImageInputError, match="not found"):
        explainer.explain("no/such/file.png", ["cat"])


def test_resnet_model(photo):
    explainer = Explainer(load_model("tiny-random-resnet", device="cpu"), cache_dir=False)
    result = explainer.explain(photo, ["cat", "dog"], method="both")
    assert result.grid == (7, 7) and result.surgery.maps.shape == (2, 70, 110)


def test_concurrent_calls_agree(explainer, photo):
    expected = explainer.explain(photo, ["cat", "dog"]).surgery.maps
    explainer.clear_cache()
    results = []
    threads = [threading.Thread(target=lambda: results.append(explainer.explain(photo, ["cat", "dog"]).surgery.maps))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(np.allclose(r, expected, atol=1e-6) for r in results)


# --- dense methods through the explainer (docs/algorithms.md#dense-methods) -----------------------

def test_every_method_name_and_one_pass_for_several(explainer, photo, monkeypatch):
    from clipsurgery_widgets.engine import encode_dense

    calls = []
    original = explainer_module.encode_dense_many
    monkeypatch.setattr(explainer_module, "encode_dense_many", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    explainer.clear_cache()
    result = explainer.explain(photo, ["cat", "dog"], method="sclip", methods=["naclip", "gem", "raw", "maskclip"])
    assert len(calls) == 1 and {m for m, _ in calls[0]} == {"sclip", "naclip", "gem", "maskclip"}
    assert list(result.by_method) == ["sclip", "naclip", "gem", "raw", "maskclip"]
    assert result.method == "sclip" and result.mapset() is result.by_method["sclip"] and np.array_equal(result.maps, result.by_method["sclip"].maps)
    # each method's maps equal that method alone, computed here from encode_dense and cosines
    rgb = explainer.prepare_image(photo)
    pixels = preprocess(rgb, (224, 224), explainer.model.mean, explainer.model.std, explainer.model.patch_size)
    text = explainer.target_features(["cat", "dog"])
    for name in ("naclip", "gem"):
        tokens = torch.nn.functional.normalize(encode_dense(explainer.model, pixels, name).tokens[0], dim=-1)
        expected = tokens[1:] @ text.T
        assert np.allclose(result.by_method[name].patch_scores, expected.numpy(), atol=1e-5)
        alone = explainer.explain(photo, ["cat", "dog"], method=name)
        assert np.allclose(alone.maps, result.by_method[name].maps, atol=1e-6)
    assert len(calls) == 1  # the single-method calls above were served from the token cache


def test_surgery_alias_feature_surgery_flag_and_errors(explainer, photo, tiny_resnet):
    both = explainer.explain(photo, ["cat", "dog"], method="both")
    alias = explainer.explain(photo, ["cat", "dog"], method="clip_surgery")
    assert np.array_equal(both.by_method["clip_surgery"].maps, alias.maps) and both.surgery is not None
    assert alias.redundancy == "labels"  # feature surgery on for clip_surgery by default
    plain = explainer.explain(photo, ["cat", "dog"], method="sclip")
    assert plain.redundancy == "none"
    forced = explainer.explain(photo, ["cat", "dog"], method="sclip", feature_surgery=True)
    assert forced.redundancy == "labels" and not np.allclose(forced.maps, plain.maps)
    off = explainer.explain(photo, ["cat", "dog"], method="surgery", feature_surgery=False)
    assert off.redundancy == "none"
    with pytest.raises(ValueError, match="has no 'gem' maps"):
        plain.map_for("cat", "gem")
    with pytest.raises(ValueError, match="need a ViT"):
        Explainer(tiny_resnet, cache_dir=False).explain(photo, ["cat"], method="naclip")
    with pytest.raises(ValueError, match="gaussian_std"):
        explainer.explain(photo, ["cat"], method="naclip", method_params={"naclip": {"gaussian_std": -1}})
