"""Small pieces the explainability, multi-label, ImageNet-segmentation and ablation tasks share."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ...engine.errors import ClipSurgeryError
from ...engine.explainer import Explainer, canonical_method
from ...engine.images import load_image
from .base import SkipItem


def check_unused(task: str, settings: dict[str, Any]) -> None:
    """Refuse settings a task does not use (None values are 'not given' and pass)."""
    given = sorted(k for k, v in settings.items() if v is not None)
    if given:
        raise ValueError(f"The {task} task does not use the setting(s) {', '.join(given)}; leave them out.")


def given_methods(methods: Sequence[str] | str | None) -> list[str] | None:
    """The method list as given (a list or "a,b"), or None when absent or empty."""
    if methods is None:
        return None
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m).strip() for m in methods]
    names = [n for n in names if n]
    return names or None


def method_names(methods: Sequence[str] | str | None, default: Sequence[str]) -> list[str]:
    """Canonical dense-method names ("surgery" -> "clip_surgery"), in order, without repeats."""
    if methods is None:
        methods = list(default)
    elif isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    names = list(dict.fromkeys(canonical_method(m) for m in methods))
    if not names:
        raise ValueError("No method given: pass e.g. methods=['clip_surgery', 'raw'].")
    return names


def explainer_for(model: Any) -> Explainer:
    """An Explainer over the worker's model: label features cached on disk, one image's tokens in memory."""
    return model if isinstance(model, Explainer) else Explainer(model, max_cached_images=1)


def native_size(explainer: Explainer, size: int | Sequence[int] | None) -> int | tuple[int, int]:
    """The model input size: the given one, else the model's own (224 for ViT-B/16)."""
    if size is not None:
        return int(size) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    native = getattr(explainer.model, "image_size", None) or 224
    return tuple(int(s) for s in native) if isinstance(native, (tuple, list)) else int(native)


def read_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] of an image file, or SkipItem naming the file when it cannot be read."""
    try:
        return load_image(str(path))
    except (ClipSurgeryError, OSError, ValueError) as exc:
        raise SkipItem(f"unreadable image {Path(path).name}: {exc}") from None


def stack_items(stats: Iterable[dict[str, np.ndarray]], name: str) -> np.ndarray:
    """One stat of every item, stacked in item order (the exact merge of per-item rows)."""
    return np.stack([np.asarray(s[name]) for s in stats])
