"""Segment Anything refinement: the refiner session (embedding, prompts, undo/redo, instances),
SAM models and checkpoint downloads, mask export, and CLIP's absent-label check. See
docs/algorithms.md, "Points for SAM".
"""
from .downloads import SAM_CHECKPOINTS, download_checkpoint
from .export import mask_to_polygons, mask_to_rle, rle_to_mask, save_mask, save_prompts
from .instances import InstanceMasks
from .models import build_tiny_sam
from .presence import DEFAULT_ABSENT_BELOW, DEFAULT_COMPARISON, LabelPresence, label_presence
from .refiner import SamRefiner, load_sam_from_env
from .results import SamResult

__all__ = ["SamRefiner", "load_sam_from_env", "SamResult", "InstanceMasks", "build_tiny_sam", "SAM_CHECKPOINTS",
           "download_checkpoint", "mask_to_rle", "rle_to_mask", "mask_to_polygons", "save_mask", "save_prompts",
           "LabelPresence", "label_presence", "DEFAULT_ABSENT_BELOW", "DEFAULT_COMPARISON"]
