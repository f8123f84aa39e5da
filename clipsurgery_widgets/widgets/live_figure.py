"""LiveFigure: a plotly FigureWidget that a front end attaching later sees in its current state.

plotly copies a figure's data and layout into the widget state only when the figure is first
displayed; every later change travels as a one-off restyle/relayout message. A front end that
attaches afterwards (page reload, a reopened notebook whose kernel still runs, a second view of the
same widget) asks the kernel for the full state and would be given the figure as first displayed:
the wrong panels, leftover traces, stale titles. LiveFigure refreshes those two state entries at
the moment a full state is asked for, so every view starts from what the kernel holds now.
"""
from __future__ import annotations

from copy import deepcopy
from typing import Any

import plotly.graph_objects as go


class LiveFigure(go.FigureWidget):
    """``go.FigureWidget`` whose full widget state always carries the current data and layout.

    Use it everywhere a widget would create a ``go.FigureWidget``; it takes the same arguments.
    """

    def get_state(self, key: Any = None, drop_defaults: bool = False) -> dict:
        # (plotly builds the figure after the widget has opened, hence the check for its data.)
        if key is None and "_data" in self.__dict__:
            # A full state is asked for only when a front end (re)attaches; single-trait updates
            # (key given) are the incremental messages and stay cheap. Writing the trait values
            # directly keeps this from echoing a change message to views already up to date.
            self._trait_values["_widget_data"] = deepcopy(self._data)
            self._trait_values["_widget_layout"] = deepcopy(self._layout_obj._props)
        return super().get_state(key, drop_defaults)
