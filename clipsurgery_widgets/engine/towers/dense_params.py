"""The dense methods' names, default parameters and parameter checks (docs/algorithms.md#dense-methods).

Every method is a variant of one ViT forward pass; this module only says *which* blocks a method
changes and validates what users pass. The formulas live in :mod:`.dense_attention` (attention
weights) and :mod:`.dense` (streams); the positional tables in :mod:`.pos_tables`.
"""
from __future__ import annotations

import math
import numbers
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import MethodError, UnsupportedModelError
from .pos_tables import POS_RESIZE_MODES

# Defaults are those of the authors' code for ViT-B/16 (docs/algorithms.md#dense-methods).
METHODS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "raw": MappingProxyType({"pos_resize": "bilinear"}),
    "clip_surgery": MappingProxyType({"depth": 6, "pos_resize": "bilinear"}),
    "maskclip": MappingProxyType({"pos_resize": "bicubic-offset"}),
    "sclip": MappingProxyType({"pos_resize": "bicubic-offset"}),
    "clearclip": MappingProxyType({"attention": "qq", "residual": False, "pos_resize": "bicubic-offset"}),
    "naclip": MappingProxyType({"gaussian_std": 5.0, "reduced": True, "pos_resize": "bicubic-offset"}),
    "gem": MappingProxyType({"depth": 6, "iterations": 1, "inv_temperature": None,
                             "pos_resize": "bicubic-aa"}),
})

# Methods that run a second stream over the last `depth` blocks; the others change the last block only.
STREAM_METHODS = ("clip_surgery", "gem")
# Methods whose ResNet version exists (the attention pool, docs/algorithms.md#architecture-surgery-resnet).
RESNET_METHODS = ("raw", "clip_surgery")
CLEARCLIP_ATTENTIONS = ("qq", "kk", "vv", "qk")


def resolve_params(method: str, params: Mapping[str, Any], total_blocks: int | None
                   ) -> Mapping[str, Any]:
    """The method's defaults updated with ``params``, validated; a read-only mapping.

    total_blocks: L for a ViT (depth must be 1..L), None for a ResNet (only raw and clip_surgery
    exist there; depth is then unused and only checked to be a positive integer).
    Raises MethodError for an unknown method/parameter or a bad value, UnsupportedModelError for a
    ViT-only method on a ResNet.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise MethodError(f"Unknown dense method {method!r}: choose one of {', '.join(METHODS)}.")
    defaults = METHODS[method]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise MethodError(f"{method} has no parameter {', '.join(map(repr, unknown))}; its parameters are "
                          f"{', '.join(defaults)} (defaults {dict(defaults)}).")
    resolved = {**defaults, **params}
    if total_blocks is None:
        if method not in RESNET_METHODS:
            raise UnsupportedModelError(f"The dense method {method!r} needs a ViT image tower (it changes "
                                        f"transformer blocks); on a ResNet use 'raw' or 'clip_surgery', or load "
                                        f"a ViT such as ViT-B-16.")
        if resolved["pos_resize"] != "bilinear":
            raise MethodError(f"pos_resize={resolved['pos_resize']!r} is not available for a ResNet: its attention "
                              f"pool's positional table is resized bilinearly; drop the parameter.")
    for name, value in resolved.items():
        _CHECKS[name](method, value, total_blocks)
    return MappingProxyType(resolved)


def first_changed_block(method: str, params: Mapping[str, Any], total_blocks: int) -> int:
    """Index of the first block the method changes (total_blocks for raw: none changed)."""
    if method == "raw":
        return total_blocks
    if method in STREAM_METHODS:
        return total_blocks - params["depth"]
    return total_blocks - 1


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        return None
    return float(value)


def _check_depth(method: str, value: Any, total: int | None) -> None:
    depth = _integer(value)
    upper = total if total is not None else math.inf
    if depth is None or not 1 <= depth <= upper:
        allowed = f"an integer from 1 to {total} (this model's number of blocks)" if total else "a positive integer"
        raise MethodError(f"{method}: depth={value!r} is not valid; choose {allowed}. The default is 6.")


def _check_iterations(method: str, value: Any, total: int | None) -> None:
    if _integer(value) is None or value < 0:
        raise MethodError(f"{method}: iterations={value!r} is not valid; choose an integer >= 0 (default 1).")


def _check_std(method: str, value: Any, total: int | None) -> None:
    std = _real(value)
    if std is None or std < 0:
        raise MethodError(f"{method}: gaussian_std={value!r} is not valid; choose a finite number >= 0 in patch "
                          f"units (0 drops the neighbourhood term; default 5.0).")


def _check_temperature(method: str, value: Any, total: int | None) -> None:
    if value is None:
        return
    t = _real(value)
    if t is None or t <= 0:
        raise MethodError(f"{method}: inv_temperature={value!r} is not valid; choose a finite number > 0, or None "
                          f"for the per-image rule (head-width^-0.5 times the mean ln_1 token norm).")


def _check_flag(name: str):
    def check(method: str, value: Any, total: int | None) -> None:
        if not isinstance(value, bool):
            raise MethodError(f"{method}: {name}={value!r} is not valid; pass True or False.")
    return check


def _check_attention(method: str, value: Any, total: int | None) -> None:
    if not isinstance(value, str) or value not in CLEARCLIP_ATTENTIONS:
        raise MethodError(f"{method}: attention={value!r} is not valid; choose one of "
                          f"{', '.join(CLEARCLIP_ATTENTIONS)} (softmax of q q^T, k k^T, v v^T or q k^T).")


def _check_pos_resize(method: str, value: Any, total: int | None) -> None:
    if not isinstance(value, str) or value not in POS_RESIZE_MODES:
        raise MethodError(f"{method}: pos_resize={value!r} is not valid; choose one of {', '.join(POS_RESIZE_MODES)}.")


_CHECKS = {
    "depth": _check_depth,
    "iterations": _check_iterations,
    "gaussian_std": _check_std,
    "inv_temperature": _check_temperature,
    "residual": _check_flag("residual"),
    "reduced": _check_flag("reduced"),
    "attention": _check_attention,
    "pos_resize": _check_pos_resize,
}
