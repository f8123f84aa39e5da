"""Reliability of user input (issue 16): user text is text in figures, CLI usage errors before any
loading, input-size limits, and the label rules ("\\+" escape, repeats, sets, truncation notices)."""
from __future__ import annotations

import re
import warnings

import matplotlib.mathtext
import numpy as np
import pytest

from clipsurgery_widgets import figures
from clipsurgery_widgets.cli import main
from clipsurgery_widgets.engine.errors import TextInputError
from clipsurgery_widgets.engine.images import sample_image
from clipsurgery_widgets.engine.text.labels import parse_labels, parse_target
from clipsurgery_widgets.figures.output import figure_bytes

MATH_LABELS = ("$x^$", "$\\alpha$")


@pytest.fixture(scope="module")
def cat():
    return sample_image("cat")


@pytest.fixture
def no_mathtext(monkeypatch):
    """Any text that reaches matplotlib's mathtext parser fails the test."""
    def refuse(self, s, *args, **kwargs):
        raise AssertionError(f"text {s!r} was parsed as mathtext")

    monkeypatch.setattr(matplotlib.mathtext.MathTextParser, "parse", refuse)


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text)]


# --- item 5: user text is text in every static figure ---------------------------------------------

def test_heatmap_figures_draw_dollar_labels_as_written(explainer, cat, no_mathtext):
    e = explainer.explain(cat, list(MATH_LABELS), method="both")
    built = [figures.explanation_grid(cat, e), figures.label_grid(cat, e),
             figures.overlay_figure(cat, e, MATH_LABELS[0], threshold=0.5),
             figures.segmentation_figure(cat, e, legend="all")]
    for fig in built:
        assert figure_bytes(fig)[:4] == b"\x89PNG"
        shown = " ".join(_texts(fig))
        assert any(label in shown for label in MATH_LABELS)  # drawn as given, not escaped


def test_method_segmentation_sam_and_decomposition_figures_draw_dollar_text(explainer, cat, no_mathtext):
    from clipsurgery_widgets.figures.decomposition import decomposition_figure
    from clipsurgery_widgets.figures.methods import methods_grid
    from clipsurgery_widgets.figures.sam import sam_figure
    from clipsurgery_widgets.figures.segmentation import class_map_figure

    e = explainer.explain(cat, list(MATH_LABELS), method="sclip", methods=["naclip"])
    heat = e.map_for(MATH_LABELS[0], "sclip")
    classes = np.zeros(cat.shape[:2], np.int64)
    classes[:, 100:] = 1
    built = [methods_grid(cat, e), class_map_figure(cat, classes, list(MATH_LABELS), title="$y_$"),
             sam_figure(cat, heat=heat, title="$x^$", heat_title="$\\alpha$"),
             decomposition_figure(cat, "$x^$", np.zeros((2, 2)), np.zeros(2), np.zeros(2), heat,
                                  head_maps=[((0, 1), heat, ["$\\alpha$ text", "$$"])])]
    for fig in built:
        assert figure_bytes(fig)[:4] == b"\x89PNG"
        assert any("$x^$" in t or "$\\alpha$" in t for t in _texts(fig))


def test_token_and_attention_figures_draw_dollar_text(explainer, no_mathtext):
    from clipsurgery_widgets.engine.attention import capture_image_attention
    from clipsurgery_widgets.figures.attention import layers_figure
    from clipsurgery_widgets.widgets.tokens import TokenExplorer

    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    widget = TokenExplorer(explainer, rgb, "a $x^$ cat with $\\alpha$ fur")
    assert widget.wait(60) and widget.error is None, widget.error
    fig = widget.figure()
    assert figure_bytes(fig)[:4] == b"\x89PNG"
    capture = capture_image_attention(explainer.model, rgb)
    rows = [capture.rows(layer, (1, 1)) for layer in range(2)]
    fig = layers_figure(rgb, rows, layer_names=["$x^$", "$\\alpha$"])
    assert figure_bytes(fig)[:4] == b"\x89PNG"


def test_widget_figure_and_save_keep_dollar_labels(explainer, cat, tmp_path, no_mathtext):
    from clipsurgery_widgets.widgets.heatmap import HeatmapExplorer

    widget = HeatmapExplorer(explainer, cat, labels=list(MATH_LABELS))
    assert widget.wait(60) and widget.error is None, widget.error
    for view in ("overlay", "grid", "compare", "segmentation"):
        widget.view = view
        assert widget.wait(60)
        path = widget.save(tmp_path / f"{view}.png")
        assert path.stat().st_size > 0


