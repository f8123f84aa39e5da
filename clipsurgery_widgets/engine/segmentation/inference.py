"""Open-vocabulary semantic segmentation of one image: :func:`segment` and its result.

The protocol of SCLIP and NACLIP (docs/algorithms.md#segmentation-inference): keep-ratio resize,
sliding windows encoded by a dense method, count-averaged cosines with prompt-ensembled name
features, optional PAMR, softmax over all names, synonyms combined by max, area and probability
thresholds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ..errors import TextInputError
from ..precision import Precision
from ..text.encoding import OPENAI_IMAGENET_TEMPLATES, encode_texts
from ..towers.dense import encode_dense
from ..towers.dense_params import resolve_params
from .classes import ClassNames, flatten_classes, parse_class_names
from .inputs import check_settings, default_tokenizer, image_pixels, model_parts
from .pamr import pamr
from .scores import area_rule, class_scores, labels_from
from .windows import sliding_cosines, window_grid

# The default prompts: the 80 OpenAI ImageNet templates (the authors' segmentation setting).
SEGMENTATION_TEMPLATES: tuple[str, ...] = OPENAI_IMAGENET_TEMPLATES


class ClassFeatures(NamedTuple):
    """Text features of every class name, reusable across images (unpacks as a 3-tuple).

    features: float32 G [Q, D], one unit-norm row per name, on the model's device.
    names: the Q names; name_class: the class index of each name.
    """

    features: torch.Tensor
    names: tuple[str, ...]
    name_class: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Result of :func:`segment`; CPU tensors at the output size (H, W).

    labels: int64 [H, W], class per pixel (0 also where no class is confident, see prob_thd).
    probs: float32 [C, H, W], per class the max over its names of the softmax over all names,
        after the area rule (sums to at most 1 per pixel).
    logits: float32 [C, H, W], per class the max over its names of the averaged cosine.
    names: the Q names scored; name_class: the class of each name.
    input_size: (h, w) of the pixels the model saw (after the keep-ratio resize).
    """

    labels: torch.Tensor
    probs: torch.Tensor
    logits: torch.Tensor
    names: tuple[str, ...]
    name_class: tuple[int, ...]
    input_size: tuple[int, int]

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of labels, probs and logits."""
        return int(self.labels.shape[0]), int(self.labels.shape[1])


def class_features(model: Any, class_names: ClassNames, templates: Sequence[str] | str | None = None,
                   tokenizer: Callable[..., torch.Tensor] | None = None, precision: str | None = None) -> ClassFeatures:
    """Prompt-ensembled features of every class name, to cache and pass to :func:`segment`.

    Args:
        model: a LoadedModel or an open_clip CLIP.
        class_names: a benchmark set name (``"voc21"``) or one entry per class (a list of names,
            or a comma-separated string of names).
        templates: prompt templates with ``"{}"``; default the 80 OpenAI ImageNet templates.
        tokenizer: default the LoadedModel's, else open_clip's OpenAI BPE tokenizer.
        precision: as in :func:`segment`.

    Returns:
        ClassFeatures(features G [Q, D], names, name_class): per name, every template filled,
        encoded and L2-normalised, then averaged and L2-normalised. Names of a class are kept
        apart (segment combines them after the softmax).
    """
    names, name_class = flatten_classes(parse_class_names(class_names))
    clip = getattr(model, "model", model)
    tokenizer = tokenizer if tokenizer is not None else default_tokenizer(model, clip)
    templates = SEGMENTATION_TEMPLATES if templates is None else templates
    features = encode_texts(clip, tokenizer, list(names), templates=templates, precision=precision)
    return ClassFeatures(features=features, names=names, name_class=name_class)


def segment(model: Any, image: Any, class_names: ClassNames, method: str = "sclip", *,
            crop: int | None = 224, stride: int | None = 112, short_side: int | None = None,
            out_size: tuple[int, int] | None = None, templates: Sequence[str] | str | None = None,
            tokenizer: Callable[..., torch.Tensor] | None = None, logit_scale: float = 40.0,
            prob_thd: float = 0.0, area_thd: float | None = None, pamr_steps: int = 0,
            pamr_dilations: Sequence[int] = (8, 16), text_features: ClassFeatures | torch.Tensor | None = None,
            windows_batch: int = 8, precision: str | None = None, **method_params: Any) -> Segmentation:
    """Label every pixel of one image with one of the given classes.

    Args:
        model: a LoadedModel, or a bare open_clip CLIP (OpenAI mean/std then). Never modified.
        image: anything load_image accepts (path, PIL, array, tensor [H, W, 3] / [3, H, W]), or
            a 4-D float tensor [1, 3, h, w] of preprocessed pixels, used as is.
        class_names: a benchmark set name (``"voc21"``, see BENCHMARKS) or one entry per class,
            class 0 first: a list of names or a comma-separated string of names (synonyms).
        method: the dense method (``"sclip"``, ``"naclip"``, ...; see METHODS); ``method_params``
            (e.g. ``gaussian_std=3.0``) go to it.
        crop, stride: sliding-window size and step in pixels; crop 0 or None encodes the whole
            image as one window.
        short_side: resize the image (keep ratio, long side at most 2048) so its short side has
            this many pixels; None keeps its size. Not allowed with a 4-D tensor.
        out_size: (H, W) of the result; default the original image size.
        templates, tokenizer: text prompts (default the 80 OpenAI ImageNet templates) and tokenizer.
        logit_scale: multiplies the cosines before the softmax over names.
        prob_thd: pixels whose best class probability is below it become class 0.
        area_thd: if set, classes >= 1 winning at most this fraction of the non-class-0 pixels
            get probability 0.
        pamr_steps, pamr_dilations: PAMR refinement of the cosine maps (0 steps: off).
        text_features: precomputed ClassFeatures (or G [Q, D] with unit-norm rows) for these
            class names, e.g. from :func:`class_features`; skips the text encoder.
        windows_batch: windows encoded per forward pass (memory versus speed; same result).
        precision: "fp32" (None: fp32, or an enclosing using_precision block's), "bf16", "fp16"
            (CUDA) or "auto": the image and text towers run under autocast; scores stay float32.

    Returns:
        Segmentation with labels [H, W], probs and logits [C, H, W] on the CPU.
    """
    parts = model_parts(model)
    settings = check_settings(parts.patch_size, crop, stride, short_side, out_size, logit_scale, prob_thd,
                              area_thd, pamr_steps, pamr_dilations, windows_batch)
    classes = parse_class_names(class_names)
    names, name_class = flatten_classes(classes)
    resolve_params(method, method_params, parts.total_blocks)  # fail before any encoding
    pixels, original = image_pixels(image, parts, settings.short_side)  # bad images fail before text encoding
    precision = Precision.resolve(precision, parts.device).name  # fails early (fp16 on a CPU), one for the call
    queries = _queries(model, classes, names, text_features, templates, tokenizer, precision)
    height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
    size = settings.out_size or original

    def encode(window_pixels: torch.Tensor) -> Any:
        return encode_dense(model, window_pixels, method, precision=precision, **method_params)

    with torch.no_grad():
        windows = window_grid(height, width, settings.crop, settings.stride)
        average = sliding_cosines(encode, pixels, queries, windows, parts.patch_size, settings.windows_batch)
        cosines = F.interpolate(average[None], size=size, mode="bilinear", align_corners=False)
        if settings.pamr_steps > 0:
            guide = F.interpolate(pixels.float(), size=size, mode="bilinear", align_corners=False)
            cosines = pamr(guide, cosines, settings.pamr_steps, settings.pamr_dilations)
        cosines = cosines[0]
        probs, logits = class_scores(cosines, name_class, len(classes), settings.logit_scale)
        if settings.area_thd is not None:
            probs = area_rule(probs, settings.area_thd)
        labels = labels_from(probs, settings.prob_thd)
    return Segmentation(labels=labels.cpu(), probs=probs.float().cpu(), logits=logits.float().cpu(),
                        names=names, name_class=name_class, input_size=(height, width))


def _queries(model: Any, classes: list[list[str]], names: tuple[str, ...],
             given: ClassFeatures | torch.Tensor | None, templates: Any, tokenizer: Any, precision: str
             ) -> torch.Tensor:
    """G [Q, D]: the given features after checks, or freshly encoded ones."""
    if given is None:
        return class_features(model, classes, templates=templates, tokenizer=tokenizer, precision=precision).features
    if isinstance(given, ClassFeatures):
        if tuple(given.names) != names:
            raise TextInputError(f"text_features were computed for other names ({len(given.names)} names, first "
                                 f"{list(given.names[:3])}) than class_names ({len(names)} names, first "
                                 f"{list(names[:3])}); recompute them with class_features(model, class_names).")
        given = given.features
    if not isinstance(given, torch.Tensor) or given.dim() != 2 or given.shape[0] != len(names):
        shape = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
        raise TextInputError(f"text_features must be [Q, D] with one row per name (Q = {len(names)} here), not "
                             f"{shape}; compute them with class_features(model, class_names).")
    norms = given.float().norm(dim=-1)
    if not bool(((norms - 1).abs() < 1e-3).all()):
        raise TextInputError("text_features rows must have unit L2 norm (cosines are taken with them); "
                             "normalise them with torch.nn.functional.normalize(features, dim=-1).")
    return given
