"""Checks and conversions of segmentation inputs: the model, the image and the numeric settings.

Every check raises a ValueError-based error that names the bad value and the fix.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import ImageInputError, UnsupportedModelError
from ..images import load_image
from ..loading import OPENAI_MEAN, OPENAI_STD, tower_family
from .pamr import check_dilations
from .resize import prepare_rgb


@dataclass(frozen=True)
class ModelParts:
    """What segmentation needs from a LoadedModel or a bare open_clip CLIP."""

    clip: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    patch_size: int
    total_blocks: int | None  # ViT blocks; None for a ResNet
    device: torch.device
    dtype: torch.dtype


def model_parts(model: Any) -> ModelParts:
    """Unwrap a LoadedModel (its mean/std) or a bare CLIP (OpenAI mean/std)."""
    clip = getattr(model, "model", model)
    visual = getattr(clip, "visual", None)
    family = tower_family(visual) if isinstance(visual, nn.Module) else None
    if family is None:
        raise UnsupportedModelError(f"segment needs an open_clip CLIP model with a ViT or ModifiedResNet image "
                                    f"tower (got {type(clip).__name__}); load one with load_model('ViT-B-16').")
    is_loaded = clip is not model
    mean = tuple(model.mean) if is_loaded else OPENAI_MEAN
    std = tuple(model.std) if is_loaded else OPENAI_STD
    patch = int(model.patch_size) if is_loaded else (int(visual.patch_size[0]) if family == "vit" else 32)
    blocks = len(visual.transformer.resblocks) if family == "vit" else None
    param = next(clip.parameters())
    return ModelParts(clip=clip, mean=mean, std=std, patch_size=patch, total_blocks=blocks,
                      device=param.device, dtype=param.dtype)


def default_tokenizer(model: Any, clip: nn.Module) -> Callable[..., torch.Tensor]:
    """The LoadedModel's tokenizer, else open_clip's OpenAI BPE tokenizer at the model's context length."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    import open_clip

    return open_clip.SimpleTokenizer(context_length=int(getattr(clip, "context_length", 77)))


def image_pixels(image: Any, parts: ModelParts, short_side: int | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Image input -> (pixels [1, 3, h, w] on the model's device and dtype, original size (H, W)).

    A 4-D float tensor [1, 3, h, w] is taken as preprocessed pixels, as is; anything else goes
    through load_image, the keep-ratio resize and the model's mean/std.
    """
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        if image.shape[0] != 1 or image.shape[1] != 3 or not image.is_floating_point():
            raise ImageInputError(f"A 4-D tensor is used as preprocessed pixels and must be float [1, 3, h, w]; got "
                                  f"{image.dtype} {tuple(image.shape)}. Segment one image at a time, or pass the "
                                  f"image as [H, W, 3] to have it resized and normalised.")
        if short_side is not None:
            raise ValueError(f"short_side={short_side} resizes images, but a 4-D tensor is used as is; resize it "
                             f"yourself, or pass the image as [H, W, 3] uint8 / a file / PIL image.")
        pixels = image.detach()
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    else:
        rgb = load_image(image)
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        pixels = prepare_rgb(rgb, short_side, parts.mean, parts.std)
    if min(pixels.shape[-2:]) < parts.patch_size:
        raise ImageInputError(f"The input to the model is {pixels.shape[-2]}x{pixels.shape[-1]} pixels, smaller than "
                              f"one {parts.patch_size}-pixel patch; use a larger image or a larger short_side.")
    return pixels.to(device=parts.device, dtype=parts.dtype), size


@dataclass(frozen=True)
class Settings:
    """Validated numeric settings of segment."""

    crop: int | None
    stride: int | None
    short_side: int | None
    out_size: tuple[int, int] | None
    logit_scale: float
    prob_thd: float
    area_thd: float | None
    pamr_steps: int
    pamr_dilations: tuple[int, ...]
    windows_batch: int


def check_settings(patch_size: int, crop: Any, stride: Any, short_side: Any, out_size: Any, logit_scale: Any,
                   prob_thd: Any, area_thd: Any, pamr_steps: Any, pamr_dilations: Any,
                   windows_batch: Any) -> Settings:
    """Validate segment's keyword settings (see :func:`segment` for their meaning)."""
    crop_v = _int_or_none(crop, "crop", "a window size in pixels, or 0/None for the whole image", minimum=0)
    stride_v = None
    if crop_v:
        if crop_v < patch_size:
            raise ValueError(f"crop={crop_v} is smaller than one {patch_size}-pixel patch; use a crop of at least "
                             f"{patch_size} (e.g. 224), or crop=0 for one whole-image window.")
        stride_v = _int_or_none(stride, "stride", "the step between windows in pixels, e.g. 112", minimum=1)
        if stride_v is None:
            raise ValueError("stride is needed with a crop: pass the step between windows in pixels (e.g. 112), or "
                             "crop=0 for one whole-image window.")
        if stride_v > crop_v:
            raise ValueError(f"stride={stride_v} is larger than crop={crop_v}, so pixels between windows would get no "
                             f"prediction; use a stride no larger than the crop.")
    else:
        crop_v = None
    side = _int_or_none(short_side, "short_side", "the short side in pixels to resize to, e.g. 336", minimum=1)
    return Settings(crop=crop_v, stride=stride_v, short_side=side, out_size=_out_size(out_size),
                    logit_scale=_positive_real(logit_scale, "logit_scale", "e.g. 40 (NACLIP) or 65 (SCLIP on VOC21)"),
                    prob_thd=_fraction(prob_thd, "prob_thd"),
                    area_thd=None if area_thd is None else _fraction(area_thd, "area_thd"),
                    pamr_steps=_int_or_none(pamr_steps, "pamr_steps", "0 (off) or e.g. 10", minimum=0, allow_none=False),
                    pamr_dilations=check_dilations(pamr_dilations),
                    windows_batch=_int_or_none(windows_batch, "windows_batch", "windows per forward pass, e.g. 8",
                                               minimum=1, allow_none=False))


def _int_or_none(value: Any, name: str, meaning: str, minimum: int, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} is not valid; pass an integer >= {minimum}: {meaning}.")
    return int(value)


def _positive_real(value: Any, name: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} is not valid; pass a positive number, {example}.")
    return float(value)


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r} is not valid; pass a number from 0 to 1 (a fraction), e.g. 0.1.")
    return float(value)


def _out_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    ok = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value))
    if not ok:
        raise ValueError(f"out_size={value!r} is not valid; pass (height, width) as two positive integers, or None "
                         f"for the original image size.")
    return int(value[0]), int(value[1])
