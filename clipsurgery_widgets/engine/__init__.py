"""The engine: torch and numpy only (never ipywidgets or plotly).

Stable public names, used by notebooks, widgets and users' scripts.
"""
from .errors import (CheckpointError, ClipSurgeryError, ImageInputError, ModelLoadError, TextInputError,
                     UnsupportedModelError)
from .images import load_image, preprocess, sample_image
from .loading import LoadedModel, build_tiny_model, load_model, load_model_from_env, wrap_model

__all__ = [
    "CheckpointError", "ClipSurgeryError", "ImageInputError", "ModelLoadError", "TextInputError",
    "UnsupportedModelError", "load_image", "preprocess", "sample_image", "LoadedModel",
    "build_tiny_model", "load_model", "load_model_from_env", "wrap_model",
]
