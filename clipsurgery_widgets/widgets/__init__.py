"""Interactive widgets (ipywidgets + plotly) on top of the engine: one file per widget."""
from .attention import AttentionExplorer
from .base import ExplorerWidget
from .decomposition import DecompositionExplorer
from .heatmap import HeatmapExplorer
from .sam import SamWidget
from .side_by_side import SideBySide
from .tokens import TokenExplorer

__all__ = ["ExplorerWidget", "HeatmapExplorer", "TokenExplorer", "AttentionExplorer", "SideBySide",
           "SamWidget", "DecompositionExplorer"]
