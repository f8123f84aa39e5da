"""Text-based decomposition of the image representation (Gandelsman et al.): per-term contributions
(`terms`), the resumable pass over an image set (`dataset_pass`), TEXTSPAN (`textspan`), mean
ablation (`ablation`) and the session that keeps an image set's results for interactive questions
(`session`). See docs/algorithms.md#text-based-decomposition.
"""
from .ablation import (Ablation, DecompositionInputError, evaluate_ablation, folder_ablation, labelled_folder,
                       zero_shot_accuracy)
from .dataset_pass import ImageSetTerms, PassInterrupted, decompose_images
from .session import (DecompositionNotReady, DecompositionSession, ImageContributions, Prediction)
from .terms import Decomposition, decompose, spatial_maps
from .textspan import load_text_pool, text_span, text_span_heads

__all__ = ["Decomposition", "decompose", "spatial_maps", "decompose_images", "PassInterrupted", "ImageSetTerms",
           "text_span", "text_span_heads", "load_text_pool", "Ablation", "evaluate_ablation", "folder_ablation",
           "labelled_folder", "zero_shot_accuracy", "DecompositionInputError", "DecompositionSession",
           "DecompositionNotReady", "ImageContributions", "Prediction"]
