"""Explainability metrics (hand-computed values: no library has them) and average precision
(against torchmetrics' MultilabelAveragePrecision and by hand)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import (
    BinaryAveragePrecision,
    MultilabelAveragePrecision,
)

from clipsurgery_widgets.evaluation.explain_metrics import (
    THRESHOLDS,
    concat_pairs,
    explain_scores,
    pair_stats,
    stack_pairs,
)
from clipsurgery_widgets.evaluation.ranking import (
    average_precision,
    label_average_precision,
    mean_average_precision,
)

# A 2 x 3 map and mask worked out by hand below.
MAP = np.array([[0.9, 0.6, 0.1],
                [0.4, 0.02, 0.7]], dtype=np.float32)
MASK = np.array([[1, 1, 0],
                 [1, 0, 0]], dtype=bool)


def test_thresholds_are_the_twenty_steps_of_005():
    assert len(THRESHOLDS) == 20 and THRESHOLDS[0] == 0.0 and THRESHOLDS[-1] == 0.95
    assert THRESHOLDS[3] == 0.15


def test_pair_stats_by_hand():
    stats = pair_stats(MAP, MASK, thresholds=[0.0, 0.05, 0.5, 0.65, 0.95])
    # t=0: all 6 predicted: I=3, U=6. t=0.05: 5 (0.02 out): I=3, U=5. t=0.5: {0.9, 0.6, 0.7}: I=2, U=4.
    # t=0.65: {0.9, 0.7}: I=1, U=4. t=0.95: none: I=0, U=3.
    assert stats["intersection"].tolist() == [3, 3, 2, 1, 0]
    assert stats["union"].tolist() == [6, 5, 4, 4, 3]
    assert stats["inside_sum"] == pytest.approx(0.9 + 0.6 + 0.4)
    assert stats["outside_sum"] == pytest.approx(0.1 + 0.02 + 0.7)
    assert (int(stats["inside_count"]), int(stats["outside_count"])) == (3, 3)


def test_pair_stats_leaves_out_ignored_pixels():
    valid = np.ones_like(MASK)
    valid[1, 2] = False  # the 0.7 outside the mask no longer counts
    stats = pair_stats(MAP, MASK, valid, thresholds=[0.5])
    assert stats["intersection"].tolist() == [2] and stats["union"].tolist() == [3]
    assert int(stats["outside_count"]) == 2 and stats["outside_sum"] == pytest.approx(0.12)


def test_pair_stats_refuses_mismatched_sizes():
    with pytest.raises(ValueError, match="same"):
        pair_stats(MAP, MASK[:, :2])


def test_explain_scores_pick_one_threshold_for_all_pairs():
    thresholds = [0.0, 0.5, 0.65]
    first = pair_stats(MAP, MASK, thresholds=thresholds)       # IoU 3/6, 2/4, 1/4
    second_map = np.array([[0.0, 0.8], [0.7, 0.3]], np.float32)
    second_mask = np.array([[0, 1], [1, 0]], bool)
    second = pair_stats(second_map, second_mask, thresholds=thresholds)  # IoU 2/4, 2/2, 2/2
    stats = stack_pairs([first, second], labels=[1, 0], num_thresholds=3)
    scores = explain_scores(stats, class_names=["cat", "dog", "cow"], thresholds=thresholds)
    # mean IoU per threshold: (0.5+0.5)/2 = 0.5, (0.5+1)/2 = 0.75, (0.25+1)/2 = 0.625 -> t = 0.5.
    assert scores["iou_by_threshold"] == pytest.approx([0.5, 0.75, 0.625])
    assert scores["miou"] == pytest.approx(0.75) and scores["threshold"] == 0.5
    # mSC: pair 1: 1.9/3 - 0.82/3; pair 2: 1.5/2 - 0.3/2.
    assert scores["msc"] == pytest.approx(((1.9 - 0.82) / 3 + (1.5 - 0.3) / 2) / 2)
    assert scores["per_class_iou"] == [pytest.approx(1.0), pytest.approx(0.5), None]
    assert scores["pairs"] == 2


def test_merging_pairs_from_two_processes_is_exact():
    rng = np.random.default_rng(1)
    pairs = [pair_stats(rng.random((7, 9)), rng.random((7, 9)) > 0.6) for _ in range(5)]
    labels = [0, 2, 1, 2, 0]
    whole = stack_pairs(pairs, labels)
    merged = concat_pairs([stack_pairs(pairs[:2], labels[:2]), stack_pairs([], []), stack_pairs(pairs[2:], labels[2:])])
    for name in whole:
        np.testing.assert_array_equal(whole[name], merged[name])
    assert explain_scores(whole) == explain_scores(merged)


def test_no_pairs_give_null_scores():
    scores = explain_scores(stack_pairs([], []), class_names=["a"])
    assert scores["miou"] is None and scores["msc"] is None and scores["per_class_iou"] == [None]


# --- average precision ------------------------------------------------------------------------

def test_average_precision_by_hand():
    # ranking: 0.9 (+), 0.8 (-), 0.7 (+), 0.1 (-): AP = 1/2 * 1 + 1/2 * 2/3.
    assert average_precision([0.1, 0.9, 0.7, 0.8], [0, 1, 1, 0]) == pytest.approx(0.5 + 1 / 3)
    # a tie admits both at once: precision 1/2 at recall 1.
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert average_precision([0.3, 0.2], [0, 0]) is None
    # -1 entries (VOC "difficult") are left out: the same as dropping them.
    assert average_precision([0.1, 0.9, 0.95, 0.8], [0, 1, -1, 0]) == pytest.approx(average_precision([0.1, 0.9, 0.8], [0, 1, 0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_torchmetrics(seed):
    rng = np.random.default_rng(seed)
    scores = rng.random((40, 6)).round(1)  # rounding makes ties, which AP must treat as one step
    targets = (rng.random((40, 6)) > 0.7).astype(np.int64)
    targets[:, 4] = 0  # a label without positives
    targets[0, 1] = -1
    metric = MultilabelAveragePrecision(num_labels=6, average=None, thresholds=None, ignore_index=-1)
    with pytest.warns(UserWarning):  # torchmetrics warns about the label without positives
        expected = metric(torch.tensor(scores), torch.tensor(targets)).numpy()
    ours = label_average_precision(scores, targets)
    assert ours[4] is None
    np.testing.assert_allclose([v for i, v in enumerate(ours) if i != 4], np.delete(expected, 4), rtol=1e-6)
    result = mean_average_precision(scores, targets, label_names=list("abcdef"))
    assert result["map"] == pytest.approx(np.delete(expected, 4).mean())  # the empty label is skipped
    assert result["labels_scored"] == 5 and result["per_label_ap"]["e"] is None


def test_per_image_pixel_average_precision_matches_torchmetrics():
    rng = np.random.default_rng(3)
    score_map = rng.random((16, 20)).astype(np.float32)
    mask = score_map + rng.normal(0, 0.3, score_map.shape) > 0.6
    metric = BinaryAveragePrecision(thresholds=None)
    expected = float(metric(torch.tensor(score_map.reshape(-1)), torch.tensor(mask.reshape(-1).astype(int))))
    assert average_precision(score_map, mask.astype(int)) == pytest.approx(expected, rel=1e-6)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="one entry per item"):
        average_precision([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="images, labels"):
        label_average_precision(np.zeros(3), np.zeros(3))
