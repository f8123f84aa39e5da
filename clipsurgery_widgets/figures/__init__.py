"""Static matplotlib figures, one module per kind, for papers, slides and the command line.

Figures receive numpy arrays and engine results and draw them; they compute nothing. `style` holds
the colours shared with the live widgets; `output` encodes and saves figures.
"""
from .heatmap import (METHOD_TITLES, explanation_grid, label_grid, overlay_figure, segmentation_figure)
from .output import FORMATS, figure_bytes, register_notebook_display, save_figure
from .style import label_colors

__all__ = ["explanation_grid", "label_grid", "overlay_figure", "segmentation_figure", "label_colors", "figure_bytes",
           "save_figure", "register_notebook_display", "METHOD_TITLES", "FORMATS"]
