"""Download Segment Anything checkpoints once: resumable, checksum-verified, atomic.

The file is streamed into ``<name>.part`` next to its final place, resumed with an HTTP Range
request when a transfer is interrupted, verified against its published SHA-256 and only then
moved into place (``os.replace``), so a file at the final path is always a complete, verified one.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..cache import default_cache_dir as package_cache_dir
from ..errors import CheckpointError, ModelLoadError

_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
# model type -> (url, sha256). The digests are the ones published with the official checkpoints
# (the same values appear in many independent projects that pin them).
SAM_CHECKPOINTS: dict[str, tuple[str, str | None]] = {
    "vit_b": (_BASE + "sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "vit_l": (_BASE + "sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_h": (_BASE + "sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
}
# Sizes in bytes, for the progress bar before the server answers and a cheap first check.
SAM_CHECKPOINT_SIZES: dict[str, int] = {"vit_b": 375_042_383, "vit_l": 1_249_524_607, "vit_h": 2_564_550_879}

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """Where checkpoints go: the package cache dir (``$CLIPSURGERY_CACHE_DIR`` if set) plus ``sam``."""
    return package_cache_dir() / "sam"


def checkpoint_path(model_type_or_url: str, dest_dir: str | os.PathLike | None = None) -> Path:
    """The path where :func:`download_checkpoint` keeps this checkpoint (it may not exist yet)."""
    url, _ = _resolve(model_type_or_url)
    return Path(dest_dir).expanduser() / _filename(url) if dest_dir else default_cache_dir() / _filename(url)


def download_checkpoint(
    model_type_or_url: str,
    dest_dir: str | os.PathLike | None = None,
    sha256: str | None = None,
    progress: bool = True,
    *,
    verify: bool = True,
    timeout: float = 10.0,
    retries: int = 3,
) -> Path:
    """Download a SAM checkpoint (or any URL) once and return its local path.

    Args:
        model_type_or_url: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` or a URL.
        dest_dir: target directory (default :func:`default_cache_dir`; env ``CLIPSURGERY_CACHE_DIR``).
        sha256: expected hex digest; by default the published digest for a model type, and no
            check for a bare URL.
        progress: show a tqdm progress bar.
        verify: set False to skip the checksum (not recommended).
        timeout: seconds to wait for the server (connection and each read); offline fails fast.
        retries: how many times an interrupted transfer is resumed (Range request) before giving up.

    Returns the path of the verified file. If it is already there and verified, returns at once.
    Raises ModelLoadError when the server can't be reached, CheckpointError on a checksum mismatch
    (the bad file is deleted).
    """
    url, known_sha = _resolve(model_type_or_url)
    expected = (sha256 or known_sha) if verify else None
    expected = expected.lower() if expected else None
    dest = checkpoint_path(url, dest_dir)
    if dest.exists():
        _check_existing(dest, expected, url)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    size_hint = next((SAM_CHECKPOINT_SIZES[k] for k, (u, _) in SAM_CHECKPOINTS.items() if u == url), None)

    attempt = 0
    while True:
        start = part.stat().st_size if part.exists() else 0
        try:
            done = _fetch(url, part, start, timeout, progress, size_hint)
        except _Interrupted as exc:
            attempt += 1
            if attempt > retries:
                raise ModelLoadError(
                    f"Download of {url} was interrupted {attempt} times ({exc}); the partial file is kept at "
                    f"{part} and the next call resumes it. {_manual_hint(url, dest)}") from None
            continue
        except _Unreachable as exc:
            raise ModelLoadError(f"Could not download {url}: {exc}. This machine may be offline. "
                                 f"{_manual_hint(url, dest)}") from None
        if done:
            break
    if expected:
        actual = sha256_file(part)
        if actual != expected:
            part.unlink(missing_ok=True)
            raise CheckpointError(
                f"Checksum mismatch for {url}: got sha256 {actual}, expected {expected}. The corrupt download "
                f"was deleted; run again to retry, or check the URL / sha256 you passed.")
    os.replace(part, dest)
    if expected:
        _write_stamp(dest, expected)
    return dest


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 * _CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# --- internals ----------------------------------------------------------------------------------

class _Interrupted(Exception):
    """The connection dropped after some bytes arrived: worth resuming."""


class _Unreachable(Exception):
    """No usable answer from the server at all: fail fast."""


def _resolve(model_type_or_url: str) -> tuple[str, str | None]:
    if model_type_or_url in SAM_CHECKPOINTS:
        return SAM_CHECKPOINTS[model_type_or_url]
    if urllib.parse.urlparse(str(model_type_or_url)).scheme in ("http", "https", "file"):
        return str(model_type_or_url), None
    raise ValueError(f"Unknown SAM checkpoint {model_type_or_url!r}: pass one of {sorted(SAM_CHECKPOINTS)} "
                     f"or an http(s) URL.")


def _filename(url: str) -> str:
    """The last path segment of the URL as a plain file name ("", "." and ".." are not file names)."""
    segment = urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]
    decoded = urllib.parse.unquote(segment)
    if decoded in ("", ".", "..") or any(c in decoded for c in ("/", "\\", "\x00")):
        raise ValueError(f"Cannot tell a file name from the URL {url!r}: it must end in the checkpoint's file "
                         f"name, e.g. https://host/path/sam_vit_b_01ec64.pth.")
    return segment


def _manual_hint(url: str, dest: Path) -> str:
    return (f"Download {url} elsewhere and put it at {dest}, or pass the path to "
            f"SamRefiner.from_checkpoint(path, model_type=...).")


def _fetch(url: str, part: Path, start: int, timeout: float, progress: bool, size_hint: int | None) -> bool:
    """Append to ``part`` from byte ``start``. True when the server has sent everything."""
    request = urllib.request.Request(url, headers={"User-Agent": "clipsurgery-widgets"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            # Nothing left to send: the part file already holds the whole file (checked by sha256).
            return True
        raise _Unreachable(f"HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
        reason = getattr(exc, "reason", exc)
        raise _Unreachable(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__) from None

    with response:
        status = getattr(response, "status", 200)
        if start and status != 206:
            start = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else size_hint
        received = start
        bar = _progress_bar(total, start, _filename(url)) if progress else None
        try:
            with open(part, "ab" if start else "wb") as fh:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Interrupted(f"{type(exc).__name__} after {received} bytes") from None
                    if not chunk:
                        break
                    fh.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if length is not None and received < total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")
    return True


def _progress_bar(total: int | None, initial: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name)


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256.json")


def _write_stamp(dest: Path, digest: str) -> None:
    st = dest.stat()
    stamp = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        _stamp_path(dest).write_text(json.dumps(stamp))
    except OSError:
        pass  # the stamp only saves re-hashing next time


def _check_existing(dest: Path, expected: str | None, url: str) -> None:
    """Accept a file already in place when it verifies (cheaply, via the stamp written after download)."""
    if not expected:
        return
    st = dest.stat()
    try:
        stamp = json.loads(_stamp_path(dest).read_text())
        if stamp == {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
            return
    except (OSError, ValueError):
        pass
    actual = sha256_file(dest)
    if actual != expected:
        raise CheckpointError(
            f"{dest} exists but its sha256 is {actual}, not the expected {expected} for {url}. Delete it to "
            f"download again, or load it directly with SamRefiner.from_checkpoint({str(dest)!r}).")
    _write_stamp(dest, expected)
