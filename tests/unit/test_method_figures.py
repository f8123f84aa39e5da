"""Static figures for the dense methods (compare grid, class map) and the per-dataset protocol settings."""
from __future__ import annotations

import numpy as np
import pytest

from clipsurgery_widgets.engine.segmentation import benchmark_classes
from clipsurgery_widgets.engine.segmentation.protocols import (
    class_display_names,
    protocol_for,
    protocol_settings,
)
from clipsurgery_widgets.figures.methods import methods_grid
from clipsurgery_widgets.figures.segmentation import class_colors, class_map_figure
from clipsurgery_widgets.figures.style import label_colors, method_name


@pytest.fixture(scope="module")
def compared(explainer):
    rgb = explainer.prepare_image("sample:coffee")
    return rgb, explainer.explain(rgb, "cup, table", method="sclip", methods=["naclip", "clip_surgery"])


def test_methods_grid_has_a_row_per_label_and_a_column_per_method(compared):
    rgb, explanation = compared
    fig = methods_grid(rgb, explanation)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 2 * 4
    assert [ax.get_title() for ax in axes[:4]] == ["image", "SCLIP", "NACLIP", "CLIP Surgery"]
    assert [axes[0].get_ylabel(), axes[4].get_ylabel()] == ["cup", "table"]
    assert [ax.get_ylabel() for ax in fig.axes if hasattr(ax, "_colorbar")] == ["normalised score"]
    only = methods_grid(rgb, explanation, methods=["naclip"], labels=["table"], show_image=False)
    panels = [ax for ax in only.axes if ax.images]
    assert len(panels) == 1 and panels[0].get_title() == "NACLIP"


def test_methods_grid_refuses_what_was_not_computed(compared):
    rgb, explanation = compared
    with pytest.raises(ValueError, match="no 'gem' maps"):
        methods_grid(rgb, explanation, methods=["gem"])
    with pytest.raises(ValueError, match="not in this explanation"):
        methods_grid(rgb, explanation, labels=["dog"])
    with pytest.raises(ValueError, match="same image"):
        methods_grid(rgb[:10], explanation)


def test_class_map_blends_each_class_colour_and_lists_present_classes():
    rgb = np.full((4, 6, 3), 100, np.uint8)
    labels = np.zeros((4, 6), np.int64)
    labels[:, 3:] = 2
    blended = class_colors(labels, 3, 0.5, rgb)
    expected = 0.5 * 100 + 0.5 * label_colors(3)[2] * 255
    assert np.allclose(blended[0, 5], expected, atol=1)
    fig = class_map_figure(rgb, labels, ["bg", "cat", "dog"])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["bg", "dog"]
    with pytest.raises(ValueError, match="class indices up to 2"):
        class_map_figure(rgb, labels, ["bg", "cat"])


def test_protocol_settings_follow_the_published_configs():
    voc = protocol_settings("voc21", "sclip")
    assert (voc["short_side"], voc["logit_scale"], voc["prob_thd"], voc["area_thd"]) == (336, 65.0, 0.1, 0.1)
    assert protocol_settings("coco_stuff164k", "sclip")["short_side"] == 448
    nac = protocol_settings("voc20", "naclip")
    assert nac["crop"] == 0 and nac["pamr_steps"] == 10 and nac["logit_scale"] == 40.0
    assert protocol_settings("cityscapes", "clearclip")["crop"] == 224
    assert protocol_for("gem") == "sclip" and protocol_for("naclip") == "naclip"
    with pytest.raises(ValueError, match="protocol"):
        protocol_settings("voc21", "mine")
    with pytest.raises(ValueError, match="No published settings"):
        protocol_settings("imagenet", "sclip")


def test_display_names():
    assert class_display_names(benchmark_classes("voc21"), "voc21")[:2] == ["background", "aeroplane"]
    assert class_display_names([["cat", "kitty"], ["dog"]]) == ["cat", "dog"]
    assert method_name("surgery") == "CLIP Surgery" and method_name("gem") == "GEM"
