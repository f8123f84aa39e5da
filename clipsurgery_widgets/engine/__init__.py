"""The engine: torch and numpy only (never ipywidgets or plotly).

Stable public names, used by notebooks, widgets and users' scripts.
"""
from .attention import (AttentionCapture, AttentionInputError, AttentionRows, AttentionStats, attention_layout,
                        attention_rows, capture_attention)
from .attribution import (TokenAttribution, caption_matches, token_attributions, tokenize_caption)
from .decomposition.ablation import (Ablation, evaluate_ablation, folder_ablation, labelled_folder, zero_shot_accuracy)
from .decomposition.dataset_pass import PassInterrupted, decompose_images
from .decomposition.session import DecompositionSession
from .decomposition.terms import Decomposition, decompose, spatial_maps
from .decomposition.textspan import load_text_pool, text_span, text_span_heads
from .errors import (CheckpointError, ClipSurgeryError, ImageInputError, MethodError, ModelLoadError, TextInputError,
                     UnsupportedModelError)
from .explainer import Explainer
from .precision import PRECISIONS, using_precision
from .images import load_image, preprocess, sample_image
from .loading import (LoadedModel, build_tiny_model, load_model, load_model_from_env, wrap_model)
from .maps import combine_targets, map_to_points, overlay, similarity_maps
from .method_rows import (KIND_METHODS, KIND_SCALES, METHOD_KINDS, KindAttention, KindRow, check_kinds,
                          image_kind_attention, kind_attention, method_rows)
from .results import Explanation, ImageTokens, MapSet
from .sam.downloads import SAM_CHECKPOINTS, download_checkpoint
from .sam.export import (mask_to_polygons, mask_to_rle, rle_to_mask, save_mask, save_prompts)
from .sam.instances import InstanceMasks
from .sam.models import build_tiny_sam
from .sam.refiner import SamRefiner, load_sam_from_env
from .sam.results import SamResult
from .segmentation import (BENCHMARKS, ClassFeatures, Segmentation, benchmark_classes, class_features,
                           read_class_file, segment)
from .surgery import feature_surgery
from .text.encoding import TEMPLATES, encode_texts
from .towers.dense import METHODS, DenseTokens, encode_dense, encode_dense_many
from .towers.dense_attention import MethodAttention, method_attention
from .towers.encode import encode_image_tokens

__all__ = [
    # loading and inputs
    "load_model", "load_model_from_env", "wrap_model", "build_tiny_model", "LoadedModel",
    "load_image", "preprocess", "sample_image", "PRECISIONS", "using_precision",
    # CLIP Surgery
    "encode_image_tokens", "TEMPLATES", "encode_texts", "feature_surgery", "similarity_maps",
    "map_to_points", "combine_targets", "overlay", "Explainer", "Explanation", "ImageTokens", "MapSet",
    # dense methods as variants of one forward pass
    "encode_dense", "encode_dense_many", "METHODS", "DenseTokens", "method_attention", "MethodAttention",
    # image -> text tokens (docs/algorithms.md#token-attribution)
    "token_attributions", "caption_matches", "tokenize_caption", "TokenAttribution",
    # q-k versus v-v attention (docs/algorithms.md#q-k-versus-v-v-attention)
    "attention_rows", "capture_attention", "attention_layout", "AttentionCapture", "AttentionRows",
    "AttentionStats", "AttentionInputError", "kind_attention", "image_kind_attention", "method_rows",
    "KindAttention", "KindRow", "METHOD_KINDS", "KIND_METHODS", "KIND_SCALES", "check_kinds",
    # text-based decomposition (docs/algorithms.md#text-based-decomposition)
    "decompose", "Decomposition", "spatial_maps", "decompose_images", "PassInterrupted", "text_span",
    "text_span_heads", "load_text_pool", "Ablation", "evaluate_ablation", "folder_ablation", "labelled_folder",
    "zero_shot_accuracy", "DecompositionSession",
    # Segment Anything refinement
    "SamRefiner", "SamResult", "InstanceMasks", "build_tiny_sam", "load_sam_from_env", "SAM_CHECKPOINTS",
    "download_checkpoint", "mask_to_rle", "rle_to_mask", "mask_to_polygons", "save_mask", "save_prompts",
    # open-vocabulary segmentation
    "segment", "Segmentation", "class_features", "ClassFeatures", "benchmark_classes", "read_class_file",
    "BENCHMARKS",
    # errors
    "ClipSurgeryError", "CheckpointError", "ImageInputError", "MethodError", "ModelLoadError", "TextInputError",
    "UnsupportedModelError",
]
