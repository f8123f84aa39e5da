"""Numeric precision of the engine's computations: fp32, or bf16 / fp16 through torch.autocast.

    resolve_precision("auto", device) -> "bf16" on a CUDA device with bf16, "fp16" on one without,
                                          "fp32" anywhere else (bf16 on the CPU is opt-in)
    with computing_in("bf16", model) as p:  ...   # the model's own matmuls run in bf16
        tokens = p.output(tokens)                   # results handed back as float32

The user's model is never converted: autocast casts each weight to bf16/fp16 as an operation
uses it (inside the block only; its cast cache is dropped when the block ends), so memory grows
by the reduced-precision copies of the weights in use, at most half the model's fp32 size, and
only while the computation runs. Outside the block nothing changes: no default dtype, no grad
mode, no thread count, no autocast state is left behind.

The image towers (``encode_image_tokens``, ``encode_dense``, ``capture_attention``,
``method_attention``, ``decompose``) avoid that per-call re-casting, which
took about 40% of a bf16 ViT-B-16 pass: ``reduced_tower(visual, p)`` gives a PRIVATE eval-mode copy
of the tower with its floating weights in bf16/fp16, made once and reused (still run under
autocast, so layer norms and softmaxes stay float32; a ResNet's BatchNorms are folded into its
convolutions there, see batchnorm). Memory cost: about half the tower's fp32
size (ViT-B-16: ~170 MB), held for as long as the user's model lives, one copy per reduced dtype
and device. A copy is dropped and rebuilt when the tower's weights change in place (version
counters, data pointers and identities of its tensors, see ``model_guard.weights_signature``) or
its fingerprint changes; edits through ``p.data.<op>_()`` are not seen (call
``loaded.watch.refresh()`` after those). The fp32 path runs the user's tower itself.

``using_precision(name)`` sets the precision of every engine call made inside it on this thread
that was not given one explicitly (the widgets wrap their background work in it).
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .batchnorm import fold_batch_norms
from .errors import ClipSurgeryError
from .model_guard import eval_view, weights_signature

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

_scope: contextvars.ContextVar[str | None] = contextvars.ContextVar("clipsurgery_precision", default=None)


class PrecisionError(ClipSurgeryError, ValueError):
    """An unknown precision, or one the device cannot run."""


def check_precision(precision: Any, name: str = "precision") -> str:
    """``precision`` if it is one of PRECISIONS, else a PrecisionError naming the valid values."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise PrecisionError(f"{name}={precision!r} is not a precision: use 'auto' (bf16 on a CUDA GPU, fp32 on "
                             f"the CPU), 'fp32', 'bf16' or 'fp16' (CUDA only).")
    return precision


def device_of(where: Any) -> torch.device:
    """The device of a tensor, a module (its first parameter or buffer), a LoadedModel, a string or a device."""
    if isinstance(where, torch.device):
        return where
    if isinstance(where, str):
        return torch.device(where)
    if isinstance(where, torch.Tensor):
        return where.device
    device = getattr(where, "device", None)
    if isinstance(device, torch.device):  # LoadedModel, SAM
        return device
    module = getattr(where, "model", where)
    if isinstance(module, torch.nn.Module):
        for tensor in module.parameters():
            return tensor.device
        for tensor in module.buffers():
            return tensor.device
    return torch.device("cpu")


