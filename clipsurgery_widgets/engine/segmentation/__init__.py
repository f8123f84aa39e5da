"""Open-vocabulary semantic segmentation with dense CLIP methods (SCLIP / NACLIP protocol).

`segment(model, image, class_names, method)` labels every pixel of one image; the pieces are
separate modules so each step of docs/algorithms.md#segmentation-inference has one home:

- `classes`: class names, synonyms, the eight benchmark class lists (`benchmark_classes`).
- `resize`: the keep-ratio resize and mean/std normalisation of an image.
- `windows`: the sliding-window grid and the count-averaged cosine maps.
- `pamr`: pixel-adaptive mask refinement (docs/algorithms.md#pamr).
- `scores`: softmax over names, synonyms by max, area rule, labels.
- `inputs`: checks of the model, image and settings.
- `inference`: `segment`, `class_features` (cache text features across images), `Segmentation`.
"""
from .classes import BENCHMARKS, benchmark_classes, parse_class_names, read_class_file
from .inference import (SEGMENTATION_TEMPLATES, ClassFeatures, Segmentation, class_features, segment)
from .pamr import pamr

__all__ = [
    "segment", "Segmentation", "class_features", "ClassFeatures", "SEGMENTATION_TEMPLATES",
    "benchmark_classes", "read_class_file", "parse_class_names", "BENCHMARKS", "pamr",
]
