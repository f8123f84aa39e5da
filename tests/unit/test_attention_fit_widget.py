"""AttentionExplorer fitting its cell: width-following figure, map rows without an empty band, the colour bar,
hover texts that name the cell, controls that say what they do, and a constructor that does not compute."""
import threading
import time

import numpy as np
import pytest

from clipsurgery_widgets.engine.attention import capture_attention
from clipsurgery_widgets.engine.images import preprocess
from clipsurgery_widgets.widgets import attention as attention_module
from clipsurgery_widgets.widgets.attention import AttentionExplorer
from clipsurgery_widgets.widgets.live_figure import LiveFigure
from clipsurgery_widgets.widgets.plotly_frontend import plotly_widget_code
from clipsurgery_widgets.widgets.attention_layout import AttentionLayout


@pytest.fixture
def explorer(explainer, cat):
    w = AttentionExplorer(explainer, cat)
    assert w.wait(60)
    return w


def test_the_figure_has_no_fixed_width_and_its_views_follow_their_container(explorer):
    fig = explorer.plot
    assert isinstance(fig, LiveFigure)
    assert fig.layout.width is None  # plotly autosizes only a figure without a fixed width
    esm = plotly_widget_code()  # what the page's loader fetches for every LiveFigure
    assert isinstance(esm, str) and "ResizeObserver" in esm and "autosizeFigure" in esm
    assert "export" in esm and esm.index("export") < esm.index("ResizeObserver")  # plotly's module, then ours


@pytest.mark.parametrize("width", [560, 700, 960, 1168])
def test_the_map_rows_have_no_empty_band_at_any_width(explorer, cat, width):
    view = explorer.view
    view.fit(width_px=width)
    shown = view.describe()["geometry"]
    assert shown["width"] == width
    assert shown["map_band_px"] <= 4  # the photo fills its panel's height (rounded to steps of 4 px)
    plot_width = width - 50
    # ... and the photo is drawn as wide as the panels allow, so it grows with the width.
    assert shown["map_px"] == pytest.approx(plot_width * (view.maps_right / 3 - 0.02) * 300 / 451, abs=3)


def test_a_wider_figure_gets_taller_map_rows_and_the_charts_go_2x2_when_narrow(explorer):
    view = explorer.view
    view.fit(width_px=560)
    narrow = view.describe()["geometry"]
    view.fit(width_px=1200)
    wide = view.describe()["geometry"]
    assert wide["map_px"] > 2 * narrow["map_px"]
    assert narrow["stats_grid"] == (2, 2) and wide["stats_grid"] == (1, 4)
    assert explorer.plot.layout.height == wide["height"]
    assert view.fit(width_px=1201) is False  # one pixel more moves nothing (no redraw)


def test_the_browser_reporting_its_width_lays_the_figure_out_again(explorer):
    before = explorer.view.describe()["geometry"]
    explorer.plot._view_width = 1100.0  # what the front end sets once it has drawn the figure
    after = explorer.view.describe()["geometry"]
    assert after["width"] == 1100 and after["map_px"] > before["map_px"] and after["map_band_px"] <= 4
    assert explorer.error is None
    explorer.kinds = ("qk", "vv", "qq")  # a rebuilt view starts at the width already known
    assert explorer.view.describe()["geometry"]["width"] == 1100


def test_the_maps_have_one_colour_bar_for_the_relative_values(explorer):
    explorer.kinds = ("qk", "vv", "gem")
    shown = explorer.view.describe()
    bar = shown["colorbar"]
    assert bar["shown"] and bar["range"] == (0, 1) and bar["panel"] == 3  # beside the last map panel
    assert "max" in bar["title"]
    # It stands right of the map panels, not over them.
    layout = explorer.plot.layout
    rightmost = max(layout[f"xaxis{n + 1 if n else ''}"].domain[1] for n in explorer.view.map_axes)
    assert rightmost < explorer.plot.data[explorer.view.map_heat[-1]].colorbar.x - 0.02
    assert sum(bool(t.showscale) for t in explorer.plot.data if t.type == "heatmap") == 1


