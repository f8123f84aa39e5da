"""Bounded memory (issue 16): explanations keep patch-resolution scores, full-size maps are made on
access, and 1,000 labels fit in a bounded peak."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.maps import similarity_maps
from clipsurgery_widgets.engine.results import MapSet

LABELS = ["cat", "grass", "sky", "ground", "tree"]


@pytest.fixture(scope="module")
def big_photo():
    return np.random.default_rng(0).integers(0, 256, (600, 900, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def explained(explainer, big_photo):
    return explainer.explain(big_photo, LABELS, method="both")


def _held_bytes(mapset: MapSet) -> int:
    """Bytes of every array the MapSet holds (its attributes, not what it computes)."""
    held = vars(mapset).values() if hasattr(mapset, "__dict__") else \
        [getattr(mapset, name, None) for name in mapset.__slots__]
    return sum(value.nbytes for value in held if isinstance(value, np.ndarray))


def test_mapsets_hold_patch_scores_not_full_size_maps(explained, big_photo):
    pixels = big_photo.shape[0] * big_photo.shape[1]
    for mapset in explained.by_method.values():
        assert _held_bytes(mapset) <= 4 * len(LABELS) * (explained.grid[0] * explained.grid[1] + 1)
        assert mapset.maps.shape == (len(LABELS), *big_photo.shape[:2])
        assert _held_bytes(mapset) < 4 * pixels  # reading .maps stored nothing


def test_maps_are_computed_on_access_from_the_patch_scores(explained, big_photo):
    mapset = explained.surgery
    expected = similarity_maps(torch.from_numpy(mapset.patch_scores)[None], explained.grid, big_photo.shape[:2])[0]
    assert mapset.maps.dtype == np.float32
    np.testing.assert_allclose(mapset.maps, expected.numpy(), atol=1e-6)
    for index, label in enumerate(LABELS):
        np.testing.assert_allclose(mapset.map_at(index), expected[index].numpy(), atol=1e-6)
        np.testing.assert_allclose(explained.map_for(label), expected[index].numpy(), atol=1e-6)


def test_values_at_one_pixel_match_the_full_maps(explained, big_photo):
    mapset, full = explained.raw, explained.raw.maps
    height, width = big_photo.shape[:2]
    for y, x in [(0, 0), (height - 1, width - 1), (17, 433), (301, 5), (height // 2, width // 2)]:
        np.testing.assert_allclose(mapset.values_at(y, x), full[:, y, x], atol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        mapset.values_at(height, 0)


def test_segmentation_matches_the_argmax_of_upsampled_scores(explained, big_photo):
    gh, gw = explained.grid
    scores = torch.from_numpy(np.ascontiguousarray(explained.surgery.patch_scores.T)).reshape(1, -1, gh, gw)
    expected = F.interpolate(scores, size=big_photo.shape[:2], mode="bilinear", align_corners=False)[0].argmax(0)
    assert np.array_equal(explained.segmentation(), expected.numpy())


def test_planted_maps_are_still_accepted():
    maps = np.random.default_rng(0).uniform(0, 1, (2, 8, 12)).astype(np.float32)
    planted = MapSet(maps, np.zeros((4, 2), np.float32), np.zeros(2, np.float32))
    assert planted.maps is maps and np.array_equal(planted.map_at(1), maps[1])
    np.testing.assert_array_equal(planted.values_at(3, 4), maps[:, 3, 4])


WORKER = textwrap.dedent("""
    import json, resource
    from pathlib import Path
    from clipsurgery_widgets.engine.explainer import Explainer
    from clipsurgery_widgets.engine.images import sample_image
    from clipsurgery_widgets.engine.loading import load_model

    pool = Path("{pool}").read_text().splitlines()
    labels = list(dict.fromkeys(line.strip() for line in pool if line.strip()))[:1000]
    explainer = Explainer(load_model("tiny-random-vit", device="cpu"), cache_dir=False)
    rgb = sample_image("cat")
    explainer.explain(rgb, labels[:2], method="both")  # warm up every code path
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = explainer.explain(rgb, labels, method="both")
    result.map_for(labels[0]), result.segmentation()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"labels": len(result.labels), "growth_mb": (after - before) / 1024}}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
def test_a_thousand_labels_grow_the_peak_by_little():
    from pathlib import Path

    from clipsurgery_widgets.data import presets

    pool = Path(presets.__file__).with_name("text_pool.txt")
    out = subprocess.run([sys.executable, "-c", WORKER.format(pool=pool)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["labels"] == 1000
    # Full-size float32 maps of 1,000 labels x 2 methods on this 451 x 300 photo alone are 1.08 GB.
    assert row["growth_mb"] < 400, row
