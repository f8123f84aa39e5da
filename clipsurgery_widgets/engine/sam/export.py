"""Masks and SAM prompts out to files and formats (PNG, .npy, COCO RLE, polygons, JSON) and back.

A mask is a boolean array [H, W]. Polygons are float arrays [K, 2] of (x, y) in pixel-centre
coordinates (pixel (r, c) has its centre at x = c, y = r).
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def as_mask(mask: Any) -> np.ndarray:
    """Any 2-D array-like (bool, 0/1, 0/255, torch tensor) -> bool [H, W]."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"A mask must be 2-D [H, W], got shape {arr.shape}. For SAM results pass result.mask "
                         f"(the best mask) or one of result.masks.")
    return arr > (127 if arr.dtype == np.uint8 and arr.max(initial=0) > 1 else 0)


# --- PNG ----------------------------------------------------------------------------------------

def mask_to_png_bytes(mask: Any) -> bytes:
    """Encode as a single-channel 8-bit PNG (0 background, 255 mask)."""
    buf = io.BytesIO()
    Image.fromarray(as_mask(mask).astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def mask_from_png(source: bytes | str | os.PathLike) -> np.ndarray:
    """Decode a mask PNG (any mode; non-zero pixels are mask) -> bool [H, W]."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        return np.asarray(img.convert("L")) > 0


# --- COCO RLE -----------------------------------------------------------------------------------

def mask_to_rle(mask: Any) -> dict:
    """COCO run-length encoding, JSON-ready: ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(as_mask(mask).astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict, max_pixels: int | None = 64_000_000) -> np.ndarray:
    """Decode a COCO RLE -> bool [H, W].

    ``counts`` is COCO's compressed string (str or bytes) or a list of run lengths (uncompressed
    RLE), runs alternating background/mask in column-major order, starting with background. The
    runs must cover the H x W pixels exactly; anything else is a ValueError naming the problem.
    Masks over ``max_pixels`` are refused (a short string can describe a huge mask).
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("An RLE must be a dict with 'size' [H, W] and 'counts'.")
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise ValueError(f"RLE size must be [H, W] with two non-negative integers, not {size!r}.")
    h, w = int(size[0]), int(size[1])
    if max_pixels is not None and h * w > max_pixels:
        raise ValueError(f"RLE size {h}x{w} is over the limit of {max_pixels:,} pixels; pass max_pixels=None "
                         f"(or a larger limit) if you mean it.")
    counts = rle["counts"]
    if isinstance(counts, (list, tuple)):
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise ValueError("Uncompressed RLE counts must be non-negative integers.")
        runs = [int(c) for c in counts]
    elif isinstance(counts, (str, bytes)):
        runs = _decode_coco_counts(counts)
    else:
        raise ValueError(f"RLE counts must be a COCO string or a list of run lengths, not {type(counts).__name__}.")
    if sum(runs) != h * w:
        raise ValueError(f"RLE counts cover {sum(runs)} pixels but size {h}x{w} has {h * w}: the counts do not "
                         f"belong to this size (or are damaged).")
    values = np.arange(len(runs)) % 2 == 1  # runs alternate background, mask, background, ...
    return np.repeat(values, runs).reshape(w, h).T.copy()


def _decode_coco_counts(counts: str | bytes) -> list[int]:
    """COCO's compressed counts: 5-bit groups (offset by '0'), continuation bit 0x20, sign bit 0x10 on
    the last group; from the third run on, each value is stored as a difference to the run two back."""
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("RLE counts must be ASCII (COCO's compressed string uses characters '0' to 'o').") from None
    runs: list[int] = []
    value = shift = 0
    for i, char in enumerate(counts):
        code = char - 48
        if not 0 <= code < 64:
            raise ValueError(f"RLE counts hold {chr(char)!r} at position {i}; COCO's compressed string uses "
                             f"characters '0' to 'o'.")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift  # negative: sign-extend
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"RLE counts decode to a negative run length at position {i} (damaged counts).")
        runs.append(value)
        value = shift = 0
    if shift:
        raise ValueError("RLE counts end in the middle of a number (truncated counts).")
    return runs


# --- polygons -----------------------------------------------------------------------------------

def mask_to_polygons(mask: Any, tolerance: float = 0.0) -> list[np.ndarray]:
    """Boundaries of the mask as closed polygons, float [K, 2] (x, y), pixel-centre coordinates.

    Holes come out as their own polygons; :func:`polygons_to_mask` fills with the even-odd rule,
    so a round trip keeps them. ``tolerance`` > 0 simplifies each polygon (Douglas-Peucker, pixels).
    """
    from skimage import measure

    arr = as_mask(mask)
    # Pad so that regions touching the border still get closed contours.
    padded = np.pad(arr.astype(np.float32), 1)
    polygons = []
    for contour in measure.find_contours(padded, 0.5):
        if tolerance > 0:
            contour = measure.approximate_polygon(contour, tolerance)
        if len(contour) < 3:
            continue
        polygons.append(np.ascontiguousarray(contour[:, ::-1] - 1.0))  # (row, col) -> (x, y), unpad
    return polygons


def polygons_to_mask(polygons: list, size: tuple[int, int]) -> np.ndarray:
    """Rasterise polygons ([K, 2] (x, y) arrays or COCO flat lists) with the even-odd rule -> bool [H, W]."""
    from skimage.draw import polygon as fill_polygon

    h, w = int(size[0]), int(size[1])
    out = np.zeros((h, w), dtype=bool)
    for poly in polygons:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        rows, cols = fill_polygon(xy[:, 1], xy[:, 0], shape=(h, w))
        out[rows, cols] ^= True
    return out


def polygons_to_coco(polygons: list[np.ndarray]) -> list[list[float]]:
    """COCO ``segmentation`` polygon lists: [[x0, y0, x1, y1, ...], ...]."""
    return [np.asarray(p, dtype=np.float64).reshape(-1).round(2).tolist() for p in polygons]


# --- prompts ------------------------------------------------------------------------------------

def prompts_to_dict(points: Any = None, labels: Any = None, box: Any = None,
                    image_size: tuple[int, int] | None = None) -> dict:
    """SAM prompts -> a JSON-ready dict: points [[x, y], ...], labels [1|0, ...], box [x0, y0, x1, y1]."""
    pts = np.zeros((0, 2), dtype=np.int64) if points is None else np.asarray(points).reshape(-1, 2)
    lab = np.zeros((0,), dtype=np.uint8) if labels is None else np.asarray(labels).reshape(-1)
    if len(pts) != len(lab):
        raise ValueError(f"{len(pts)} points but {len(lab)} labels: give one label (1 positive, 0 negative) per point.")
    out = {"points": pts.tolist(), "labels": [int(v) for v in lab],
           "box": None if box is None else np.asarray(box, dtype=np.float64).reshape(4).tolist()}
    if image_size is not None:
        out["image_size"] = [int(image_size[0]), int(image_size[1])]
    return out


def prompts_from_dict(data: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Inverse of :func:`prompts_to_dict` -> (points int64 [P, 2], labels uint8 [P], box float32 [4] | None)."""
    points = np.asarray(data.get("points", []), dtype=np.int64).reshape(-1, 2)
    labels = np.asarray(data.get("labels", []), dtype=np.uint8).reshape(-1)
    if len(points) != len(labels):
        raise ValueError(f"Prompt data has {len(points)} points but {len(labels)} labels.")
    box = data.get("box")
    return points, labels, None if box is None else np.asarray(box, dtype=np.float32).reshape(4)


def result_to_dict(result: Any, all_masks: bool = False) -> dict:
    """A SAM result (``SamResult``) -> JSON-ready dict: prompts, best mask as RLE, its score.

    With ``all_masks`` the three candidate masks and scores are included too.
    """
    out = prompts_to_dict(result.points, result.labels, result.box, result.mask.shape)
    out.update({"best": int(result.best), "score": float(result.scores[result.best]), "mask": mask_to_rle(result.mask)})
    if all_masks:
        out["masks"] = [mask_to_rle(m) for m in result.masks]
        out["scores"] = [float(s) for s in result.scores]
    return out


# --- files --------------------------------------------------------------------------------------

def save_mask(mask: Any, path: str | os.PathLike) -> Path:
    """Write a mask; the format follows the extension: .png, .npy, or .json (COCO RLE)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        path.write_bytes(mask_to_png_bytes(mask))
    elif suffix == ".npy":
        np.save(path, as_mask(mask))
    elif suffix == ".json":
        path.write_text(json.dumps(mask_to_rle(mask)))
    else:
        raise ValueError(f"Can't tell the mask format from {path.name!r}: use a .png, .npy or .json (COCO RLE) name.")
    return path


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask written by :func:`save_mask` -> bool [H, W]."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        return mask_from_png(path)
    if suffix == ".npy":
        return as_mask(np.load(path, allow_pickle=False))
    if suffix == ".json":
        return rle_to_mask(json.loads(path.read_text()))
    raise ValueError(f"Can't tell the mask format from {path.name!r}: expected .png, .npy or .json.")


def save_prompts(path: str | os.PathLike, points: Any = None, labels: Any = None, box: Any = None,
                 image_size: tuple[int, int] | None = None) -> Path:
    path = Path(path)
    path.write_text(json.dumps(prompts_to_dict(points, labels, box, image_size), indent=1))
    return path


def load_prompts(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    return prompts_from_dict(json.loads(Path(path).read_text()))
