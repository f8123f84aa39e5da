"""Exceptions with messages meant for people: each names the problem and the fix."""
from __future__ import annotations


class ClipSurgeryError(Exception):
    """Base class for every error this package raises on purpose."""


class ModelLoadError(ClipSurgeryError):
    """Weights could not be obtained (offline, missing from the cache, hub failure)."""


class UnsupportedModelError(ClipSurgeryError, ValueError):
    """Unknown model name, or an image/text tower the surgery cannot handle."""


class CheckpointError(ClipSurgeryError, ValueError):
    """A local checkpoint file is missing, unreadable, unsafe or for another architecture."""


class ImageInputError(ClipSurgeryError, ValueError):
    """An image input could not be read or has the wrong shape, type or size."""


class TextInputError(ClipSurgeryError, ValueError):
    """Labels or captions are empty or malformed."""


class MethodError(ClipSurgeryError, ValueError):
    """Unknown dense method or parameter, or a parameter value outside its allowed range."""
