"""Segmentation metrics (against torchmetrics) and the seg task (against segment() image by image)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_fixtures import FAST_TEMPLATES, write_dataset, write_mask
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from clipsurgery_widgets.engine.images import load_image
from clipsurgery_widgets.engine.segmentation import class_features, segment
from clipsurgery_widgets.engine.segmentation.protocols import protocol_settings
from clipsurgery_widgets.evaluation import evaluate, get_dataset, make_task
from clipsurgery_widgets.evaluation.metrics import (
    confusion_entries,
    confusion_matrix,
    dense_confusion,
    segmentation_scores,
)
from clipsurgery_widgets.evaluation.tasks import seg as seg_module

FAST = {"templates": FAST_TEMPLATES, "short_side": 48, "crop": 32, "stride": 16}


# --- metrics -------------------------------------------------------------------------------------

def _random_pair(seed, classes=7, size=(40, 50)):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes - 2, size)  # the last two classes never appear in the ground truth
    target[rng.random(size) < 0.1] = 255
    prediction = rng.integers(0, classes - 1, size)  # the last class is never predicted either
    return target, prediction


def test_per_class_iou_and_pixel_accuracy_match_torchmetrics():
    classes = 7
    pairs = [_random_pair(seed) for seed in range(3)]
    jaccard = MulticlassJaccardIndex(num_classes=classes, ignore_index=255, average=None)
    accuracy = MulticlassAccuracy(num_classes=classes, ignore_index=255, average="micro")
    for target, prediction in pairs:
        jaccard.update(torch.from_numpy(prediction), torch.from_numpy(target))
        accuracy.update(torch.from_numpy(prediction), torch.from_numpy(target))
    entries = [confusion_entries(t, p, classes) for t, p in pairs]
    scores = segmentation_scores(dense_confusion(entries, classes))
    reference = jaccard.compute().numpy()
    ours = scores["per_class_iou"]
    assert ours[-1] is None  # in neither ground truth nor prediction: null, not 0
    np.testing.assert_allclose([v for v in ours[:-1]], reference[:-1], rtol=1e-6)
    assert scores["miou"] == pytest.approx(float(np.mean(reference[:-1])), rel=1e-6)
    assert scores["pixel_accuracy"] == pytest.approx(float(accuracy.compute()), rel=1e-6)


def test_confusion_matrix_by_hand():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    prediction = np.array([[0, 1, 1], [1, 0, 2]])
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix(target, prediction, 3), expected)
    scores = segmentation_scores(expected)
    assert scores["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5) and scores["pixels"] == 5


def test_confusion_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


# --- the seg task equals segment() image by image ---------------------------------------------------

def _by_hand(model, dataset, method, settings):
    """One confusion matrix from segment() on each image, accumulated with plain numpy."""
    classes = len(dataset.classes)
    total = np.zeros((classes, classes), np.int64)
    features = class_features(model, dataset.classes, templates=settings.pop("templates"))
    for sample in dataset.samples():
        target = dataset.load_mask(sample)
        labels = segment(model, load_image(sample.image), dataset.classes, method=method, text_features=features,
                         **settings).labels.numpy()
        keep = target != 255
        np.add.at(total, (target[keep], labels[keep]), 1)
    return total


@pytest.mark.parametrize("name", ["voc21", "context59"])
def test_seg_numbers_equal_segment_per_image_with_one_confusion_matrix(tmp_path, tiny_vit, name):
    root = write_dataset(name, tmp_path, n=3)
    result = evaluate("seg", name, root, methods="raw,sclip", model=tiny_vit, progress=False, **FAST)
    dataset = get_dataset(name, root)
    for method in ("raw", "sclip"):
        settings = dict(protocol_settings(name, "sclip"), short_side=48, crop=32, stride=16)
        confusion = _by_hand(tiny_vit, dataset, method, {**settings, "templates": FAST_TEMPLATES})
        expected = segmentation_scores(confusion)
        numbers = result.methods[method]
        assert numbers["settings"] == settings
        assert numbers["per_class_iou"] == expected["per_class_iou"]
        assert numbers["miou"] == expected["miou"] and numbers["pixel_accuracy"] == expected["pixel_accuracy"]
        assert numbers["images"] == 3 and np.array_equal(numbers["confusion"], confusion)


def test_defaults_are_each_methods_published_settings_and_overrides_apply_to_all(tmp_path):
    root = write_dataset("voc21", tmp_path, n=1)
    task = make_task("seg", dataset="voc21", root=root, methods="sclip,naclip,raw")
    assert task.method_settings["sclip"] == dict(protocol_settings("voc21", "sclip"))
    assert task.method_settings["naclip"] == dict(protocol_settings("voc21", "naclip"))
    assert task.method_settings["raw"] == dict(protocol_settings("voc21", "sclip"))
    changed = make_task("seg", dataset="voc21", root=root, methods="sclip,naclip", area_thd=None, pamr=3,
                        logit_scale=50.0, prob_thd=0.2, short_side=224, crop=0)
    for method in ("sclip", "naclip"):
        values = changed.method_settings[method]
        assert values["area_thd"] is None and values["pamr_steps"] == 3 and values["logit_scale"] == 50.0
        assert values["prob_thd"] == 0.2 and values["short_side"] == 224
        assert values["crop"] == 0 and values["stride"] is None


def test_bad_settings_and_methods_fail_before_any_model(tmp_path):
    root = write_dataset("voc21", tmp_path, n=1)
    with pytest.raises(ValueError, match="prob_thd"):
        make_task("seg", dataset="voc21", root=root, prob_thd=3)
    with pytest.raises(ValueError, match="Unknown method 'sclp'"):
        make_task("seg", dataset="voc21", root=root, methods="raw,sclp")
    with pytest.raises(ValueError, match="Unknown segmentation setting 'crops'"):
        make_task("seg", dataset="voc21", root=root, crops=3)


def test_class_features_are_computed_once_for_all_methods_and_images(tmp_path, tiny_vit, monkeypatch):
    calls = []
    original = seg_module.class_features

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(seg_module, "class_features", counting)
    root = write_dataset("generic", tmp_path, n=3)
    evaluate("seg", "generic", root, methods="raw,sclip,naclip", model=tiny_vit, progress=False,
             **FAST, pamr=0)
    assert len(calls) == 1


def test_bad_items_are_reported_skipped_and_not_counted(tmp_path, tiny_vit):
    root = write_dataset("voc21", tmp_path, n=5)
    dataset = get_dataset("voc21", root)
    samples = dataset.samples()
    write_mask(samples[0].mask, np.full((64, 80), 40))  # labels outside the class list
    samples[1].mask.unlink()  # no mask
    samples[2].image.write_bytes(b"broken jpeg")  # unreadable image
    with pytest.warns(UserWarning, match="3 of 5 items were skipped"):
        result = evaluate("seg", "voc21", root, methods="raw", model=tiny_vit, out=tmp_path / "out",
                          progress=False, **FAST)
    reasons = {s["id"]: s["reason"] for s in result.skipped}
    assert set(reasons) == {s.id for s in samples[:3]}
    assert "outside the class list: 40" in reasons[samples[0].id] and "no mask" in reasons[samples[1].id]
    assert "unreadable image" in reasons[samples[2].id]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["items"] == {"total": 5, "evaluated": 2, "skipped": 3} and saved["methods"]["raw"]["images"] == 2
    kept = get_dataset("voc21", root)
    kept._samples = kept.samples()[3:]
    confusion = _by_hand(tiny_vit, kept, "raw", {**dict(protocol_settings("voc21", "sclip"), short_side=48, crop=32,
                                                         stride=16), "templates": FAST_TEMPLATES})
    assert result.methods["raw"]["miou"] == segmentation_scores(confusion)["miou"]


@pytest.mark.parametrize("name", ["voc20", "context60", "coco_stuff164k", "coco_object", "cityscapes", "ade20k"])
def test_every_layout_runs_end_to_end(tmp_path, tiny_vit, name):
    root = write_dataset(name, tmp_path, n=2)
    result = evaluate("seg", name, root, methods="raw", model=tiny_vit, limit=1, progress=False,
                      templates=FAST_TEMPLATES, short_side=32, crop=0)
    numbers = result.methods["raw"]
    assert result.evaluated == 1 and len(numbers["per_class_iou"]) == len(get_dataset(name, root).classes)
    assert 0 <= numbers["miou"] <= 1 and 0 <= numbers["pixel_accuracy"] <= 1
    assert sum(map(sum, numbers["confusion"])) == numbers["pixels"] > 0
