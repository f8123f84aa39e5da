"""Static matplotlib figures, one module per kind, for papers, slides and the command line.

Figures receive numpy arrays and engine results and draw them; they compute nothing. `style` holds
the colours shared with the live widgets; `output` encodes and saves figures;
`layout` sizes any of them for a paper column or page.
"""
from .heatmap import (METHOD_TITLES, explanation_grid, label_grid, overlay_figure, segmentation_figure)
from .layout import LAYOUT_WIDTHS, apply_layout, paper_size
from .output import FORMATS, figure_bytes, register_notebook_display, save_figure, static_png, static_png_metadata
from .style import label_colors

__all__ = ["explanation_grid", "label_grid", "overlay_figure", "segmentation_figure", "label_colors", "figure_bytes",
           "save_figure", "register_notebook_display", "METHOD_TITLES", "FORMATS", "apply_layout", "paper_size",
           "LAYOUT_WIDTHS", "static_png", "static_png_metadata"]
