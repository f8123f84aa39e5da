"""SAM image embeddings: computing one (with progress per encoder block) and caching them.

The cache keeps the most recently used embeddings in memory and, with a ``cache_dir``, one
``.pt`` file per image and model weights on disk (written atomically and durably; validated when
read, and deleted and recomputed when damaged; an unwritable folder warns once and is skipped). Keys hash the image content, its shape and the weights' fingerprint.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..cache import write_cache_file
from ..checkpoints import first_line
from ..precision import computing_in

log = logging.getLogger("clipsurgery_widgets")
Progress = Callable[[float, str], None]  # progress(fraction in [0, 1], message)

_DISK_FORMAT = 1
_METADATA_BYTES = 64 * 1024  # the pickle and bookkeeping records next to the features


@dataclass(frozen=True)
class Embedding:
    """What ``SamPredictor.set_image`` leaves behind for one image."""

    features: torch.Tensor          # [1, C, e, e] on the model's device
    original_size: tuple[int, int]  # (H, W) of the image
    input_size: tuple[int, int]     # (h, w) after ResizeLongestSide, before padding


def embedding_key(fingerprint: str, rgb: np.ndarray, encoder_size: int, precision: str = "fp32") -> str:
    """Cache key of one RGB image [H, W, 3] for the weights ``fingerprint`` at the encoder's input size.

    ``precision`` is the resolved one ("fp32", "bf16", "fp16"); fp32 keys are as they always were.
    """
    h = hashlib.blake2b(digest_size=16)
    tag = "" if precision == "fp32" else f"{precision}|"
    h.update(f"{fingerprint}|{rgb.shape}|{rgb.dtype}|{encoder_size}|{tag}".encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def compute_embedding(sam: nn.Module, transform, rgb: np.ndarray, report: Progress,
                      precision: str | None = None) -> Embedding:
    """The image encoder on one image (what SamPredictor.set_image does), with progress per block.

    precision: "fp32" (None: fp32, or an enclosing using_precision block's), "bf16", "fp16" or
    "auto": the image encoder runs under autocast (the model is not converted) and the features
    are kept as float32, so the prompt encoder and mask decoder run as usual.

    ``transform`` is the predictor's ResizeLongestSide. An exception raised by ``report`` stops the
    computation (the hooks are removed), which lets a caller abandon a stale image.
    """
    report(0.0, "computing the SAM image embedding")
    if sam.image_format != "RGB":
        rgb = rgb[..., ::-1]
    resized = transform.apply_image(rgb)
    pixels = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()[None]
    blocks = list(getattr(sam.image_encoder, "blocks", []))
    hooks = [block.register_forward_hook(
        lambda module, args, output, i=i: report(0.05 + 0.9 * (i + 1) / len(blocks),
                                                  f"SAM image encoder block {i + 1}/{len(blocks)}"))
        for i, block in enumerate(blocks)]
    try:
        pixels = sam.preprocess(pixels)
        with torch.no_grad(), computing_in(precision, sam.device) as p:
            features = p.output(sam.image_encoder(pixels))
    finally:
        for hook in hooks:
            hook.remove()
    return Embedding(features, (int(rgb.shape[0]), int(rgb.shape[1])), (int(resized.shape[0]), int(resized.shape[1])))


class EmbeddingCache:
    """Bounded in-memory LRU of embeddings plus an optional directory of ``.pt`` files. Thread-safe.

    Args:
        sam: the model the embeddings belong to (its device and embedding shape check disk files).
        cache_dir: directory for ``sam-emb-<key>.pt`` files, or None for memory only.
        max_items: how many embeddings stay in memory.
    """

    def __init__(self, sam: nn.Module, cache_dir: str | os.PathLike | None = None, max_items: int = 4) -> None:
        if max_items < 1:
            raise ValueError("max_cached_images must be at least 1.")
        self.sam = sam
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.max_items = int(max_items)
        self._memory: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, fingerprint: str) -> Embedding | None:
        """The embedding from memory, else from disk (then kept in memory), else None."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        embedding = self._load_from_disk(key, fingerprint)
        if embedding is not None:
            self._remember(key, embedding)
        return embedding

    def put(self, key: str, embedding: Embedding, fingerprint: str) -> None:
        self._remember(key, embedding)
        self._store_on_disk(key, embedding, fingerprint)

    def clear(self, disk: bool = False) -> None:
        """Forget the embeddings in memory (and, with ``disk``, every embedding file in ``cache_dir``)."""
        with self._lock:
            self._memory.clear()
            if disk and self.cache_dir is not None and self.cache_dir.is_dir():
                for path in self.cache_dir.glob("sam-emb-*.pt"):
                    path.unlink(missing_ok=True)

    def _remember(self, key: str, embedding: Embedding) -> None:
        with self._lock:
            self._memory[key] = embedding
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)

    def _disk_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"sam-emb-{key}.pt"

    def _load_from_disk(self, key: str, fingerprint: str) -> Embedding | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        encoder = self.sam.prompt_encoder
        expected = (1, encoder.embed_dim, *encoder.image_embedding_size)
        try:
            # Sizes come from the zip directory before anything is unpickled or allocated.
            with zipfile.ZipFile(path) as zf:
                total = sum(info.file_size for info in zf.infolist())
            if total > 4 * math.prod(expected) + _METADATA_BYTES:
                raise ValueError(f"it holds {total} bytes, more than an embedding of shape {expected}")
            data = torch.load(path, map_location="cpu", weights_only=True)
            features = data["features"]
            if data.get("format") != _DISK_FORMAT or data.get("fingerprint") != fingerprint:
                return None  # another format or other weights (a key collision): recompute, overwrite
            if not isinstance(features, torch.Tensor) or tuple(features.shape) != expected or \
                    features.dtype != torch.float32 or not bool(torch.isfinite(features).all()):
                raise ValueError(f"its features are not finite float32 {expected}")
            sizes = [tuple(int(v) for v in data[name]) for name in ("original_size", "input_size")]
            if any(len(size) != 2 or min(size) < 1 for size in sizes):
                raise ValueError("its image sizes are invalid")
            return Embedding(features.to(self.sam.device), sizes[0], sizes[1])
        except Exception as exc:  # unreadable or damaged: delete, say so once, recompute
            log.warning("Ignoring a damaged SAM embedding cache file %s (%s); it is deleted and recomputed.",
                        path, first_line(exc))
            path.unlink(missing_ok=True)
            return None

    def _store_on_disk(self, key: str, embedding: Embedding, fingerprint: str) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        buffer = io.BytesIO()  # serialise in memory: only the file write can fail, with an OSError
        torch.save({"format": _DISK_FORMAT, "fingerprint": fingerprint,
                    "features": embedding.features.detach().cpu(),
                    "original_size": list(embedding.original_size), "input_size": list(embedding.input_size)}, buffer)
        write_cache_file(path, buffer.getvalue(), self.cache_dir)  # atomic, durable; unwritable: warns once


def install_embedding(predictor, embedding: Embedding) -> None:
    """Point a ``SamPredictor`` at a computed embedding (the bookkeeping ``set_torch_image`` does)."""
    predictor.reset_image()
    predictor.features = embedding.features
    predictor.original_size = embedding.original_size
    predictor.input_size = embedding.input_size
    predictor.is_image_set = True
