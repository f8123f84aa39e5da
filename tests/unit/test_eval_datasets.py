"""Dataset readers on tiny datasets written in each real layout: order, label mappings, layout errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from eval_fixtures import write_dataset, write_mask
from PIL import Image

from clipsurgery_widgets.evaluation import DatasetLayoutError, MaskError, get_dataset


def stored(sample) -> np.ndarray:
    return np.array(Image.open(sample.mask)).astype(np.int64)


def shifted(raw: np.ndarray) -> np.ndarray:
    """label - 1 with 0 (and 255) ignored, written out directly."""
    out = raw - 1
    out[(raw == 0) | (raw == 255)] = 255
    return out


EXPECTED = {
    "voc21": lambda raw: raw, "context60": lambda raw: raw, "cityscapes": lambda raw: raw,
    "coco_stuff164k": lambda raw: raw, "generic": lambda raw: raw,
    "voc20": shifted, "context59": shifted, "ade20k": shifted,
}
NUM_CLASSES = {"voc21": 21, "voc20": 20, "context60": 60, "context59": 59, "coco_stuff164k": 171,
               "coco_object": 81, "cityscapes": 19, "ade20k": 150, "generic": 3}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_label_mapping_of_each_layout(tmp_path, name):
    dataset = get_dataset(name, write_dataset(name, tmp_path, n=3))
    dataset.check()
    samples = dataset.samples()
    assert len(samples) == 3 and len(dataset.classes) == NUM_CLASSES[name]
    for sample in samples:
        mask = dataset.load_mask(sample)
        assert mask.dtype == np.int64
        np.testing.assert_array_equal(mask, EXPECTED[name](stored(sample)))
        valid = mask[mask != 255]
        assert valid.min() >= 0 and valid.max() < len(dataset.classes)


def test_split_list_order_is_kept_and_roots_are_found(tmp_path):
    devkit = write_dataset("voc21", tmp_path, n=4)
    split = devkit / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    order = ["2007_000003", "2007_000000", "2007_000002", "2007_000001"]
    split.write_text("\n".join(order) + "\n\n")
    for root in (devkit, devkit / "VOC2012", tmp_path):  # VOCdevkit, VOC2012 itself, the folder above
        assert [s.id for s in get_dataset("voc21", root).samples()] == order


def test_listing_layouts_are_sorted_and_cityscapes_ids_name_the_city(tmp_path):
    samples = get_dataset("cityscapes", write_dataset("cityscapes", tmp_path, n=4)).samples()
    ids = [s.id for s in samples]
    assert ids == sorted(ids) and ids[0].startswith("frankfurt/") and not ids[0].endswith("_leftImg8bit")
    ade = get_dataset("ade20k", write_dataset("ade20k", tmp_path / "a", n=3).parent)  # parent folder works
    assert [s.id for s in ade.samples()] == ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"]


def test_generic_layout_reads_the_class_file_with_synonyms(tmp_path):
    dataset = get_dataset("generic", write_dataset("generic", tmp_path))
    assert dataset.classes == [["background"], ["cat"], ["dog", "puppy"]]


# --- COCO: the 182 COCO-Stuff ids -> 171 classes, and COCO-Object's derivation ---------------------

# 0-based COCO-Stuff ids with their class names (COCO's 1-based ids minus 1).
COCO_IDS = {0: "person", 2: "car", 12: "stop sign", 26: "backpack", 89: "toothbrush", 91: "banner", 181: "wood"}


def _raw_coco(tmp_path, name, values):
    root = write_dataset(name, tmp_path, n=1, kind="raw")
    dataset = get_dataset(name, root)
    sample = dataset.samples()[0]
    write_mask(sample.mask, np.array([values]))
    return dataset, dataset.load_mask(sample)[0]


def test_coco_stuff_raw_ids_map_to_the_171_classes_by_name(tmp_path):
    ids = list(COCO_IDS) + [11, 255]  # 11 (street sign) is one of COCO's unused ids
    dataset, mapped = _raw_coco(tmp_path, "coco_stuff164k", ids)
    names = [dataset.classes[int(c)][0] for c in mapped[: len(COCO_IDS)]]
    assert [n.replace(" ", "") for n in names] == [n.replace(" ", "") for n in COCO_IDS.values()]
    assert mapped[-2:].tolist() == [255, 255]


def test_coco_object_from_raw_ids_things_1_to_80_and_no_ignore(tmp_path):
    dataset, mapped = _raw_coco(tmp_path, "coco_object", [0, 89, 91, 181, 255])
    assert mapped.tolist() == [1, 80, 0, 0, 0]
    assert "person" in dataset.classes[1] and dataset.classes[80] == ["toothbrush"]


def test_coco_object_from_train_ids_and_from_converted_masks(tmp_path):
    root = write_dataset("coco_object", tmp_path / "t", n=1)  # *_labelTrainIds.png
    dataset = get_dataset("coco_object", root)
    sample = dataset.samples()[0]
    write_mask(sample.mask, np.array([[0, 79, 80, 170, 255]]))
    assert dataset.load_mask(sample)[0].tolist() == [1, 80, 0, 0, 0]
    converted = get_dataset("coco_object", write_dataset("coco_object", tmp_path / "c", n=2, kind="instanceTrainIds"))
    mask = converted.load_mask(converted.samples()[0])
    np.testing.assert_array_equal(mask, stored(converted.samples()[0]))


# --- layout errors: one line, dataset, folder expected, what is missing ------------------------------

def _layout_error(name, root) -> str:
    with pytest.raises(DatasetLayoutError) as info:
        get_dataset(name, root).check()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{name}:")
    return message


def test_missing_split_list(tmp_path):
    devkit = write_dataset("voc21", tmp_path)
    (devkit / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    message = _layout_error("voc21", devkit)
    assert "ImageSets/Segmentation/val.txt" in message and "found 0 split files" in message


def test_missing_listed_images_name_the_first_and_the_count(tmp_path):
    devkit = write_dataset("voc20", tmp_path, n=4)
    for stem in ("2007_000001", "2007_000003"):
        (devkit / "VOC2012" / "JPEGImages" / f"{stem}.jpg").unlink()
    message = _layout_error("voc20", devkit)
    assert "2 of 4 images" in message and "first missing: 2007_000001.jpg" in message and "found 2" in message


@pytest.mark.parametrize("name, folder", [("context59", "VOC2010/SegmentationClassContext"),
                                          ("ade20k", "annotations/validation"),
                                          ("cityscapes", "gtFine/val"),
                                          ("coco_stuff164k", "annotations/val2017")])
def test_missing_mask_folder(tmp_path, name, folder):
    root = write_dataset(name, tmp_path)
    shutil.rmtree(root / folder)
    assert "missing mask folder" in _layout_error(name, root)


def test_wrong_or_empty_folders(tmp_path):
    assert "does not exist" in _layout_error("voc21", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    message = _layout_error("context60", tmp_path / "empty")
    assert "VOCdevkit/VOC2010" in message and "JPEGImages" in message
    assert "classes.txt" in _layout_error("generic", tmp_path / "empty")


def test_cityscapes_label_ids_without_train_ids_get_the_conversion_hint(tmp_path):
    root = write_dataset("cityscapes", tmp_path)
    for mask in (root / "gtFine" / "val").glob("*/*_labelTrainIds.png"):
        mask.rename(mask.with_name(mask.name.replace("labelTrainIds", "labelIds")))
    assert "createTrainIdLabelImgs" in _layout_error("cityscapes", root)


def test_unknown_dataset_name_suggests_one(tmp_path):
    with pytest.raises(ValueError, match="voc21"):
        get_dataset("voc2l", tmp_path)


# --- per-mask problems are MaskErrors (the task reports and skips them) -----------------------------

def test_bad_masks_raise_mask_errors(tmp_path):
    dataset = get_dataset("voc21", write_dataset("voc21", tmp_path, n=4))
    first, second, third, fourth = dataset.samples()
    write_mask(first.mask, np.array([[0, 30, 21, 255]]))
    with pytest.raises(MaskError, match="outside the class list: 21, 30"):
        dataset.load_mask(first)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(second.mask)
    with pytest.raises(MaskError, match="RGB image, not an index image"):
        dataset.load_mask(second)
    third.mask.write_bytes(b"not a png")
    with pytest.raises(MaskError, match="unreadable mask"):
        dataset.load_mask(third)
    fourth.mask.unlink()
    fresh = get_dataset("voc21", dataset.given_root)
    assert fresh.samples()[3].mask is None
    with pytest.raises(MaskError, match="no mask"):
        fresh.load_mask(fresh.samples()[3])