def test_hover_reads_row_column_and_probability_on_maps_and_every_layer(explorer, explainer, cat):
    m = explainer.model
    capture = capture_attention(m, preprocess(cat, 224, m.mean, m.std, m.patch_size))
    hover = explorer.view.describe()["hover"]
    first_qk = capture.rows(5, (7, 7), None).qk  # the map panel: current layer 5
    cell, probability = hover["maps"].splitlines()[:2]
    assert cell == "row 0, col 0" and _probability(probability) == pytest.approx(first_qk[0, 0], abs=1.5e-4)
    layer0 = capture.rows(0, (7, 7), None).qk  # the first small multiple: layer 0, q-k
    cell, probability, name = hover["layers"].splitlines()
    assert (cell, name) == ("row 0, col 0", "block 0, q-k")
    assert _probability(probability) == pytest.approx(layer0[0, 0], abs=1.5e-4)
    # Another cell: the hover names that cell (rows down, columns across).
    cell, probability, name = explorer.view.hover_text(explorer.view.layer_heat[2][1], (3, 11)).splitlines()
    assert (cell, name) == ("row 3, col 11", "block 2, v-v")
    assert _probability(probability) == pytest.approx(capture.rows(2, (7, 7), None).vv[3, 11], abs=1.5e-4)


def _probability(line: str) -> float:
    label, value = line.split(" ")
    assert label == "probability"
    return float(value)


def test_every_control_says_what_it_does(explorer):
    for name, control in explorer.controls.items():
        if name in ("layer_name", "query_text", "kinds_label", "kinds"):
            continue  # read-outs and the row of toggles (each toggle is checked below)
        assert control.tooltip and len(control.tooltip) > 15, name
    for toggle in explorer.controls["kinds"].children:
        assert toggle.description and "attention" in toggle.tooltip
    assert "global" in explorer.controls["global"].tooltip and "pools" in explorer.controls["global"].tooltip


def test_the_toolbar_has_room_above_the_panel_titles(explorer):
    layout = explorer.plot.layout
    assert layout.margin.t >= 28  # plotly's toolbar is about 26 px tall, drawn at the top right
    titles_top = max(layout.annotations[i].y for i in explorer.view.map_titles)
    assert titles_top <= 1.0  # titles inside the plot area, under the margin


def test_the_constructor_returns_before_the_attention_is_computed(explainer, monkeypatch):
    """The forward pass runs in a background job: the widget can be shown (with its progress line) at once."""
    release = threading.Event()
    real = attention_module.capture_image_attention

    def slow_capture(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_module, "capture_image_attention", slow_capture)
    rgb = np.random.default_rng(5).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    start = time.perf_counter()
    w = AttentionExplorer(explainer, rgb)
    assert time.perf_counter() - start < 10
    assert w.busy and w.capture is None and "Capturing" in w.status
    release.set()
    assert w.wait(60) and w.capture is not None and w.error is None


def test_layout_geometry_alone_builds_no_plotly_objects():
    """fit() builds a throwaway layout for its geometry: its traces are plain dicts."""
    layout = AttentionLayout([f"block {i}" for i in range(12)], ("qk", "vv"), width_px=900, aspect=0.5)
    assert all(isinstance(trace, dict) for trace in layout.traces)
    assert layout.ncols == 12 and layout.stat_columns == 4 and layout.map_px % 4 == 0


def test_hover_texts_survive_the_front_end_reporting_them_as_empty_defaults(explorer):
    """A heat map first drawn without data comes back from the browser with an empty hover text as its
    default, and plotly then drops the explorer's own; the explorer puts it back."""
    fig, view = explorer.plot, explorer.view
    index = view.layer_heat[1][0]
    report = {"trace_deltas": [{"uid": fig.data[index].uid, "hovertemplate": ""}],
              "trace_edit_id": fig._last_trace_edit_id}
    fig._js2py_traceDeltas = report  # what the front end sends after drawing
    assert fig.data[index].hovertemplate.startswith("row %{y}, col %{x}")
    assert view.describe()["hover"]["layers"].startswith("row 0, col 0")
