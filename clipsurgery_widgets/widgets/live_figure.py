"""LiveFigure: a plotly FigureWidget that a front end attaching later sees in its current state.

plotly copies a figure's data and layout into the widget state only when the figure is first
displayed; every later change travels as a one-off restyle/relayout message. A front end that
attaches afterwards (page reload, a reopened notebook whose kernel still runs, a second view of the
same widget) asks the kernel for the full state and would be given the figure as first displayed:
the wrong panels, leftover traces, stale titles. LiveFigure refreshes those two state entries at
the moment a full state is asked for, so every view starts from what the kernel holds now.

Its front-end code is shared, too. plotly's FigureWidget ships its whole front end (about 5 MB of
JavaScript with plotly.js inside) in every figure's state, and anywidget evaluates it once per
figure and gives up on a figure whose code is not running within 2 s ("[anywidget] Failed to
initialize model."). On a page reload every figure of the notebook arrives at once, so on a busy
machine some of them stay blank. A LiveFigure's state carries a small loader instead
(:data:`LOADER_ESM`): the first figure of a page asks its kernel for plotly's code, every other
figure of that page waits for the same copy, and restyle messages that arrive meanwhile are
applied, in order, once it is there.
"""
from __future__ import annotations

import json
from copy import deepcopy
from typing import Any

import plotly
import plotly.graph_objects as go
import plotly.utils
import traitlets

from .plotly_frontend import (BUNDLE_REPLY, BUNDLE_REQUEST, FIGURE_REPLY, FIGURE_REQUEST, LOADER_ESM,
                              plotly_widget_code)

class LiveFigure(go.FigureWidget):
    """``go.FigureWidget`` whose full widget state always carries the current data and layout.

    Use it everywhere a widget would create a ``go.FigureWidget``; it takes the same arguments.
    """

    _esm = LOADER_ESM % {"version": plotly.__version__, "request": BUNDLE_REQUEST, "reply": BUNDLE_REPLY}
    #: the width in pixels the browser last drew the figure at (None before any view); views follow
    #: their container's width, so a widget can observe this to lay the figure out for it.
    _view_width = traitlets.Float(None, allow_none=True).tag(sync=True)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.on_msg(_answer_page_request)

    # After drawing, plotly's page reports the values it computed ("deltas") and plotly's Python
    # side stores them as defaults, then deletes every property present in both from the figure
    # and from the page ("overlapping properties"). Arrays sent from numpy (heat maps' z, hover
    # texts) came back that way and vanished from the figure: blank panels, lost hover texts, and
    # a figure without them sent to the next front end. Nothing here reads those defaults, so the
    # reports only close the edit they answer.
    @traitlets.observe("_js2py_traceDeltas")
    def _handler_js2py_traceDeltas(self, change: dict) -> None:
        if change["new"]:
            self._trace_edit_in_process = False
            self._js2py_traceDeltas = None

    @traitlets.observe("_js2py_layoutDelta")
    def _handler_js2py_layoutDelta(self, change: dict) -> None:
        if change["new"]:
            self._layout_edit_in_process = False
            self._js2py_layoutDelta = None

    def get_state(self, key: Any = None, drop_defaults: bool = False) -> dict:
        # (plotly builds the figure after the widget has opened, hence the check for its data.)
        if key is None and "_data" in self.__dict__:
            # A full state is asked for only when a front end (re)attaches; single-trait updates
            # (key given) are the incremental messages and stay cheap. Writing the trait values
            # directly keeps this from echoing a change message to views already up to date.
            self._trait_values["_widget_data"] = deepcopy(self._data)
            self._trait_values["_widget_layout"] = deepcopy(self._layout_obj._props)
        return super().get_state(key, drop_defaults)


def _answer_page_request(widget: LiveFigure, content: Any, buffers: Any) -> None:
    """Requests from the page: plotly's widget code (a page's first figure), or the figure as it is
    now (each view, once drawn: see plotly_frontend.py)."""
    if not isinstance(content, dict):
        return
    if content.get("type") == BUNDLE_REQUEST:
        widget.send({"type": BUNDLE_REPLY, "esm": plotly_widget_code()})
    elif content.get("type") == FIGURE_REQUEST:
        # Arrays as plain JSON lists, as the widget's own messages deliver them (not base64 specs).
        figure = json.dumps({"data": widget._data, "layout": widget._layout}, cls=plotly.utils.PlotlyJSONEncoder)
        widget.send({"type": FIGURE_REPLY, "view": content.get("view"), "figure": figure})
