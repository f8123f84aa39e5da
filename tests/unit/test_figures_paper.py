"""Paper-ready figures: layout presets, fonts at the printed size, colour bars, token legend and boxes,
small vector files with raster images, and the 2x static PNG for notebooks."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from clipsurgery_widgets import figures
from clipsurgery_widgets.engine.attention import capture_image_attention
from clipsurgery_widgets.engine.attribution import token_attributions
from clipsurgery_widgets.engine.results import Explanation, MapSet
from clipsurgery_widgets.figures.attention import layers_figure, qk_vv_figure
from clipsurgery_widgets.figures.decomposition import decomposition_figure
from clipsurgery_widgets.figures.evaluation import best_worst_figure, per_class_iou_figure
from clipsurgery_widgets.figures.layout import paper_size
from clipsurgery_widgets.figures.methods import methods_grid
from clipsurgery_widgets.figures.sam import sam_figure
from clipsurgery_widgets.figures.segmentation import class_map_figure
from clipsurgery_widgets.figures.style import TOP_COLORS
from clipsurgery_widgets.figures.tokens import token_figure
from clipsurgery_widgets.widgets.base import ExplorerWidget

H, W = 112, 112
LABELS = ("cat", "grass", "sky")
CAPTION = "A cat, lying on a soft sofa with unbelievable fluffiness."


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    rgb = np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.uint8)

    def mapset(seed):
        maps = np.random.default_rng(seed).uniform(0, 1, (3, H, W)).astype(np.float32)
        return MapSet(maps=maps, patch_scores=rng.uniform(0, 1, (49, 3)).astype(np.float32),
                      global_scores=np.zeros(3, np.float32))

    explanation = Explanation(labels=LABELS, image_size=(H, W), grid=(7, 7), input_size=(112, 112),
                              surgery=mapset(1), raw=mapset(2), probs=np.full(3, 1 / 3, np.float32),
                              redundancy="labels")
    return rgb, explanation


@pytest.fixture(scope="module")
def attribution(explainer, planted):
    return token_attributions(explainer, planted[0], CAPTION, include_punctuation=True)


@pytest.fixture(scope="module")
def attention(explainer, planted):
    capture = capture_image_attention(explainer.model, planted[0])
    return [capture.rows(layer, (1, 1)) for layer in range(3)]


def _builders(planted, attribution, attention):
    """Every kind of static figure, as zero-argument builders taking a layout."""
    rgb, e = planted
    heat = e.surgery.maps[0]
    classes = (np.arange(W)[None, :] * 3 // W).repeat(H, 0)
    rows = [{"rgb": rgb, "truth": classes, "prediction": classes, "map": heat, "map_label": "cat", "title": "best"}]
    return {
        "explanation_grid": lambda layout: figures.explanation_grid(rgb, e, layout=layout),
        "label_grid": lambda layout: figures.label_grid(rgb, e, layout=layout),
        "overlay": lambda layout: figures.overlay_figure(rgb, e, "cat", layout=layout),
        "segmentation": lambda layout: figures.segmentation_figure(rgb, e, layout=layout),
        "methods": lambda layout: methods_grid(rgb, e, methods=["raw", "surgery"], layout=layout),
        "tokens": lambda layout: token_figure([(rgb, attribution)] * 2, ncols=2, layout=layout),
        "qk_vv": lambda layout: qk_vv_figure([(rgb, attention[0]), (rgb, attention[1])], layout=layout),
        "layers": lambda layout: layers_figure(rgb, attention, layout=layout),
        "sam": lambda layout: sam_figure(rgb, [[10, 20]], [1], heat > 0.5, heat=heat, auto_points=[[5, 5]],
                                         auto_labels=[1], layout=layout),
        "decomposition": lambda layout: decomposition_figure(
            rgb, "cat", np.arange(12.0).reshape(3, 4) - 5, np.ones(3), -np.ones(3), heat,
            head_maps=[((1, 2), heat, ["a text"])], layout=layout),
        "class_map": lambda layout: class_map_figure(rgb, classes, ["a", "b", "c"], layout=layout),
        "best_worst": lambda layout: best_worst_figure(rows, ["a", "b", "c"], layout=layout),
        "per_class_iou": lambda layout: per_class_iou_figure(["a", "b", "c"], {"surgery": [0.1, 0.5, None]},
                                                             layout=layout),
    }


MAP_KINDS = ("explanation_grid", "label_grid", "overlay", "methods", "tokens", "qk_vv", "layers", "sam",
             "decomposition", "best_worst")


def _all_axes(fig: Figure):
    return [a for ax in fig.get_axes() for a in (ax, *ax.child_axes)]


def _colorbars(fig: Figure):
    return [ax for ax in _all_axes(fig) if hasattr(ax, "_colorbar")]


def _drawn_font_sizes(fig: Figure) -> list[float]:
    """Sizes of every visible, non-empty text as drawn (tick labels included)."""
    fig.draw_without_rendering()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    for ax in _all_axes(fig):
        if ax.axison:
            texts += [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
    return [t.get_fontsize() for t in texts]


# --- presets --------------------------------------------------------------------------------------

def test_paper_size_resolves_presets_and_refuses_nonsense():
    assert paper_size(None) is None
    assert (paper_size("column").width, paper_size("page").width) == (3.5, 7.0)
    assert paper_size(5).width == 5 and paper_size(5).height is None
    assert (paper_size((4, 3)).width, paper_size((4, 3)).height) == (4.0, 3.0)
    column, page, wide = paper_size("column"), paper_size("page"), paper_size(14)
    assert 6.5 <= column.font_min <= 7.5 and 8.5 <= column.font_max <= 9.5
    assert column.font_min <= page.font_min < wide.font_min and wide.font_min >= 8  # larger prints, larger type
    for bad in ("poster", (3,), -1, 0.1, True):
        with pytest.raises(ValueError, match="layout"):
            paper_size(bad)


@pytest.mark.parametrize("layout, width", [("column", 3.5), ("page", 7.0), (5.0, 5.0)])
def test_every_figure_takes_the_preset_width_with_fonts_for_that_size(planted, attribution, attention, layout,
                                                                     width):
    size = paper_size(layout)
    for name, build in _builders(planted, attribution, attention).items():
        fig = build(layout)
        assert fig.get_size_inches()[0] == pytest.approx(width), name
        assert 0.2 * width <= fig.get_size_inches()[1] <= 8 * width, name
        sizes = _drawn_font_sizes(fig)
        assert sizes, name
        assert min(sizes) >= size.font_min - 1e-6 and max(sizes) <= size.font_max + 1e-6, (name, sorted(set(sizes)))


def test_explicit_width_and_height_are_kept_and_no_layout_keeps_the_natural_size(planted, attribution, attention):
    builders = _builders(planted, attribution, attention)
    fig = builders["label_grid"]((6.0, 2.5))
    assert tuple(fig.get_size_inches()) == pytest.approx((6.0, 2.5))
    natural = builders["explanation_grid"](None)
    assert natural.get_size_inches()[0] > 7  # the old size: panel_inches per panel
    assert 11 in {t.get_fontsize() for t in natural.findobj(Text)}  # and the old fonts


def test_titles_stay_larger_than_ticks_after_the_layout(planted, attribution, attention):
    fig = _builders(planted, attribution, attention)["qk_vv"]("column")
    fig.draw_without_rendering()
    assert fig._suptitle.get_fontsize() == paper_size("column").font_max
    bar = _colorbars(fig)[0]
    assert bar.get_yticklabels()[0].get_fontsize() == paper_size("column").font_min


@pytest.mark.parametrize("name", ["explanation_grid", "label_grid", "methods", "qk_vv", "sam"])
def test_image_panels_fill_their_cells_no_empty_bands(planted, attribution, attention, name):
    fig = _builders(planted, attribution, attention)[name]("column")
    fig.draw_without_rendering()
    fig_w, fig_h = fig.get_size_inches()
    panels = [ax for ax in fig.axes if ax.images and not hasattr(ax, "_colorbar")]
    for ax in panels:
        cell, active = ax.get_position(original=True), ax.get_position()
        assert abs(cell.height - active.height) * fig_h < 0.04, name  # no band above/below an image
        assert abs(cell.width - active.width) * fig_w < 0.04, name  # nor beside it


def test_a_figure_sized_twice_ends_as_sized_once(planted, attribution, attention):
    fig = _builders(planted, attribution, attention)["explanation_grid"]("page")
    once = (tuple(fig.get_size_inches()), sorted({t.get_fontsize() for t in fig.findobj(Text)}))
    figures.apply_layout(fig, "page")
    twice = (tuple(fig.get_size_inches()), sorted({t.get_fontsize() for t in fig.findobj(Text)}))
    assert twice[0] == pytest.approx(once[0], abs=0.05) and twice[1] == pytest.approx(once[1])


# --- colour bars and the token legend -------------------------------------------------------------

@pytest.mark.parametrize("name", MAP_KINDS)
def test_every_kind_of_map_has_a_colour_bar(planted, attribution, attention, name):
    fig = _builders(planted, attribution, attention)[name](None)
    bars = _colorbars(fig)
    assert bars, name
    limits = [tuple(np.round(bar.get_ylim(), 3)) for bar in bars]
    assert (0.0, 1.0) in limits, (name, limits)  # the maps' normalised range


def test_token_figure_has_a_legend_of_the_marking_colours(planted, attribution):
    fig = token_figure((planted[0], attribution))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["best token", "second", "third"]
    assert [to_hex(h.get_facecolor()) for h in legend.legend_handles] == [to_hex(c) for c in TOP_COLORS]
    scale = token_figure((planted[0], attribution), marking="scale")
    assert not scale.legends and _colorbars(scale)[0].get_ylabel() == "score, tokens too"


def _box_extents(fig: Figure):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in fig.findobj(Text)
             if t.get_bbox_patch() is not None and t.get_visible()]
    return boxes


@pytest.mark.parametrize("layout", [None, "column"])
@pytest.mark.parametrize("marking", ["top3", "scale"])
def test_token_highlight_boxes_do_not_overlap(planted, attribution, layout, marking):
    pieces = [t for t in range(len(attribution.tokens)) if not attribution.tokens.space_before[t]
              and not attribution.tokens.is_special[t] and attribution.shown[t]]
    assert pieces  # the caption has word pieces and punctuation glued to words: the hard case
    fig = token_figure([(planted[0], attribution)] * 2, ncols=2, marking=marking, layout=layout)
    boxes = _box_extents(fig)
    assert len(boxes) >= (3 if marking == "top3" else 10) * 2
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap_x = min(a.x1, b.x1) - max(a.x0, b.x0)
            overlap_y = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert overlap_x <= 0.5 or overlap_y <= 0.5, (a, b)
    # and the caption stays inside its panel's width
    width = fig.get_size_inches()[0] * fig.dpi
    assert max(b.x1 for b in boxes) <= width


# --- vector output --------------------------------------------------------------------------------

def _svg_images(svg: bytes) -> list[Image.Image]:
    payloads = re.findall(rb'xlink:href="data:image/png;base64,([^"]+)"', svg)
    return [Image.open(io.BytesIO(base64.b64decode(p))) for p in payloads]


@pytest.mark.parametrize("layout", [None, "column"])
def test_svg_embeds_each_image_once_keeps_text_as_text_and_stays_small(planted, layout):
    rgb, e = planted
    fig = figures.explanation_grid(rgb, e, layout=layout)
    svg = figures.figure_bytes(fig, "svg", dpi=300)
    panels = [ax for ax in fig.axes if ax.images]
    images = _svg_images(svg)
    assert svg.count(b"<image") == len(images) == len(panels) + len(_colorbars(fig))  # one per panel + bar
    panel_images = [im for im in images if im.size[0] > 0.5 * im.size[1]]  # not the tall colour bar
    assert len(panel_images) == len(panels)
    assert all(im.size[0] <= W and im.size[1] <= H for im in panel_images)  # never upsampled past the data
    texts = re.findall(rb"<text[^>]*>([^<]*)</text>", svg)
    assert {b"cat", b"grass", b"sky", b"CLIP Surgery"} <= {t.strip() for t in texts}
    assert b"<path" in svg  # outlines and ticks stay vector
    image_bytes = sum(len(p) for p in re.findall(rb"base64,([^\"]+)", svg))
    assert len(svg) - image_bytes < 40_000  # everything but the images is a few tens of kB


def test_pdf_keeps_images_raster_with_truetype_text(planted):
    rgb, e = planted
    fig = figures.label_grid(rgb, e, layout="page")
    pdf = figures.figure_bytes(fig, "pdf", dpi=300)
    assert pdf.count(b"/Subtype /Image") == len([ax for ax in fig.axes if ax.images]) + len(_colorbars(fig))
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # embedded TrueType; journals refuse Type 3 fonts


def test_vector_output_leaves_the_figure_as_it_was(planted):
    rgb, e = planted
    fig = figures.overlay_figure(rgb, e, "cat")
    before = [im.get_interpolation() for ax in fig.axes for im in ax.images]
    figures.figure_bytes(fig, "svg")
    assert [im.get_interpolation() for ax in fig.axes for im in ax.images] == before


# --- the static PNG for notebooks -----------------------------------------------------------------

def test_static_png_is_2x_and_displayed_at_1x(planted):
    rgb, e = planted
    fig = figures.overlay_figure(rgb, e, "cat")
    png, metadata = figures.static_png(fig)
    width, height = Image.open(io.BytesIO(png)).size
    assert metadata == {"width": round(width / 2), "height": round(height / 2)}
    one_x = figures.figure_bytes(fig, "png", dpi=72)
    assert figures.static_png_metadata(one_x)["width"] == Image.open(io.BytesIO(one_x)).width
    assert abs(metadata["width"] - Image.open(io.BytesIO(one_x)).width) <= 2  # same size on the page
    with pytest.raises(ValueError, match="Not PNG"):
        figures.static_png_metadata(b"GIF89a")


class _Panel(ExplorerWidget):
    def _render_figure(self):
        fig = Figure(figsize=(8, 4), layout="constrained")
        ax = fig.subplots()
        ax.imshow(np.random.default_rng(0).uniform(size=(32, 64)))
        ax.set_title("a panel", fontsize=14)
        return fig


def test_widget_figure_and_save_take_a_layout(tmp_path):
    widget = _Panel()
    assert widget.static_dpi == 144
    png = widget._static_png()
    assert Image.open(io.BytesIO(png)).info["dpi"][0] == pytest.approx(144, abs=1)
    assert widget.figure().get_size_inches()[0] == 8
    fig = widget.figure(layout="column")
    assert fig.get_size_inches()[0] == 3.5 and fig.axes[0].title.get_fontsize() <= paper_size("column").font_max
    path = widget.save(tmp_path / "panel.png", dpi=100, layout="page")
    assert Image.open(path).width <= 7 * 100 + 2
    svg = widget.save(tmp_path / "panel.svg", layout=(4, 2)).read_bytes()
    assert b"<text" in svg and svg.count(b"<image") == 1


@pytest.mark.parametrize("kind", ["tokens", "tokens-pairs", "attention", "attention-layers"])
def test_widgets_with_their_own_figure_arguments_take_the_layout_too(explainer, kind):
    from clipsurgery_widgets import AttentionExplorer, TokenExplorer
    from clipsurgery_widgets.engine.images import sample_image

    cat = sample_image("cat")
    if kind.startswith("tokens"):
        w = TokenExplorer(explainer, cat, caption="a cat on grass")
        fig = w.figure(pairs=[(cat, "a cat")], layout="column") if kind == "tokens-pairs" else w.figure(layout="column")
    else:
        w = AttentionExplorer(explainer, cat)
        fig = w.figure("layers", layout="column") if kind == "attention-layers" else w.figure(layout="column")
    assert fig.get_size_inches()[0] == pytest.approx(paper_size("column").width, abs=0.01)
