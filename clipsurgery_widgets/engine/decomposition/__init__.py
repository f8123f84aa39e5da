"""Text-based decomposition of the image representation (Gandelsman et al.): per-term contributions
(`terms`), the resumable pass over an image set (`dataset_pass`), TEXTSPAN (`textspan`) and mean
ablation (`ablation`). See docs/algorithms.md, "Text-based decomposition".
"""
from .ablation import (
           Ablation,
           evaluate_ablation,
           folder_ablation,
           labelled_folder,
           zero_shot_accuracy,
)
from .dataset_pass import PassInterrupted, decompose_images
from .terms import Decomposition, decompose, spatial_maps
from .textspan import load_text_pool, text_span, text_span_heads

__all__ = ["Decomposition", "decompose", "spatial_maps", "decompose_images", "PassInterrupted", "text_span",
           "text_span_heads", "load_text_pool", "Ablation", "evaluate_ablation", "folder_ablation",
           "labelled_folder", "zero_shot_accuracy"]
