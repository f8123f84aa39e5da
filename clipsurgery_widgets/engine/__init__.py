"""The engine: torch and numpy only (never ipywidgets or plotly).

Stable public names, used by notebooks, widgets and users' scripts.
"""
from .attention import (
                        AttentionCapture,
                        AttentionInputError,
                        AttentionRows,
                        AttentionStats,
                        attention_layout,
                        attention_rows,
                        capture_attention,
)
from .attribution import (
                        TokenAttribution,
                        caption_matches,
                        token_attributions,
                        tokenize_caption,
)
from .decomposition.ablation import (
                        Ablation,
                        evaluate_ablation,
                        folder_ablation,
                        labelled_folder,
                        zero_shot_accuracy,
)
from .decomposition.dataset_pass import PassInterrupted, decompose_images
from .decomposition.terms import Decomposition, decompose, spatial_maps
from .decomposition.textspan import load_text_pool, text_span, text_span_heads
from .errors import (
                        CheckpointError,
                        ClipSurgeryError,
                        ImageInputError,
                        ModelLoadError,
                        TextInputError,
                        UnsupportedModelError,
)
from .explainer import Explainer
from .images import load_image, preprocess, sample_image
from .loading import (
                        LoadedModel,
                        build_tiny_model,
                        load_model,
                        load_model_from_env,
                        wrap_model,
)
from .maps import combine_targets, map_to_points, overlay, similarity_maps
from .results import Explanation, ImageTokens, MapSet
from .sam.downloads import SAM_CHECKPOINTS, download_checkpoint
from .sam.export import (
                        mask_to_polygons,
                        mask_to_rle,
                        rle_to_mask,
                        save_mask,
                        save_prompts,
)
from .sam.instances import InstanceMasks
from .sam.models import build_tiny_sam
from .sam.refiner import SamRefiner, load_sam_from_env
from .sam.results import SamResult
from .surgery import feature_surgery
from .text.encoding import TEMPLATES, encode_texts
from .towers.encode import encode_image_tokens

__all__ = [
    # loading and inputs
    "load_model", "load_model_from_env", "wrap_model", "build_tiny_model", "LoadedModel",
    "load_image", "preprocess", "sample_image",
    # CLIP Surgery
    "encode_image_tokens", "TEMPLATES", "encode_texts", "feature_surgery", "similarity_maps",
    "map_to_points", "combine_targets", "overlay", "Explainer", "Explanation", "ImageTokens", "MapSet",
    # image -> text tokens (SPEC 7)
    "token_attributions", "caption_matches", "tokenize_caption", "TokenAttribution",
    # q-k versus v-v attention (SPEC 8)
    "attention_rows", "capture_attention", "attention_layout", "AttentionCapture", "AttentionRows",
    "AttentionStats", "AttentionInputError",
    # text-based decomposition (SPEC 9)
    "decompose", "Decomposition", "spatial_maps", "decompose_images", "PassInterrupted", "text_span",
    "text_span_heads", "load_text_pool", "Ablation", "evaluate_ablation", "folder_ablation", "labelled_folder",
    "zero_shot_accuracy",
    # Segment Anything refinement
    "SamRefiner", "SamResult", "InstanceMasks", "build_tiny_sam", "load_sam_from_env", "SAM_CHECKPOINTS",
    "download_checkpoint", "mask_to_rle", "rle_to_mask", "mask_to_polygons", "save_mask", "save_prompts",
    # errors
    "ClipSurgeryError", "CheckpointError", "ImageInputError", "ModelLoadError", "TextInputError",
    "UnsupportedModelError",
]