def test_cli_explains_a_dollar_label(tmp_path, monkeypatch, capsys, no_mathtext):
    monkeypatch.setenv("CLIPSURGERY_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "dollar.png"
    code = main(["explain", "sample:cat", "--labels", "$x^$,$\\alpha$", "--model", "tiny-random-vit",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert out.stat().st_size > 0


# --- item 7: CLI usage errors exit 2 before any model or image is loaded ---------------------------

@pytest.fixture
def nothing_loads(monkeypatch):
    import clipsurgery_widgets.engine as engine
    import clipsurgery_widgets.engine.images as images
    import clipsurgery_widgets.engine.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model or an image was loaded before the usage check")

    for module, name in ((engine, "load_model"), (loading, "load_model"), (engine, "load_image"),
                         (images, "load_image")):
        monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("extra,match", [
    (["--labels", "+"], "--labels"),
    (["--labels", "cat,a+"], "a+"),
    (["--labels", "++"], "--labels"),
    (["--labels", "cat", "--depth", "0"], "--depth"),
    (["--labels", "cat", "--depth", "99"], "1 to 6"),
    (["--labels", "cat", "--device", "foo"], "--device"),
    (["--labels", "cat", "--cmap", "nope"], "--cmap"),
])
def test_cli_usage_errors_exit_2_before_loading(capsys, nothing_loads, extra, match):
    try:
        code = main(["explain", "sample:cat", "--model", "tiny-random-vit", *extra])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err and "Traceback" not in err


def test_cli_depth_is_checked_against_a_known_config_without_loading(capsys, nothing_loads):
    try:
        code = main(["explain", "sample:cat", "--model", "ViT-B-16", "--labels", "cat", "--depth", "13"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "1 to 12" in capsys.readouterr().err


def test_cli_segment_refuses_a_bad_device_before_loading(capsys, nothing_loads):
    try:
        code = main(["segment", "sample:cat", "--classes", "voc21", "--model", "tiny-random-vit", "--device", "foo"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "--device" in capsys.readouterr().err


# --- items 9 and 13: explain() edges and the input-size limit ----------------------------------------

def test_explain_without_labels_is_a_clear_error(explainer, cat):
    with pytest.raises(TextInputError, match="list of strings"):
        explainer.explain(cat, None)


@pytest.mark.parametrize("size", [10 ** 20, (224, 10 ** 20), 2048])
def test_sizes_over_the_token_limit_are_refused_with_the_limit_and_the_fix(explainer, cat, size):
    from clipsurgery_widgets.engine.limits import MAX_TOKENS

    with pytest.raises(ValueError) as info:
        explainer.explain(cat, ["cat"], size=size)
    message = str(info.value)
    assert f"{MAX_TOKENS:,}" in message and "max_tokens" in message and "segment" in message
    assert re.search(r"\d (MB|GB|TB)", message)  # the memory estimate


def test_the_token_limit_can_be_lowered_and_raised(explainer, cat):
    with pytest.raises(ValueError, match="196"):
        explainer.explain(cat, ["cat"], size=240, max_tokens=196)
    assert explainer.explain(cat, ["cat"], size=224, max_tokens=196).grid == (14, 14)


def test_memory_estimate_grows_with_tokens_and_labels(tiny_vit):
    from clipsurgery_widgets.engine.limits import estimate_explain_bytes

    small = estimate_explain_bytes(tiny_vit, (224, 224), num_labels=1)
    assert estimate_explain_bytes(tiny_vit, (448, 448), num_labels=1) > small
    assert estimate_explain_bytes(tiny_vit, (224, 224), num_labels=1000) > small


def test_heatmap_explorer_size_edges(explainer, cat):
    from clipsurgery_widgets.widgets.heatmap import HeatmapExplorer
    from clipsurgery_widgets.widgets.state import InvalidStateError

    wide = HeatmapExplorer(explainer, cat, labels=["cat"], size=(224, 320))
    assert wide.wait(60) and wide.explanation.input_size == (224, 320)
    with pytest.raises(InvalidStateError, match="depth"):
        HeatmapExplorer(explainer, cat, labels=["cat"], depth="3")
    huge = HeatmapExplorer(explainer, cat, labels=["cat"], size=4112)
    assert huge.wait(60), "size=4112 must be refused, not run"
    assert huge.explanation is None or huge.explanation.input_size != (4112, 4112)
    assert huge.error is not None and "max_tokens" in huge.error


# --- item 15: label rules -------------------------------------------------------------------------

def test_an_escaped_plus_is_a_literal_plus():
    assert parse_target("C\\+\\+") == ["C++"]
    assert parse_target("a\\+b + c") == ["a+b", "c"]
    assert parse_target("person+bench") == ["person", "bench"]
    assert parse_labels("C\\+\\+, dog") == ["C\\+\\+", "dog"]
    for bad in ("+", "a+", "++", "\\++"):
        with pytest.raises(TextInputError, match="empty part"):
            parse_target(bad)


def test_explain_c_plus_plus(explainer, cat):
    e = explainer.explain(cat, ["C\\+\\+", "python"])
    assert e.labels == ("C\\+\\+", "python")
    plain = explainer.label_features(["C++"])[0]
    assert np.allclose(explainer.target_features(["C\\+\\+"])[0].numpy(), plain.numpy())
    assert e.map_for("C\\+\\+").shape == cat.shape[:2]


@pytest.mark.parametrize("labels", ["cat, dog, cat", ["cat", "dog", " cat"]])
def test_repeated_labels_are_dropped_with_a_notice(labels):
    with pytest.warns(UserWarning, match="'cat'") as record:
        assert parse_labels(labels) == ["cat", "dog"]
    assert record[0].filename == __file__


def test_a_set_of_labels_is_sorted_with_a_notice():
    with pytest.warns(UserWarning, match="sorted"):
        assert parse_labels({"sky", "cat", "dog"}) == ["cat", "dog", "sky"]


def test_labels_that_read_the_same_to_the_model_are_refused_where_they_cancel(explainer, cat):
    with pytest.raises(ValueError, match="'Cat'"):
        explainer.explain(cat, ["cat", "Cat"], redundancy="labels")
    with pytest.raises(ValueError, match="read the same"):
        explainer.explain(cat, ["cat", "CAT "])
    with pytest.warns(UserWarning, match="read the same"):
        e = explainer.explain(cat, ["cat", "Cat", "dog"])
    assert e.maps.max() > 0


def test_truncation_notice_is_short_and_points_at_the_caller(explainer, cat):
    long_label = "a very long label " + "x" * 400
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        explainer.explain(cat, [long_label, "dog"], templates=None)
    (notice,) = [w for w in record if "truncated" in str(w.message)]
    assert notice.filename == __file__
    assert "x" * 61 not in str(notice.message) and len(str(notice.message)) < 300
