"""The SAM point rule's options (threshold as a level or a quantile, at most N points), the absent-label
probability, instances at a quantile, and saving instance masks (engine side, tiny models)."""
from __future__ import annotations

import numpy as np
import pytest

from clipsurgery_widgets.engine import maps
from clipsurgery_widgets.engine.sam.export import load_mask
from clipsurgery_widgets.engine.sam.instances import instance_prompts
from clipsurgery_widgets.engine.sam.presence import (
    DEFAULT_ABSENT_BELOW,
    DEFAULT_COMPARISON,
    LabelPresence,
    check_cutoff,
    comparison_labels,
    label_presence,
)
from clipsurgery_widgets.engine.sam.prompts import points_from_map
from clipsurgery_widgets.engine.sam.refiner import SamRefiner, build_tiny_sam


def reference_points(values, grid, size, level_of, cap=None):
    """A literal reading of docs/algorithms.md#points-for-sam for even grids (2x2 block means), with the
    level chosen by ``level_of(cells)`` and at most ``cap`` points of each kind."""
    gh, gw = grid
    height, width = size
    cells = values.reshape(gh // 2, 2, gw // 2, 2).mean(axis=(1, 3)).reshape(-1)
    cells = (cells - cells.min()) / (cells.max() - cells.min())
    order = list(np.argsort(cells, kind="stable"))
    num = min(int((cells >= level_of(cells)).sum()), len(cells) // 2)
    if cap is not None:
        num = min(num, cap)
    w = gw // 2

    def pixel(i):
        r, c = divmod(int(i), w)
        return int(min((c + 0.5) * width / w, width - 1)), int(min((r + 0.5) * (height / (gh // 2)), height - 1))

    return [pixel(i) for i in order[::-1][:num]] + [pixel(i) for i in order[:num]], num


def two_birds(strong=1.0, weak=0.55, grid=(14, 14)):
    """Patch scores [N] with two blobs: a strong one top-left and a weaker one bottom-right."""
    values = np.zeros(grid, np.float32)
    values[2:6, 2:6] = strong
    values[8:12, 8:12] = weak
    return values.reshape(-1)


def in_blob(point, rows, cols, size=(140, 140), grid=(14, 14)):
    x, y = point
    ph, pw = size[0] / grid[0], size[1] / grid[1]
    return rows[0] * ph <= y < rows[1] * ph and cols[0] * pw <= x < cols[1] * pw


# --- threshold as a level or a quantile, at most N points -------------------------------------------

@pytest.mark.parametrize("quantile", [0.5, 0.8, 0.95])
def test_quantile_threshold_follows_the_reference(quantile):
    values = np.random.default_rng(7).normal(size=8 * 6).astype(np.float32)
    expected, num = reference_points(values, (8, 6), (123, 77), lambda cells: np.quantile(cells, quantile))
    points, labels = maps.map_to_points(values, (8, 6), (123, 77), threshold=quantile, threshold_mode="quantile")
    assert num > 0 and [tuple(p) for p in points] == expected
    assert labels.tolist() == [1] * num + [0] * num


def test_max_points_keeps_the_highest_and_the_lowest():
    values = np.random.default_rng(8).normal(size=12 * 12).astype(np.float32)
    expected, num = reference_points(values, (12, 12), (96, 96), lambda cells: 0.3, cap=3)
    points, labels = maps.map_to_points(values, (12, 12), (96, 96), threshold=0.3, max_points=3)
    assert num == 3 and [tuple(p) for p in points] == expected and labels.tolist() == [1, 1, 1, 0, 0, 0]
    uncapped, _ = maps.map_to_points(values, (12, 12), (96, 96), threshold=0.3)
    assert len(uncapped) > 6  # the cap did bite


def test_quantile_finds_both_birds_where_the_fixed_level_finds_one():
    scores, size = two_birds(), (140, 140)
    level, level_labels = points_from_map(scores, (14, 14), size, 0.8)
    quant, quant_labels = points_from_map(scores, (14, 14), size, 0.8, threshold_mode="quantile")
    strong = [in_blob(p, (2, 6), (2, 6)) for p in level[level_labels == 1]]
    assert strong and all(strong)  # 0.8 of the min-max scaled map: only the strong bird
    positives = quant[quant_labels == 1]
    assert any(in_blob(p, (2, 6), (2, 6)) for p in positives)
    assert any(in_blob(p, (8, 12), (8, 12)) for p in positives)  # the weaker bird too


def test_combined_targets_take_the_options_per_map():
    parts = np.stack([two_birds(), two_birds(0.4, 1.0)], axis=1)
    points, labels = points_from_map(parts, (14, 14), (140, 140), 0.2, threshold_mode="quantile", max_points=2)
    assert labels.tolist() == [1, 1, 1, 1, 0, 0]  # two positives per part, two negatives from the mean map


def test_flat_map_gives_no_points_in_either_mode():
    for mode, threshold in (("value", 0.5), ("quantile", 0.0)):  # even the lowest quantile: a flat map has none
        points, labels = maps.map_to_points(np.full(196, 0.3, np.float32), (14, 14), (50, 50), threshold=threshold,
                                            threshold_mode=mode)
        assert points.shape == (0, 2) and labels.shape == (0,)


@pytest.mark.parametrize("kwargs, words", [
    ({"threshold": 1.5, "threshold_mode": "quantile"}, "between 0 and 1"),
    ({"threshold": -0.1, "threshold_mode": "quantile"}, "quantile"),
    ({"threshold": float("nan")}, "NaN"),
    ({"threshold": "high"}, "number"),
    ({"threshold_mode": "percent"}, "'value'"),
    ({"max_points": 0}, "max_points"),
    ({"max_points": 2.5}, "whole number"),
    ({"max_points": True}, "whole number"),
])
def test_bad_point_rule_settings_name_the_fix(kwargs, words):
    with pytest.raises(ValueError, match=words):
        points_from_map(np.arange(196.0), (14, 14), (50, 50), **kwargs)


def test_refiner_points_from_scores_takes_the_options():
    refiner = SamRefiner(build_tiny_sam())
    refiner.set_image(np.random.default_rng(1).integers(0, 256, (140, 140, 3), dtype=np.uint8))
    result = refiner.points_from_scores(two_birds(), (14, 14), threshold=0.8, threshold_mode="quantile", max_points=2)
    expected, labels = points_from_map(two_birds(), (14, 14), (140, 140), 0.8, threshold_mode="quantile",
                                       max_points=2)
    np.testing.assert_array_equal(result.points, expected)
    assert result.labels.tolist() == labels.tolist() == [1, 1, 0, 0]


# --- instances at a quantile ------------------------------------------------------------------------

def test_instances_at_a_quantile_split_both_birds():
    scores = two_birds(1.0, 0.5)
    assert len(instance_prompts(scores, (14, 14), (140, 140), 0.8)) == 1
    found = instance_prompts(scores, (14, 14), (140, 140), 0.9, threshold_mode="quantile")
    assert len(found) == 2 and found[0].peak > found[1].peak
    assert found[1].region[8:12, 8:12].all() and found[0].region[2:6, 2:6].all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        instance_prompts(scores, (14, 14), (140, 140), 1.2, threshold_mode="quantile")
    with pytest.raises(ValueError, match="threshold_mode"):
        instance_prompts(scores, (14, 14), (140, 140), 0.5, threshold_mode="top")
    with pytest.raises(ValueError, match="max_instances"):
        instance_prompts(scores, (14, 14), (140, 140), 0.5, max_instances=0)


# --- the absent-label probability -------------------------------------------------------------------

def test_presence_is_clips_softmax_among_the_labels(explainer):
    rgb = np.random.default_rng(5).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    others = ["cat", "dog", "car", "tree"]
    presence = label_presence(explainer, rgb, "bird", others)
    reference = explainer.explain(rgb, ["bird", *others], method="surgery")  # CLIP's own global prediction
    assert presence.labels == ("bird", *others)
    np.testing.assert_allclose(presence.probs, reference.probs, atol=1e-5)
    assert presence.probability == pytest.approx(float(reference.probs[0]), abs=1e-5)
    best = int(np.argmax(reference.probs))
    assert presence.best[0] == reference.labels[best]
    assert presence.absent(presence.probability + 1e-3) and not presence.absent(presence.probability - 1e-3)
    assert not presence.absent(0.0)  # 0 turns the check off
    assert "bird" in presence.describe() and "4 other labels" in presence.describe()


def test_comparison_leaves_out_the_text_and_its_parts():
    assert comparison_labels("cat", ["cat", "dog", "Cat"]) == ["cat", "dog"]
    assert comparison_labels("cat+dog", "cat, dog, car") == ["cat+dog", "car"]
    assert comparison_labels("bird", DEFAULT_COMPARISON)[1:] == [t for t in DEFAULT_COMPARISON if t != "bird"]
    with pytest.raises(ValueError, match="at least one other label"):
        comparison_labels("cat", ["cat"])


def test_cutoff_checks():
    assert check_cutoff(0) == 0.0 and check_cutoff(DEFAULT_ABSENT_BELOW) == DEFAULT_ABSENT_BELOW
    for bad in (1.0, -0.01, "x", float("nan")):
        with pytest.raises(ValueError, match="cut-off"):
            check_cutoff(bad)
    presence = LabelPresence(("a", "b"), np.array([0.2, 0.8], np.float32))
    with pytest.raises(ValueError, match="cut-off"):
        presence.absent(2)


# --- instance masks out to files ----------------------------------------------------------------------

def test_instance_masks_round_trip_through_save_mask(tmp_path):
    refiner = SamRefiner(build_tiny_sam())
    refiner.set_image(np.random.default_rng(2).integers(0, 256, (140, 140, 3), dtype=np.uint8))
    found = refiner.predict_instances(two_birds(1.0, 0.5), (14, 14), threshold=0.9, threshold_mode="quantile")
    assert len(found) == 2
    from clipsurgery_widgets.engine.sam.export import save_mask

    for k, mask in enumerate(found.masks):
        for suffix in (".png", ".json", ".npy"):
            np.testing.assert_array_equal(load_mask(save_mask(mask, tmp_path / f"m{k}{suffix}")), mask)
