"""LiveFigure: a front end attaching later gets the figure as it is now, and plotly's code once per page."""
import re

import numpy as np
import plotly.graph_objects as go

from clipsurgery_widgets.widgets.live_figure import (BUNDLE_REPLY, BUNDLE_REQUEST, LiveFigure,
                                                     plotly_widget_code)


def _full_state(fig) -> dict:
    return fig.get_state()


def test_full_state_carries_the_current_traces_and_layout_not_the_first_ones():
    fig = LiveFigure([go.Heatmap(z=np.zeros((2, 2)), name="a")])
    fig.get_state()  # what the first front end got
    with fig.batch_update():
        fig.data[0].z = np.ones((3, 3))
        fig.layout.title.text = "now"
    fig.add_trace(go.Scatter(x=[1], y=[2], name="b"))
    state = _full_state(fig)
    assert [t["name"] for t in state["_widget_data"]] == ["a", "b"]
    assert np.asarray(state["_widget_data"][0]["z"]).sum() == 9
    assert state["_widget_layout"]["title"]["text"] == "now"
    fig.data = fig.data[1:]  # traces removed later are gone from the state too
    assert [t["name"] for t in _full_state(fig)["_widget_data"]] == ["b"]


def test_plain_figure_widget_keeps_the_stale_state_this_class_fixes():
    # The control: plotly's own FigureWidget hands a late front end the figure as first shown.
    fig = go.FigureWidget([go.Heatmap(z=np.zeros((2, 2)), name="a")])
    fig.add_trace(go.Scatter(x=[1], y=[2], name="b"))
    assert [t["name"] for t in fig.get_state()["_widget_data"]] == ["a"]


def test_single_trait_updates_do_not_resend_the_figure():
    fig = LiveFigure([go.Heatmap(z=np.zeros((2, 2)))])
    fig.add_trace(go.Scatter(x=[1], y=[2]))
    assert set(fig.get_state("_last_trace_edit_id")) == {"_last_trace_edit_id"}


def test_state_carries_a_small_loader_instead_of_plotlys_code():
    esm = LiveFigure().get_state()["_esm"]
    code = plotly_widget_code()
    assert len(esm) < 10_000 < len(code)
    assert BUNDLE_REQUEST in esm and BUNDLE_REPLY in esm and "export default" in esm
    assert "export" in code and "FigureModel" in code  # plotly's module, sent on request


def test_the_kernel_answers_a_pages_request_for_plotlys_code():
    fig, sent = LiveFigure(), []
    fig.send = lambda content, buffers=None: sent.append(content)
    fig._handle_custom_msg({"type": "something else"}, [])
    assert sent == []
    fig._handle_custom_msg({"type": BUNDLE_REQUEST}, [])
    assert len(sent) == 1 and sent[0]["type"] == BUNDLE_REPLY and sent[0]["esm"] == plotly_widget_code()


def test_plotlys_code_gets_the_view_fixes_and_an_unknown_shape_is_left_alone():
    from clipsurgery_widgets.widgets.plotly_frontend import patch_plotly_widget_code

    code = plotly_widget_code()
    assert "ResizeObserver" in code and "_view_width" in code  # width following
    assert "Plotly.react(el" in code and "plotlywidget-after-render" in code  # redraw after lost updates
    view, plotly_name = re.search(r"const View = ([\w$]+), Plotly = ([\w$]+)\.default", code).groups()
    assert f"{view} as FigureView" in code and f"{plotly_name}.default.newPlot(" in code
    assert patch_plotly_widget_code("export{A as FigureModel};") is None
    assert patch_plotly_widget_code("perform_render(){P.default.newPlot(el)} export{V as FigureView};").endswith("})();\n")


def test_the_view_width_the_browser_reports_is_a_synced_setting():
    fig = LiveFigure()
    assert fig._view_width is None and "_view_width" in fig.get_state()
    fig._view_width = 640.0
    assert fig.get_state("_view_width") == {"_view_width": 640.0}


def test_a_drawn_view_asking_for_the_figure_gets_it_as_it_is_now():
    import json

    from clipsurgery_widgets.widgets.plotly_frontend import FIGURE_REPLY, FIGURE_REQUEST

    fig, sent = LiveFigure([go.Heatmap(z=None, name="heat")]), []
    fig.send = lambda content, buffers=None: sent.append(content)
    fig.data[0].z = np.arange(6.0).reshape(2, 3)  # sent to the page as a restyle, which a view may miss
    fig._handle_custom_msg({"type": FIGURE_REQUEST, "view": "v1"}, [])
    [reply] = sent
    assert reply["type"] == FIGURE_REPLY and reply["view"] == "v1"
    trace = json.loads(reply["figure"])["data"][0]
    assert trace["name"] == "heat" and trace["z"] == [[0, 1, 2], [3, 4, 5]]  # plain lists, as the widget sends


def test_what_the_page_reports_back_never_deletes_the_figures_data():
    # The page reports computed values for a trace it drew; plotly's own FigureWidget then deletes
    # properties it holds as well (here z), from the figure and from the page.
    def report(fig):
        fig._js2py_traceDeltas = {"trace_deltas": [{"uid": fig.data[0].uid, "z": [[0.0, 1.0], [2.0, 3.0]],
                                                    "zmin": 0.0}],
                                  "trace_edit_id": fig._last_trace_edit_id}

    plain = go.FigureWidget([go.Heatmap(z=np.arange(4.0).reshape(2, 2))])
    report(plain)
    assert "z" not in plain._data[0]  # the control: plotly's own widget loses its data

    fig = LiveFigure([go.Heatmap(z=np.arange(4.0).reshape(2, 2))])
    report(fig)
    assert np.asarray(fig._data[0]["z"]).sum() == 6 and np.asarray(fig.get_state()["_widget_data"][0]["z"]).sum() == 6
    assert fig._js2py_traceDeltas is None and not fig._trace_edit_in_process
