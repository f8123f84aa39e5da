"""Static matplotlib figures (figures.py) drawn from planted explanations with known maps."""
import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from clipsurgery_widgets import figures
from clipsurgery_widgets.engine.results import Explanation, MapSet

H, W = 40, 60
LABELS = ("cat", "grass", "sky")


def _mapset(seed: int) -> MapSet:
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0, 1, (len(LABELS), H, W)).astype(np.float32)
    # Patch scores on a 2 x 2 grid: "cat" wins the left column, "sky" the right, "grass" nowhere.
    patch = np.array([[3, 0, 1], [1, 0, 3], [3, 0, 1], [1, 0, 3]], np.float32)
    return MapSet(maps=maps, patch_scores=patch, global_scores=np.zeros(3, np.float32))


@pytest.fixture
def planted():
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    explanation = Explanation(labels=LABELS, image_size=(H, W), grid=(2, 2), input_size=(32, 32),
                              surgery=_mapset(1), raw=_mapset(2), probs=np.full(3, 1 / 3, np.float32),
                              redundancy="labels")
    return rgb, explanation


def _blend(rgb, heat, cmap, opacity):
    """The overlay written out: (1 - opacity) * image + opacity * colour-mapped heat."""
    colour = colormaps[cmap](heat)[..., :3] * 255
    return (1 - opacity) * rgb + opacity * colour


def _image_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.images]


def test_explanation_grid_layout_titles_and_pixels(planted):
    rgb, e = planted
    fig = figures.explanation_grid(rgb, e, methods=("raw", "surgery"), cmap="viridis", opacity=0.3)
    axes = _image_axes(fig)
    assert len(axes) == len(LABELS) * 3
    assert [ax.get_title() for ax in axes[:3]] == ["image", "raw CLIP", "CLIP Surgery"]
    assert np.array_equal(axes[0].images[0].get_array(), rgb)
    row_labels = [t.get_text() for ax in axes[::3] for t in ax.texts]
    assert row_labels == list(LABELS)
    for row, label in enumerate(LABELS):
        for col, maps in ((1, e.raw), (2, e.surgery)):
            shown = np.asarray(axes[row * 3 + col].images[0].get_array(), dtype=float)
            expected = _blend(rgb, maps.maps[row], "viridis", 0.3)
            assert np.abs(shown - expected).max() <= 1.0
    colorbars = [ax for ax in fig.axes if ax.get_ylabel() == "normalised score"]
    assert len(colorbars) == 1


def test_explanation_grid_subset_of_labels_and_one_method(planted):
    rgb, e = planted
    fig = figures.explanation_grid(rgb, e, methods=("surgery",), labels=["sky"], show_image=False)
    (ax,) = _image_axes(fig)
    expected = _blend(rgb, e.surgery.maps[2], "jet", 0.6)
    assert np.abs(np.asarray(ax.images[0].get_array(), float) - expected).max() <= 1.0


def test_threshold_draws_the_outline_of_the_region(planted):
    rgb, e = planted
    yy, xx = np.mgrid[:H, :W]
    disk = np.clip(10.5 - np.hypot(yy - 20, xx - 30), 0, 1).astype(np.float32)
    maps = e.surgery.maps.copy()
    maps[0] = disk
    e2 = Explanation(**{**e.__dict__, "surgery": MapSet(maps, e.surgery.patch_scores, e.surgery.global_scores)})
    fig = figures.overlay_figure(rgb, e2, "cat", threshold=0.5)
    (ax,) = _image_axes(fig)
    (line,) = ax.lines
    x, y = line.get_data()
    assert np.allclose(np.hypot(np.asarray(y) - 20, np.asarray(x) - 30), 10, atol=0.75)
    assert ax.get_title() == "CLIP Surgery: cat"
    assert not _image_axes(figures.overlay_figure(rgb, e2, "cat"))[0].lines


def test_label_grid_has_one_panel_per_label(planted):
    rgb, e = planted
    fig = figures.label_grid(rgb, e, method="raw", ncols=2)
    axes = _image_axes(fig)
    assert [ax.get_title() for ax in axes] == list(LABELS)
    assert fig._suptitle.get_text() == "raw CLIP"
    assert sum(1 for ax in fig.axes if not ax.axison and not ax.images and ax.get_ylabel() == "") >= 1  # spare cell


def test_segmentation_figure_colours_and_legend(planted):
    rgb, e = planted
    fig = figures.segmentation_figure(rgb, e, opacity=0.5)
    (ax,) = _image_axes(fig)
    shown = np.asarray(ax.images[0].get_array(), float)
    colors = figures.label_colors(3)
    # Far from the middle column the argmax is certain: "cat" on the left, "sky" on the right.
    for x, winner in ((2, 0), (W - 3, 2)):
        expected = 0.5 * rgb[:, x] + 0.5 * np.round(colors[winner] * 255)
        assert np.abs(shown[:, x] - expected).max() <= 1.0
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["cat", "sky"]  # "grass" never wins
    everything = figures.segmentation_figure(rgb, e, legend="all")
    assert [t.get_text() for t in everything.legends[0].get_texts()] == list(LABELS)


def test_label_colors_are_distinct():
    colors = figures.label_colors(80)
    assert colors.shape == (80, 3) and colors.min() >= 0 and colors.max() <= 1
    assert len({tuple(np.round(c, 3)) for c in colors}) == 80
    assert tuple(colors[0]) == to_rgb("tab:blue")


def test_figure_bytes_and_save(planted, tmp_path):
    rgb, e = planted
    fig = figures.label_grid(rgb, e)
    assert figures.figure_bytes(fig, "png").startswith(b"\x89PNG")
    assert figures.figure_bytes(fig, "svg").lstrip().startswith(b"<?xml")
    assert figures.figure_bytes(fig, "pdf").startswith(b"%PDF")
    small = figures.save_figure(fig, tmp_path / "a.png", dpi=50)
    large = figures.save_figure(fig, tmp_path / "b.png", dpi=100)
    from PIL import Image
    w_small, w_large = Image.open(small).width, Image.open(large).width
    assert abs(w_large / w_small - 2) < 0.1
    assert figures.save_figure(fig, tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    assert figures.save_figure(fig, tmp_path / "d", format="svg").read_bytes().lstrip().startswith(b"<?xml")


def test_bad_inputs_say_what_to_do(planted, tmp_path):
    rgb, e = planted
    with pytest.raises(ValueError, match="pass the same image"):
        figures.explanation_grid(rgb[:10], e)
    with pytest.raises(ValueError, match="uint8"):
        figures.explanation_grid(rgb.astype(float), e)
    with pytest.raises(ValueError, match="not in this explanation"):
        figures.label_grid(rgb, e, labels=["zebra"])
    with pytest.raises(ValueError, match="Unknown method"):
        figures.explanation_grid(rgb, e, methods=("gradcam",))
    only_surgery = Explanation(**{**e.__dict__, "raw": None})
    with pytest.raises(ValueError, match="method='both'"):
        figures.explanation_grid(rgb, only_surgery)
    with pytest.raises(ValueError, match="colormap"):
        figures.label_grid(rgb, e, cmap="not-a-cmap")
    fig = figures.label_grid(rgb, e)
    with pytest.raises(ValueError, match="Unsupported figure format"):
        figures.save_figure(fig, tmp_path / "x.bmp")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        figures.save_figure(fig, tmp_path / "missing" / "x.png")
