"""Caches: a small bounded in-memory LRU, and a disk store for label features."""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Hashable

import numpy as np

CACHE_ENV = "CLIPSURGERY_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$CLIPSURGERY_CACHE_DIR`` if set, else the platform's user cache dir for this package."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("clipsurgery-widgets"))


def content_hash(*parts: Any) -> str:
    """Stable hex digest of arrays (their bytes, shape and dtype) and plain values."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.shape, part.dtype.str)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


class LRUCache:
    """A thread-safe mapping that keeps only the ``max_items`` most recently used entries."""

    def __init__(self, max_items: int):
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items


class FeatureStore:
    """Label features on disk: one small ``.npy`` per (model fingerprint, templates, label).

    Files are written atomically and read with ``allow_pickle=False``; a damaged file is ignored
    and recomputed.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root) / "label-features"

    def _path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / f"{content_hash(key)}.npy"

    def get(self, namespace: str, key: str) -> np.ndarray | None:
        path = self._path(namespace, key)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, namespace: str, key: str, value: np.ndarray) -> None:
        path = self._path(namespace, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, value, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full disk must not break explanations; memory still caches
