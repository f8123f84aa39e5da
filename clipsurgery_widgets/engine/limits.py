"""Size limits of one explanation: how many patch tokens a forward pass may have, and a memory estimate.

Self-attention costs time quadratic in the token count, so an input size typed by mistake (say
10000) would run for hours. :func:`check_token_budget` refuses inputs above ``max_tokens`` patch
tokens (default :data:`MAX_TOKENS`) before anything is computed; large photos are better served by
sliding windows (:func:`clipsurgery_widgets.engine.segmentation.segment`, ``crop``/``stride``),
which keep each pass at the model's native size.
"""
from __future__ import annotations

import os
from typing import Any

from .errors import ClipSurgeryError

# 4,096 patch tokens: a 1024 x 1024 input at patch 16 (ViT-B/16), 2048 x 2048 at patch 32 (RN50 grid).
MAX_TOKENS = 4096

_FLOAT = 4  # bytes per float32 value
# Live float32 buffers per token and channel while one block runs (residual stream, LayerNorm,
# q/k/v and the v-v copies of the surgery path, the MLP's 4x hidden layer), rounded up.
_BLOCK_BUFFERS = 24


class InputSizeError(ClipSurgeryError, ValueError):
    """An input size whose token count exceeds the limit."""


def token_count(hw: tuple[int, int], patch_size: int) -> int:
    """Patch tokens of an (S_h, S_w) input: (S_h / p) * (S_w / p)."""
    return (int(hw[0]) // patch_size) * (int(hw[1]) // patch_size)


def estimate_explain_bytes(model: Any, hw: tuple[int, int], num_labels: int, num_methods: int = 1) -> int:
    """Rough peak bytes an explanation adds: one block's activations plus the scores kept.

    Args:
        model: a LoadedModel (its image tower's width is read when present).
        hw: (S_h, S_w) input size; num_labels: T; num_methods: methods computed in the pass.

    Returns:
        bytes ~ 4 * n * (24 * width + 2 * T * methods), n = 1 + tokens. Attention itself is computed
        blockwise by PyTorch's fused kernel, so no [n, n] matrix is counted. An estimate for
        refusing hopeless inputs early, not a measurement.
    """
    tokens = 1 + token_count(hw, int(model.patch_size))
    width = _tower_width(model)
    return _FLOAT * tokens * (_BLOCK_BUFFERS * width + 2 * max(1, num_labels) * max(1, num_methods))


def check_token_budget(model: Any, hw: tuple[int, int], num_labels: int, num_methods: int = 1,
                       max_tokens: int | None = None) -> int:
    """The token count of ``hw``, or an InputSizeError naming the limit, the estimate and the fixes."""
    limit = MAX_TOKENS if max_tokens is None else max_tokens
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"max_tokens must be a positive integer, not {max_tokens!r}.")
    patch = int(model.patch_size)
    count = token_count(hw, patch)
    if count <= limit:
        return count
    need = estimate_explain_bytes(model, hw, num_labels, num_methods)
    largest = int(limit ** 0.5) * patch
    raise InputSizeError(
        f"Input size {hw[0]}x{hw[1]} gives {count:,} patch tokens, more than the limit of {limit:,} "
        f"(max_tokens); it would need about {format_bytes(need)} and a long time (attention grows with the "
        f"square of the tokens). Use a smaller size (up to {largest}x{largest} here), explain a large photo "
        f"in sliding windows with segment(..., crop=224, stride=112), or raise the limit with "
        f"explain(..., max_tokens={count}).")


def check_memory(model: Any, hw: tuple[int, int], num_labels: int, num_methods: int = 1,
                 max_tokens: int | None = None) -> int:
    """:func:`check_token_budget`, then refuse when the estimate exceeds the memory the OS has left.

    Returns the estimate in bytes.
    """
    check_token_budget(model, hw, num_labels, num_methods, max_tokens)
    need = estimate_explain_bytes(model, hw, num_labels, num_methods)
    free = available_bytes()
    if free is not None and need > free:
        raise InputSizeError(f"Explaining {num_labels:,} label(s) at {hw[0]}x{hw[1]} needs about {format_bytes(need)}, "
                             f"more than the {format_bytes(free)} of memory available; use a smaller size or fewer "
                             f"labels at once.")
    return need


def available_bytes() -> int | None:
    """Memory the OS can still give this process (Linux/macOS sysconf), or None when unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(count: float) -> str:
    """1.5e9 -> "1.4 GB"; 3e6 -> "2.9 MB" (binary units)."""
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count / (1 << 20):.2f} MB"


def _tower_width(model: Any) -> int:
    visual = getattr(getattr(model, "model", model), "visual", None)
    conv = getattr(visual, "conv1", None)
    channels = getattr(conv, "out_channels", None)
    if getattr(visual, "transformer", None) is not None and channels:
        return int(channels)
    return int(getattr(visual, "output_dim", 0) or 2048)  # ModifiedResNet: its widest feature map
