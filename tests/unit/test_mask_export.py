"""Mask and prompt exports round-trip: PNG, .npy, COCO RLE, polygons, JSON prompts."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk

from clipsurgery_widgets.engine.sam.export import (
    as_mask,
    load_mask,
    load_prompts,
    mask_from_png,
    mask_to_png_bytes,
    mask_to_polygons,
    mask_to_rle,
    polygons_to_coco,
    polygons_to_mask,
    prompts_from_dict,
    prompts_to_dict,
    result_to_dict,
    rle_to_mask,
    save_mask,
    save_prompts,
)


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def blob(shape=(90, 120), centre=(40, 55), radius=25):
    mask = np.zeros(shape, dtype=bool)
    mask[disk(centre, radius, shape=shape)] = True
    return mask


def ring(shape=(90, 120)):
    return blob(shape, radius=30) & ~blob(shape, radius=12)


def random_mask(seed=0, shape=(37, 53)):
    return np.random.default_rng(seed).random(shape) > 0.6


def reference_uncompressed_rle(mask):
    """COCO's uncompressed RLE written out: run lengths in column-major order, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


@pytest.mark.parametrize("mask", [blob(), ring(), random_mask(), np.zeros((5, 7), bool), np.ones((5, 7), bool)],
                         ids=["blob", "ring", "random", "empty", "full"])
def test_rle_round_trip(mask):
    from pycocotools import mask as coco_mask

    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == list(mask.shape)
    decoded = rle_to_mask(json.loads(json.dumps(rle)))
    assert decoded.dtype == bool
    np.testing.assert_array_equal(decoded, mask)
    assert coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()}) == mask.sum()
    # an independently built uncompressed RLE of the same mask decodes to it as well
    np.testing.assert_array_equal(rle_to_mask(reference_uncompressed_rle(mask)), mask)


def test_rle_accepts_bytes_counts_and_rejects_junk():
    mask = random_mask(1)
    rle = mask_to_rle(mask)
    np.testing.assert_array_equal(rle_to_mask({"size": rle["size"], "counts": rle["counts"].encode()}), mask)
    with pytest.raises(ValueError, match="'size'"):
        rle_to_mask({"counts": "abc"})


@pytest.mark.parametrize("mask", [blob(), ring(), blob(centre=(5, 5), radius=20)], ids=["blob", "ring", "corner"])
def test_polygons_rasterise_back(mask):
    polygons = mask_to_polygons(mask)
    assert all(p.ndim == 2 and p.shape[1] == 2 for p in polygons)
    back = polygons_to_mask(polygons, mask.shape)
    assert iou(back, mask) > 0.9
    simplified = mask_to_polygons(mask, tolerance=1.0)
    assert sum(len(p) for p in simplified) < sum(len(p) for p in polygons)
    assert iou(polygons_to_mask(simplified, mask.shape), mask) > 0.9
    coco = polygons_to_coco(polygons)
    assert all(len(p) % 2 == 0 for p in coco)
    assert iou(polygons_to_mask(coco, mask.shape), mask) > 0.9


def test_polygons_keep_holes_and_use_xy_order():
    mask = ring()
    back = polygons_to_mask(mask_to_polygons(mask), mask.shape)
    assert not back[40, 55]  # the hole's centre stays empty
    wide = np.zeros((20, 60), bool)
    wide[5:8, 10:50] = True  # 40 wide, 3 tall
    (poly,) = mask_to_polygons(wide)
    assert np.ptp(poly[:, 0]) > np.ptp(poly[:, 1])  # x spans the width


def test_png_round_trip(tmp_path):
    mask = ring()
    data = mask_to_png_bytes(mask)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "L" and img.size == (mask.shape[1], mask.shape[0])
        assert set(np.unique(np.asarray(img))) == {0, 255}
    np.testing.assert_array_equal(mask_from_png(data), mask)
    for suffix in (".png", ".npy", ".json"):
        path = save_mask(mask, tmp_path / f"m{suffix}")
        loaded = load_mask(path)
        assert loaded.dtype == bool
        np.testing.assert_array_equal(loaded, mask)
    with pytest.raises(ValueError, match=".png, .npy or .json"):
        save_mask(mask, tmp_path / "m.tiff")


def test_as_mask_conventions():
    np.testing.assert_array_equal(as_mask(np.array([[0, 255], [128, 3]], np.uint8)), [[False, True], [True, False]])
    np.testing.assert_array_equal(as_mask(np.array([[0, 1]], np.uint8)), [[False, True]])
    with pytest.raises(ValueError, match="2-D"):
        as_mask(np.zeros((3, 4, 5)))


def test_prompts_round_trip(tmp_path):
    points = np.array([[10, 20], [30, 40]])
    labels = np.array([1, 0], np.uint8)
    box = np.array([1.5, 2, 30, 40])
    data = json.loads(json.dumps(prompts_to_dict(points, labels, box, (100, 120))))
    assert data["image_size"] == [100, 120]
    p, l, b = prompts_from_dict(data)
    np.testing.assert_array_equal(p, points)
    np.testing.assert_array_equal(l, labels)
    np.testing.assert_allclose(b, box)
    assert p.dtype == np.int64 and l.dtype == np.uint8
    p, l, b = load_prompts(save_prompts(tmp_path / "prompts.json", points, labels))
    np.testing.assert_array_equal(p, points)
    assert b is None
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        prompts_to_dict(points, [1])


def test_result_to_dict_from_a_real_result():
    from clipsurgery_widgets.engine.sam.refiner import SamRefiner, build_tiny_sam

    refiner = SamRefiner(build_tiny_sam())
    refiner.set_image(np.full((40, 50, 3), 120, np.uint8))
    result = refiner.predict(points=[[10, 12]], box=[2, 3, 30, 35])
    data = json.loads(json.dumps(result_to_dict(result, all_masks=True)))
    np.testing.assert_array_equal(rle_to_mask(data["mask"]), result.mask)
    assert data["best"] == result.best and data["score"] == pytest.approx(result.score)
    assert len(data["masks"]) == len(result.masks)
    p, l, b = prompts_from_dict(data)
    np.testing.assert_array_equal(p, [[10, 12]])
    np.testing.assert_allclose(b, [2, 3, 30, 35])
