"""The engine: torch and numpy only (never ipywidgets or plotly).

Stable public names, used by notebooks, widgets and users' scripts.
"""
from .errors import (CheckpointError, ClipSurgeryError, ImageInputError, ModelLoadError, TextInputError,
                     UnsupportedModelError)
from .explainer import Explainer
from .images import load_image, preprocess, sample_image
from .loading import LoadedModel, build_tiny_model, load_model, load_model_from_env, wrap_model
from .maps import combine_targets, map_to_points, overlay, similarity_maps
from .results import Explanation, ImageTokens, MapSet
from .surgery import feature_surgery
from .text import TEMPLATES, encode_texts
from .towers import encode_image_tokens

__all__ = [
    # loading and inputs
    "load_model", "load_model_from_env", "wrap_model", "build_tiny_model", "LoadedModel",
    "load_image", "preprocess", "sample_image",
    # CLIP Surgery
    "encode_image_tokens", "TEMPLATES", "encode_texts", "feature_surgery", "similarity_maps",
    "map_to_points", "combine_targets", "overlay", "Explainer", "Explanation", "ImageTokens", "MapSet",
    # errors
    "ClipSurgeryError", "CheckpointError", "ImageInputError", "ModelLoadError", "TextInputError",
    "UnsupportedModelError",
]
