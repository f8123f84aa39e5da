"""Where a SamRefiner's model comes from: a checkpoint file, an official download, or ``CLIPSURGERY_SAM``.

``refiner_from_checkpoint`` and ``refiner_from_pretrained`` are ``SamRefiner.from_checkpoint`` and
``SamRefiner.from_pretrained``; :func:`load_sam_from_env` is what the notebooks use.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ModelLoadError, UnsupportedModelError
from .models import SAM_ARCHITECTURES, build_tiny_sam, load_sam_checkpoint

if TYPE_CHECKING:
    from .refiner import SamRefiner

SAM_ENV = "CLIPSURGERY_SAM"
DEFAULT_SAM_CHOICE = "vit_b"


def refiner_from_checkpoint(cls: type, path: str | os.PathLike, model_type: str | None = None,
                            device: str | torch.device | None = None, *, trust_checkpoint: bool = False,
                            embedding_cache_dir: str | os.PathLike | None = None, **kwargs: Any) -> "SamRefiner":
    """Load an official SAM checkpoint (``sam_vit_b_01ec64.pth``, ...).

    Args:
        path: the ``.pth`` file.
        model_type: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` (or ``"tiny"``); None infers it from
            the weights. A type that does not match the file is an error.
        device: default CUDA when available, else CPU.
        trust_checkpoint: read with ``weights_only=False``; only for files you trust
            (unpickling can run arbitrary code).
        embedding_cache_dir: passed to the refiner as ``cache_dir``.
        kwargs: other :class:`SamRefiner` options.
    """
    from ..loading import default_device

    sam = load_sam_checkpoint(path, model_type, trust_checkpoint=trust_checkpoint)
    return cls(sam.to(default_device(device)).eval(), cache_dir=embedding_cache_dir, **kwargs)


def refiner_from_pretrained(cls: type, model_type: str = "vit_b", cache_dir: str | os.PathLike | None = None,
                            device: str | torch.device | None = None, *, progress: bool = True,
                            **kwargs: Any) -> "SamRefiner":
    """Download the official checkpoint once (checksum-verified, resumable) and load it.

    ``cache_dir`` is where the checkpoint goes (default: the user cache, or
    ``$CLIPSURGERY_CACHE_DIR/sam``). Offline, this fails fast with the URL and the path to put
    a manually downloaded file at. Other keyword arguments go to ``from_checkpoint``.
    """
    from .downloads import SAM_CHECKPOINTS, download_checkpoint

    if model_type not in SAM_CHECKPOINTS:
        raise UnsupportedModelError(f"No official checkpoint for SAM model_type {model_type!r}: choose one of "
                                    f"{', '.join(SAM_CHECKPOINTS)}.")
    path = download_checkpoint(model_type, dest_dir=cache_dir, progress=progress)
    return cls.from_checkpoint(path, model_type, device, **kwargs)


def load_sam_from_env(default: str = DEFAULT_SAM_CHOICE, device: str | torch.device | None = None,
                      **kwargs: Any) -> "SamRefiner":
    """The SAM named by the ``CLIPSURGERY_SAM`` environment variable (notebooks use this).

    Values: ``"tiny"`` (a tiny random SAM: fast, masks mean nothing; the tests use it),
    ``"vit_b"`` (the default), ``"vit_l"`` or ``"vit_h"`` (official weights, downloaded once and
    cached; offline this fails at once with instructions), or ``"vit_b:/path/sam_vit_b_01ec64.pth"``
    for a file you have (a bare path infers the size from the weights). Other keyword arguments go
    to :class:`SamRefiner` (e.g. ``cache_dir`` for embeddings on disk).
    """
    from ..loading import default_device
    from .downloads import SAM_CHECKPOINTS
    from .refiner import (
        SamRefiner,  # here, not at the top: refiner re-exports this function
    )

    spec = os.environ.get(SAM_ENV, "").strip() or default
    model_type, _, path = spec.partition(":")
    if model_type not in SAM_ARCHITECTURES and (os.sep in spec or Path(spec).suffix in (".pth", ".pt")):
        model_type, path = None, spec  # a bare path
    if path:
        return SamRefiner.from_checkpoint(path, model_type, device, **kwargs)
    if model_type == "tiny":
        return SamRefiner(build_tiny_sam().to(default_device(device)), **kwargs)
    if model_type in SAM_CHECKPOINTS:
        try:
            return SamRefiner.from_pretrained(model_type, device=device, **kwargs)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc} Or set {SAM_ENV}={model_type}:/path/to/the/file.pth to use a checkpoint you "
                                 f"already have, or {SAM_ENV}=tiny for a tiny random SAM (fast, its masks mean "
                                 f"nothing).") from None
    raise UnsupportedModelError(f"{SAM_ENV}={spec!r} is not a SAM this package knows: use 'tiny', 'vit_b', 'vit_l', "
                                f"'vit_h', or a model type and a checkpoint path such as "
                                f"'vit_b:/path/to/sam_vit_b_01ec64.pth'.")
