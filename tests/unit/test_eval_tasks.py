"""The explainability, multi-label, ImageNet-segmentation and ablation tasks on written-out tiny data,
each checked against a direct computation with the engine and torchmetrics (not the task's code)."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import FAST_TEMPLATES, random_rgb, write_dataset, write_rgb
from PIL import Image
from torchmetrics.classification import (
    BinaryAveragePrecision,
    MultilabelAveragePrecision,
)

from clipsurgery_widgets.engine.decomposition import (
    Ablation,
    DecompositionSession,
    folder_ablation,
)
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import load_image, preprocess
from clipsurgery_widgets.evaluation import DatasetLayoutError, evaluate, get_dataset
from clipsurgery_widgets.evaluation.explain_metrics import THRESHOLDS
from clipsurgery_widgets.evaluation.tasks import make_task
from clipsurgery_widgets.evaluation.tasks.imagenet_seg import ImageNetSegFile
from clipsurgery_widgets.evaluation.tasks.multilabel import (
    VOC_FILE_NAMES,
    read_coco_labels,
    read_voc_labels,
)


def _run(task, **kwargs):
    return evaluate(task, progress=False, **kwargs)


# --- explainability ---------------------------------------------------------------------------

def test_explain_task_matches_a_direct_computation(tiny_vit, tmp_path):
    root = write_dataset("generic", tmp_path, n=3)  # classes: background, cat, "dog, puppy"
    methods = ["clip_surgery", "raw"]
    result = _run("explain", dataset="generic", root=root, methods=methods, model=tiny_vit, templates=FAST_TEMPLATES)

    explainer, dataset = Explainer(tiny_vit, cache_dir=False), get_dataset("generic", root)
    names = ["background", "cat", "dog"]
    ious, contrasts = {m: [] for m in methods}, {m: [] for m in methods}
    for sample in dataset.samples():
        mask, rgb = dataset.load_mask(sample), load_image(sample.image)
        explanation = explainer.explain(rgb, names, method="clip_surgery", methods=methods, templates=FAST_TEMPLATES)
        valid = mask != 255
        for method in methods:
            maps = explanation.mapset(method).maps.astype(np.float64)
            for c in (1, 2):  # "background" gives no pair
                if not (mask == c).any():
                    continue
                gt, values = (mask == c)[valid], maps[c][valid]
                ious[method].append([np.sum((values >= t) & gt) / np.sum((values >= t) | gt) for t in THRESHOLDS])
                contrasts[method].append(values[gt].mean() - values[~gt].mean())
    for method in methods:
        by_threshold = np.mean(ious[method], axis=0)
        numbers = result.methods[method]
        assert numbers["pairs"] == len(ious[method]) > 0
        assert numbers["miou"] == pytest.approx(by_threshold.max())
        assert numbers["threshold"] == THRESHOLDS[int(np.argmax(by_threshold))]
        assert numbers["msc"] == pytest.approx(np.mean(contrasts[method]))
        assert numbers["per_class_iou"][0] is None and numbers["per_class_iou"][1] is not None
    # Feature surgery is clip_surgery's default and off for raw: the two rows differ.
    assert result.methods["clip_surgery"]["msc"] != result.methods["raw"]["msc"]
    assert set(result.item_scores("raw")) == {s.id for s in dataset.samples()}


def test_explain_task_can_count_background_and_refuses_foreign_settings(tmp_path):
    root = write_dataset("generic", tmp_path, n=1)
    task = make_task("explain", dataset="generic", root=root, methods="surgery", skip_background=False)
    assert task.methods == ["clip_surgery"]
    assert 0 in task.scored_classes(np.array([[0, 1], [255, 1]]))
    with pytest.raises(ValueError, match="short_side"):
        make_task("explain", dataset="generic", root=root, short_side=448)


# --- multi-label ------------------------------------------------------------------------------

def _write_csv_set(folder, targets, labels):
    rng = np.random.default_rng(0)
    lines = ["image," + ",".join(labels)]
    for i, row in enumerate(targets):
        write_rgb(folder / "photos" / f"p{i}.jpg", random_rgb((48, 64), rng))
        lines.append(f"photos/p{i}.jpg," + ",".join(str(v) for v in row))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def test_multilabel_csv_map_with_and_without_feature_surgery(tiny_vit, tmp_path):
    labels = ["cat", "dog", "car", "tree"]
    targets = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])  # "tree": no positive
    csv_path = _write_csv_set(tmp_path, targets, labels)
    result = _run("multilabel", dataset="csv", root=tmp_path, methods=None, model=tiny_vit, templates=FAST_TEMPLATES)
    assert list(result.methods) == ["cosine", "feature_surgery"]

    explainer = Explainer(tiny_vit, cache_dir=False)
    features = explainer.label_features(labels, FAST_TEMPLATES)
    cosine = []
    for i in range(len(targets)):
        rgb = load_image(csv_path.parent / "photos" / f"p{i}.jpg")
        pixels = preprocess(rgb, tiny_vit.image_size, tiny_vit.mean, tiny_vit.std, tiny_vit.patch_size)
        with torch.no_grad():
            cosine.append((F.normalize(tiny_vit.model.encode_image(pixels).float(), dim=-1) @ features.T)[0])
    cosine = torch.stack(cosine).double()
    weights = len(labels) * torch.softmax(2 * cosine, dim=-1)  # feature surgery on token 0, by its formula
    surgery = weights * cosine - (weights * cosine).mean(-1, keepdim=True)
    metric = MultilabelAveragePrecision(num_labels=4, average=None, thresholds=None)
    for name, scores in (("cosine", cosine), ("feature_surgery", surgery)):
        with pytest.warns(UserWarning):  # torchmetrics warns about "tree"
            expected = metric(scores, torch.tensor(targets)).numpy()[:3]
        assert result.methods[name]["map"] == pytest.approx(expected.mean(), rel=1e-5)
        assert result.methods[name]["per_label_ap"]["tree"] is None
        assert result.methods[name]["images"] == 5


def test_multilabel_csv_errors(tmp_path):
    csv_path = _write_csv_set(tmp_path, [[1, 0], [0, 1]], ["cat", "dog"])
    csv_path.write_text(csv_path.read_text().replace("p1.jpg,0,1", "p1.jpg,0,2"))
    with pytest.raises(DatasetLayoutError, match="line 3"):
        make_task("multilabel", dataset="csv", root=csv_path).check()
    with pytest.raises(ValueError, match="global token"):
        make_task("multilabel", dataset="csv", root=csv_path, methods="raw")
    with pytest.raises(ValueError, match="global token"):  # a dense method given on purpose is an error
        make_task("multilabel", dataset="csv", root=csv_path, methods=("sclip",))
    assert make_task("multilabel", dataset="csv", root=csv_path).methods == ["cosine", "feature_surgery"]
    (tmp_path / "photos" / "p0.jpg").unlink()
    csv_path.write_text("image,cat,dog\nphotos/p0.jpg,1,0\nphotos/p1.jpg,0,1\n")
    with pytest.raises(DatasetLayoutError, match="1 of 2 .*first missing: .*p0.jpg; found 1"):
        _run("multilabel", dataset="csv", root=csv_path, model="no-such-model")  # before any model loads


def test_voc_labels_from_image_sets_main(tmp_path):
    folder = tmp_path / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    for i in ("a", "b"):
        write_rgb(folder / "JPEGImages" / f"{i}.jpg", random_rgb((32, 32), rng))
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    marks = {"aeroplane": {"a": 1, "b": -1}, "dog": {"a": -1, "b": 0}, "person": {"a": 1, "b": 1}}
    for name in VOC_FILE_NAMES:
        rows = marks.get(name, {"a": -1, "b": -1})
        (folder / "ImageSets" / "Main" / f"{name}_val.txt").write_text("".join(f"{k} {v:2d}\n" for k, v in rows.items()))
    names, table = read_voc_labels(tmp_path / "VOCdevkit")
    assert len(names) == 20 and names[0] == "aeroplane" and names[14] == "person"
    assert np.flatnonzero(table["a"][1] == 1).tolist() == [0, 14]
    assert table["b"][1][11] == -1 and np.flatnonzero(table["b"][1] == 1).tolist() == [14]  # dog "difficult"


def test_voc_labels_from_segmentation_masks(tmp_path):
    root = write_dataset("voc21", tmp_path, n=2)
    names, table = read_voc_labels(root)
    seg = get_dataset("voc20", root)
    for sample in seg.samples():
        present = sorted(int(c) for c in np.unique(seg.load_mask(sample)) if c != 255)
        assert np.flatnonzero(table[sample.id][1]).tolist() == present


def test_coco_labels_from_instances(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        write_rgb(tmp_path / "val2017" / name, random_rgb((32, 32), rng))
    data = {"categories": [{"id": 7, "name": "train"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
            "images": [{"id": 10, "file_name": "1.jpg"}, {"id": 11, "file_name": "2.jpg"}, {"id": 12, "file_name": "3.jpg"}],
            "annotations": [{"image_id": 10, "category_id": 7}, {"image_id": 10, "category_id": 1},
                            {"image_id": 11, "category_id": 3}, {"image_id": 11, "category_id": 3}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    names, table = read_coco_labels(tmp_path)
    assert names == ["person", "car", "train"]  # category id order
    assert list(table) == ["1.jpg", "2.jpg"]  # 3.jpg has no annotation
    assert table["1.jpg"][1].tolist() == [1, 0, 1] and table["2.jpg"][1].tolist() == [0, 1, 0]


# --- ImageNet-segmentation --------------------------------------------------------------------

def write_gtsegs(path, images, masks):
    """A tiny file laid out like gtsegs_ijcv.mat (MATLAB v7.3): references and references to references."""
    with h5py.File(path, "w") as f:
        store = f.create_group("#refs#")
        image_refs, mask_refs = [], []
        for i, (rgb, mask) in enumerate(zip(images, masks)):
            image_refs.append(store.create_dataset(f"img{i}", data=rgb.T).ref)  # MATLAB's column-major order
            mask_data = store.create_dataset(f"gt{i}", data=mask.astype(np.uint8).T)
            mask_refs.append(store.create_dataset(f"cell{i}", data=np.array([[mask_data.ref]], dtype=h5py.ref_dtype)).ref)
        f.create_dataset("value/img", data=np.array(image_refs, dtype=h5py.ref_dtype).reshape(-1, 1))
        f.create_dataset("value/gt", data=np.array(mask_refs, dtype=h5py.ref_dtype).reshape(-1, 1))
    return path


def _gtsegs(tmp_path):
    rng = np.random.default_rng(0)
    images = [random_rgb((48, 64), rng), random_rgb((40, 56), rng)]  # not square: a wrong transpose shows
    masks = []
    for rgb in images:
        mask = np.zeros(rgb.shape[:2], bool)
        mask[8:30, 10:40] = True
        masks.append(mask)
    return write_gtsegs(tmp_path / "gtsegs_ijcv.mat", images, masks), images, masks


def test_imagenet_seg_file_reader(tmp_path):
    path, images, masks = _gtsegs(tmp_path)
    reader = ImageNetSegFile(tmp_path)  # the folder holding the file works too
    assert reader.check() == 2
    for i in range(2):
        np.testing.assert_array_equal(reader.image(i), images[i])
        np.testing.assert_array_equal(reader.mask(i), masks[i])
    with pytest.raises(DatasetLayoutError, match="missing file"):
        _run("imagenet_seg", root=tmp_path / "elsewhere.mat", model="no-such-model")


def test_imagenet_seg_metrics_match_a_direct_computation(tiny_vit, tmp_path):
    path, images, masks = _gtsegs(tmp_path)
    labels = ["cat", "dog", "car"]
    result = _run("imagenet_seg", root=path, methods="decomposition,clip_surgery", labels=labels, model=tiny_vit,
                  at_original_size=True)
    explainer = Explainer(tiny_vit, cache_dir=False)
    session = DecompositionSession(explainer, images, cache_dir=False)
    counts = {m: np.zeros((2, 2)) for m in ("decomposition", "clip_surgery")}
    aps = {m: [] for m in counts}
    for i, (rgb, mask) in enumerate(zip(images, masks)):
        explanation = explainer.explain(rgb, labels, method="clip_surgery")
        label = int(np.argmax(explanation.probs))
        maps = {"clip_surgery": explanation.maps[label], "decomposition": session.maps(i, labels, size=mask.shape)[label]}
        for method, score_map in maps.items():
            predicted = score_map > score_map.mean()
            for gt in (0, 1):
                for pred in (0, 1):
                    counts[method][gt, pred] += np.sum((mask == gt) & (predicted == pred))
            aps[method].append(float(BinaryAveragePrecision()(torch.tensor(score_map.ravel()),
                                                              torch.tensor(mask.ravel().astype(int)))))
    for method, c in counts.items():
        numbers = result.methods[method]
        iou = [c[k, k] / (c[k].sum() + c[:, k].sum() - c[k, k]) for k in (0, 1)]
        assert numbers["pixel_accuracy"] == pytest.approx(np.trace(c) / c.sum())
        assert numbers["miou"] == pytest.approx(np.mean(iou))
        assert numbers["map"] == pytest.approx(np.mean(aps[method]), rel=1e-5)
    assert result.extras["class_names"] == ["background", "foreground"]


def test_imagenet_seg_defaults_and_checks(tmp_path):
    path, _, _ = _gtsegs(tmp_path)
    task = make_task("imagenet_seg", root=path)
    assert task.methods == ["decomposition", "clip_surgery"] and len(task.labels) == 1000
    assert task.items() == ["0", "1"]
    with pytest.raises(ValueError, match="at least 2"):
        make_task("imagenet_seg", root=path, labels=["cat"])


# --- mean ablation ----------------------------------------------------------------------------

def test_ablation_task_matches_folder_ablation(tiny_vit, tmp_path):
    rng = np.random.default_rng(2)
    for name in ("cat", "dog", "golden_retriever"):
        for i in range(3):
            write_rgb(tmp_path / name / f"{i}.png", random_rgb((32, 48), rng))
    names = ["none", "mlps", "attention_last4", "head:5.1", "all_but_last4"]
    result = _run("ablation", root=tmp_path, methods=names, model=tiny_vit, templates=FAST_TEMPLATES, cache_dir=False)
    ablations = [Ablation(), Ablation(mlps=range(6)), Ablation(attn_layers={2, 3, 4, 5}), Ablation(heads={(5, 1)}),
                 Ablation(attn_layers={0, 1}, mlps=range(6), embedding=True)]
    expected = folder_ablation(Explainer(tiny_vit, cache_dir=False), tmp_path, ablations, templates=FAST_TEMPLATES,
                               cache_dir=False, progress=False)
    for name, reference in zip(names, expected):
        numbers = result.methods[name]
        assert numbers["accuracy"] == pytest.approx(reference.accuracy_after)
        assert numbers["accuracy_before"] == pytest.approx(reference.accuracy_before)
        assert numbers["changed"] == int((reference.predictions_after != reference.predictions_before).sum())
        assert numbers["images"] == 9
    assert result.extras["class_names"] == ["cat", "dog", "golden retriever"]


def test_ablation_task_checks(tmp_path, tiny_resnet):
    with pytest.raises(ValueError, match="Unknown ablation"):
        make_task("ablation", root=tmp_path, methods="naclip")
    with pytest.raises(DatasetLayoutError, match="folder"):
        make_task("ablation", root=tmp_path).check()  # no class folders
    for name in ("a", "b"):
        write_rgb(tmp_path / name / "0.png", random_rgb((32, 32), np.random.default_rng(0)))
    task = make_task("ablation", root=tmp_path)
    with pytest.raises(ValueError, match="vision transformer"):
        task.prepare(tiny_resnet)
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "1.png")
    assert len(make_task("ablation", root=tmp_path, max_per_class=1).items()) == 2


# --- figures ------------------------------------------------------------------------------------

def test_evaluation_figures_draw_what_they_are_given():
    from clipsurgery_widgets.figures.evaluation import (
        best_worst_figure,
        per_class_iou_figure,
        present_classes,
    )

    fig = per_class_iou_figure(["bg", "cat", "dog"], {"raw": [0.5, None, 0.25], "sclip": [0.75, 0.1, None]})
    ax = fig.axes[0]
    assert sorted(round(p.get_width(), 6) for p in ax.patches) == [0, 0, 10, 25, 50, 75]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["bg", "cat", "dog"]
    many = per_class_iou_figure([f"c{i}" for i in range(50)], {"raw": [i / 50 for i in range(50)]}, max_classes=5)
    assert [t.get_text() for t in many.axes[0].get_yticklabels()] == ["c45", "c46", "c47", "c48", "c49"]
    with pytest.raises(ValueError, match="class names"):
        per_class_iou_figure(["a"], {"raw": [0.1, 0.2]})

    truth = np.array([[0, 1, 1], [255, 2, 2]])
    assert present_classes(truth) == [1, 2, 0]
    row = {"rgb": np.zeros((2, 3, 3), np.uint8), "truth": truth, "prediction": np.zeros((2, 3), int),
           "map": np.random.default_rng(0).random((2, 3)), "map_label": "cat", "title": "best 1"}
    grid = best_worst_figure([row, dict(row, map=None)], ["bg", "cat", "dog"])
    assert len(grid.axes) == 8 and grid.axes[0].get_title() == "best 1" and grid.axes[3].get_title() == "map: cat"
    with pytest.raises(ValueError, match="No images"):
        best_worst_figure([], ["bg"])
