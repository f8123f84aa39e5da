"""Caches: a small bounded in-memory LRU, a disk store for label features, and the validated
reads and durable writes every disk cache uses."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Hashable

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

    Reads are validated (see :func:`read_cache_file`): a damaged or foreign file is deleted, logged
    and recomputed. Writes are atomic and durable; an unwritable folder warns once.
    """

    def __init__(self, root: str | os.PathLike):
        self.user_root = Path(root)
        self.root = self.user_root / "label-features"

    def _path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / f"{content_hash(key)}.npy"

    def get(self, namespace: str, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The stored float32 array of exactly ``shape`` (all finite), or None."""
        return read_cache_file(self._path(namespace, key), {None: shape})

    def put(self, namespace: str, key: str, value: np.ndarray) -> None:
        write_cache_file(self._path(namespace, key), npy_bytes(value), self.user_root)


# --- validated reads, durable writes ------------------------------------------------------------

log = logging.getLogger("clipsurgery_widgets")
_unwritable_roots: set[str] = set()
_unwritable_lock = threading.Lock()
CACHE_DTYPE = np.dtype("<f4")


class CacheFileProblem(Exception):
    """Why a cache file can't be used."""


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def read_cache_file(path: Path, spec: dict[str | None, tuple[int, ...]]) -> Any:
    """A cached float32 ``.npy`` (``spec = {None: shape}``) or ``.npz`` (``{name: shape}``), validated.

    Every array must have exactly its shape, dtype float32 and finite values; sizes are read from
    the headers before any data is. A file that fails is deleted and logged (a warning, once: it is
    gone afterwards) and None is returned so that the caller recomputes it.
    """
    try:
        if not path.is_file():
            return None
        if None in spec:
            with open(path, "rb") as fh:
                return _read_npy(fh, spec[None], path.stat().st_size)
        with zipfile.ZipFile(path) as zf:
            out = {}
            for name, shape in spec.items():
                info = zf.getinfo(f"{name}.npy")
                with zf.open(info) as fh:
                    out[name] = _read_npy(fh, shape, info.file_size)
            return out
    except Exception as exc:  # any damage at all: recompute
        reason = str(exc) if isinstance(exc, CacheFileProblem) else f"{type(exc).__name__}: {exc}"
        log.warning("Ignoring a damaged cache file %s (%s); it is deleted and recomputed.", path, reason[:200])
        try:
            path.unlink()
        except OSError:
            pass
        return None


def _read_npy(fh: BinaryIO, shape: tuple[int, ...], size: int) -> np.ndarray:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        found, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        found, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise CacheFileProblem(f"unexpected .npy version {version}")
    if dtype != CACHE_DTYPE or fortran or tuple(found) != tuple(shape):
        raise CacheFileProblem(f"holds {dtype} {tuple(found)}{' (Fortran order)' if fortran else ''}, "
                               f"expected float32 {tuple(shape)}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * CACHE_DTYPE.itemsize
    if size - fh.tell() != nbytes:
        raise CacheFileProblem(f"{size - fh.tell()} data bytes where {nbytes} are expected")
    data = bytearray(fh.read(nbytes))
    if len(data) != nbytes:
        raise CacheFileProblem("the file is truncated")
    array = np.frombuffer(data, dtype=CACHE_DTYPE).reshape(shape)
    if not np.isfinite(array).all():
        raise CacheFileProblem("it holds NaN or infinite values")
    return array


def write_cache_file(path: Path, data: bytes, root: Path) -> bool:
    """Write atomically (temporary file, fsync, rename, fsync of the folder). Never raises for
    an unwritable ``root``: warns once per root and returns False (memory still caches)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
        return True
    except OSError as exc:
        _warn_unwritable(root, exc)
        return False


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash right after it can't lose the file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems can't sync folders; the data itself is synced
    finally:
        os.close(fd)


def _warn_unwritable(root: Path, exc: OSError) -> None:
    with _unwritable_lock:
        if str(root) in _unwritable_roots:
            return
        _unwritable_roots.add(str(root))
    warnings.warn(f"The cache folder {root} can't be written ({exc.strerror or exc}); results are kept in memory "
                  f"only. Point CLIPSURGERY_CACHE_DIR (or cache_dir=...) at a writable folder, or pass "
                  f"cache_dir=False to turn the disk cache off.", RuntimeWarning, stacklevel=4)