def cuda_bf16_supported(device: torch.device) -> bool:
    """True when the CUDA device runs bf16 natively (Ampere or newer)."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch without the keyword
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(precision: str, where: Any = "cpu") -> str:
    """"fp32", "bf16" or "fp16" for ``precision`` on the device of ``where`` (see the module docstring)."""
    precision = check_precision(precision)
    device = device_of(where)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_bf16_supported(device) else "fp16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise PrecisionError(f"precision='fp16' needs a CUDA device (this model is on {device}); on the CPU use "
                             f"'bf16' (fast on CPUs with AVX-512 BF16 or AMX) or 'fp32'.")
    if precision == "bf16" and device.type == "cuda" and not cuda_bf16_supported(device):
        raise PrecisionError(f"This GPU ({device}) has no bf16 support: use precision='fp16' or 'fp32' "
                             f"(or 'auto', which picks fp16 there).")
    return precision


def choose_precision(call: str | None = None, own: str | None = None) -> str:
    """The precision setting that applies (a name from PRECISIONS, not yet resolved for a device).

    In order: the call's own argument; an enclosing :func:`using_precision` block's, unless it is
    "auto"; the object's setting (``own``: an Explainer's or a SamRefiner's); the block's "auto";
    else "fp32" (the engine functions' default: the reference numbers are stated in fp32).
    """
    if call is not None:
        return check_precision(call)
    scoped = _scope.get()
    if scoped is not None and scoped != "auto":
        return scoped
    if own is not None:
        return check_precision(own)
    return scoped or "fp32"


@contextlib.contextmanager
def using_precision(precision: str | None) -> Iterator[None]:
    """Engine calls inside this block (on this thread) that get no ``precision=`` use ``precision``.

    None leaves the current setting. "auto" lets objects with their own setting keep it.
    """
    token = _scope.set(check_precision(precision)) if precision is not None else None
    try:
        yield
    finally:
        if token is not None:
            _scope.reset(token)


def scoped_precision() -> str | None:
    """The precision of the innermost :func:`using_precision` block, or None."""
    return _scope.get()


@dataclass(frozen=True)
class Precision:
    """A resolved precision on one device type: what a computation runs in."""

    name: str          # "fp32", "bf16" or "fp16"
    device_type: str   # "cpu", "cuda", ...

    @classmethod
    def resolve(cls, precision: str | None, where: Any, own: str | None = None) -> "Precision":
        """The precision to run in on ``where``'s device (see :func:`choose_precision`)."""
        device = device_of(where)
        return cls(resolve_precision(choose_precision(precision, own), device), device.type)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def reduced(self) -> bool:
        """True for bf16 and fp16."""
        return self.name != "fp32"

    @property
    def cache_tag(self) -> tuple[str, ...]:
        """What cache keys add for this precision: nothing for fp32 (keys stay as they were), else its name."""
        return (self.name,) if self.reduced else ()

    def autocast(self) -> contextlib.AbstractContextManager:
        """torch.autocast in this precision; for fp32, autocast switched off (if an outer block had it on)."""
        if self.reduced:
            return torch.autocast(device_type=self.device_type, dtype=self.dtype)
        if _autocast_on(self.device_type):
            return torch.autocast(device_type=self.device_type, enabled=False)
        return contextlib.nullcontext()

    def output(self, x: Any) -> Any:
        """A floating tensor computed under reduced precision as float32; anything else unchanged."""
        if self.reduced and isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
            return x.float()
        return x


@contextlib.contextmanager
def computing_in(precision: str | None, where: Any, own: str | None = None) -> Iterator[Precision]:
    """Run the block under autocast for ``precision`` on ``where``'s device; yields the Precision.

    Use ``p.output(x)`` on what the block returns so that results are float32 in every precision.
    """
    resolved = Precision.resolve(precision, where, own)
    with resolved.autocast():
        yield resolved


# visual tower -> {(dtype, device): (fingerprint, signature, reduced copy)}; entries die with the tower.
_reduced: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_reduced_lock = threading.Lock()


def reduced_tower(visual: torch.nn.Module, p: Precision, fingerprint: str | None = None) -> torch.nn.Module:
    """The module to run ``visual`` in precision ``p``: ``visual`` itself for fp32, else a cached
    private copy with its floating weights in ``p.dtype`` (see the module docstring).

    fingerprint: the LoadedModel's weights fingerprint, if there is one (part of the cache key).
    The user's tower is never converted or modified.
    """
    if not p.reduced:
        return visual
    device = device_of(visual)
    key = (p.dtype, str(device))
    signature = weights_signature(list(visual.modules()))
    with _reduced_lock:
        entry = _reduced.get(visual, {}).get(key)
        if entry is not None and entry[0] == fingerprint and entry[1] == signature:
            return entry[2]
    copy = _cast_copy(visual, p.dtype)
    with _reduced_lock:
        _reduced.setdefault(visual, {})[key] = (fingerprint, signature, copy)  # replaces a stale copy
    return copy


def _cast_copy(visual: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """An eval-mode copy of ``visual`` with its floating parameters and buffers in ``dtype``.

    eval_view gives every module its own parameter and buffer dicts, so replacing entries there
    leaves the user's modules alone; integer buffers stay shared. A ResNet's BatchNorms are folded
    into their convolutions first, in float32 (batchnorm), and its convolution weights are stored
    channels-last, the layout oneDNN and cuDNN run reduced-precision convolutions fastest in
    (RN50 bf16 at 448 on this CPU: 0.090 s -> 0.056 s; resnet_features feeds it channels-last pixels).
    """
    copy = eval_view(visual)
    layout = torch.channels_last if fold_batch_norms(copy) else torch.preserve_format
    for module in copy.modules():
        for name, param in module._parameters.items():
            if param is not None and param.is_floating_point():
                cast = param.detach().to(dtype, copy=True,
                                         memory_format=layout if param.dim() == 4 else torch.preserve_format)
                module._parameters[name] = torch.nn.Parameter(cast, requires_grad=False)
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                module._buffers[name] = buffer.detach().to(dtype, copy=True)
    return copy


def _autocast_on(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except (TypeError, RuntimeError):
        return False


__all__ = ["PRECISIONS", "Precision", "PrecisionError", "check_precision", "resolve_precision", "choose_precision",
           "using_precision", "scoped_precision", "computing_in", "device_of", "reduced_tower"]
