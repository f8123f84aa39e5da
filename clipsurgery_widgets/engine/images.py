"""Any image input -> an RGB uint8 array; RGB array -> normalised pixels for the image tower."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ImageInputError

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray, torch.Tensor]

# Larger images are refused before decoding (decompression bombs). 64 megapixels is an 8k x 8k
# photo; raise it with max_pixels=... when you mean it.
DEFAULT_MAX_PIXELS = 64_000_000

SAMPLES = {
    "cat": "chelsea",
    "astronaut": "astronaut",
    "coffee": "coffee",
    "rocket": "rocket",
}


def load_image(source: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any supported image input as an RGB uint8 array [H, W, 3] at its original size.

    Accepts a path, encoded bytes, a PIL image (any mode; alpha is composited on white; EXIF
    orientation applied), a numpy array ([H, W], [H, W, 1|3|4]; uint8, or float in [0, 1]), or a
    torch tensor (the same shapes, or [1|3|4, H, W]). ``"sample:cat"`` names a sample photo that
    ships with scikit-image (cat, astronaut, coffee, rocket).
    """
    if isinstance(source, (str, os.PathLike)) and str(source).startswith("sample:"):
        return sample_image(str(source)[len("sample:"):])
    if isinstance(source, (str, os.PathLike, bytes)):
        return _pil_to_rgb(_open(source, max_pixels))
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, max_pixels)
        return _pil_to_rgb(source)
    if isinstance(source, torch.Tensor):
        tensor = source.detach().cpu()
        if tensor.ndim == 3 and tensor.shape[0] in (1, 3, 4) and tensor.shape[-1] not in (1, 3, 4):
            tensor = tensor.permute(1, 2, 0)  # [C, H, W] -> [H, W, C]
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()  # numpy has no bfloat16; float32 holds every bfloat16 value exactly
        try:
            array = tensor.numpy()
        except (TypeError, RuntimeError):
            raise ImageInputError(f"Unsupported image tensor dtype {tensor.dtype}; use uint8, or float in [0, 1]."
                                  ) from None
        return array_to_rgb(array, max_pixels)
    if isinstance(source, np.ndarray):
        return array_to_rgb(source, max_pixels)
    raise ImageInputError(f"Unsupported image input of type {type(source).__name__}: pass a file path, a PIL "
                          f"image, a numpy array [H, W, 3] or a torch tensor.")


def sample_image(name: str) -> np.ndarray:
    """A sample photo from scikit-image's bundled data (no download): cat, astronaut, coffee, rocket."""
    if name not in SAMPLES:
        raise ImageInputError(f"Unknown sample image {name!r}; choose one of {', '.join(sorted(SAMPLES))}.")
    from skimage import data

    return np.ascontiguousarray(getattr(data, SAMPLES[name])()[..., :3]).astype(np.uint8)


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageInputError(
            f"Image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}. "
            f"Downscale it first, or pass max_pixels=None (or a larger limit) if you trust the file.")


def _open(source: str | os.PathLike | bytes, max_pixels: int | None) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise ImageInputError("Image data is empty (0 bytes).")
        stream, label = io.BytesIO(source), "the uploaded data"
    else:
        path = Path(source).expanduser()
        try:
            exists, is_dir = path.exists(), path.is_dir()
        except OSError as exc:  # e.g. a file name longer than the filesystem allows
            shown = str(path) if len(str(path)) <= 120 else f"{str(path)[:60]}...{str(path)[-40:]}"
            raise ImageInputError(f"Can't use {shown!r} as an image path: {exc.strerror or exc} (a file name has "
                                  f"at most 255 bytes on most systems). Check or shorten the name.") from None
        if not exists:
            raise ImageInputError(f"Image file not found: {path}. Check the path.")
        if is_dir:
            raise ImageInputError(f"{path} is a folder, not an image file.")
        stream, label = path, str(path)
    try:
        # Pillow's own bomb check only warns below twice its limit; we check the header size ourselves.
        with Image.open(stream) as img:
            _check_pixels(img.width, img.height, max_pixels)
            img.load()
            return img.copy()
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{label} is too large to decode safely ({exc}).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"Could not read {label} as an image ({exc}). The file may be truncated or not an "
                              f"image; PNG, JPEG, WebP, BMP, TIFF and GIF are supported.") from None


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img) or img
    if img.width == 0 or img.height == 0:
        raise ImageInputError("Image has zero width or height.")
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        return _scale_to_uint8(arr, integer=mode != "F", bits=16 if mode.startswith("I;16") else None)
    if mode == "P":
        img = img.convert("RGBA")
    elif mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _scale_to_uint8(arr: np.ndarray, integer: bool, bits: int | None) -> np.ndarray:
    """High-bit-depth and float grey images: map their value range to 0..255."""
    if not np.isfinite(arr).all():
        raise ImageInputError("Image contains NaN or infinite values.")
    if bits:
        scaled = arr / (2 ** bits - 1)
    elif not integer and arr.min() >= 0 and arr.max() <= 1:
        scaled = arr
    else:
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    grey = np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def array_to_rgb(arr: np.ndarray, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A numpy array [H, W] or [H, W, 1|3|4] (uint8, bool, or float in [0, 1]) -> RGB uint8 [H, W, 3]."""
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ImageInputError(f"Image array is empty (shape {arr.shape}).")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageInputError(f"Image array has shape {arr.shape}; expected [H, W], [H, W, 3] or [H, W, 4] "
                              f"(or a tensor [3, H, W]).")
    _check_pixels(arr.shape[1], arr.shape[0], max_pixels)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageInputError("Image array contains NaN or infinite values; clean it with np.nan_to_num first.")
        if arr.min() < 0 or arr.max() > 1:
            raise ImageInputError(f"Float image values must lie in [0, 1] (found {arr.min():.3g}..{arr.max():.3g}); "
                                  f"divide by 255 or pass uint8.")
        arr = np.round(arr * 255).astype(np.uint8)
    elif arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise ImageInputError(f"Integer image values must lie in 0..255 (found {arr.min()}..{arr.max()}); "
                                  f"convert to uint8 or float in [0, 1].")
        arr = arr.astype(np.uint8)
    else:
        raise ImageInputError(f"Unsupported image dtype {arr.dtype}; use uint8 or float in [0, 1].")
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        rgb = arr[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.round(rgb).astype(np.uint8)
    return np.ascontiguousarray(arr)


def check_input_size(size: int | tuple[int, int], patch_size: int) -> tuple[int, int]:
    """Normalise an explanation input size to (height, width), both multiples of ``patch_size``."""
    if isinstance(size, (int, np.integer)):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, (int, np.integer)) for s in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an int S or a pair (S_h, S_w), not {size!r}.")
    if min(hw) < patch_size or any(s % patch_size for s in hw):
        fix = tuple(max(patch_size, round(s / patch_size) * patch_size) for s in hw)
        raise ValueError(f"Input size {hw[0]}x{hw[1]} must be made of whole {patch_size}-pixel patches for this "
                         f"model; try {fix[0]}x{fix[1]}.")
    return hw


def preprocess(rgb: np.ndarray, size: int | tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...],
               patch_size: int) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> normalised pixels [1, 3, S_h, S_w].

    The whole image is resized bicubically to the target (no centre crop), as the CLIP Surgery
    authors do for explanation, so every pixel of the original gets a map value.
    """
    h, w = check_input_size(size, patch_size)
    resized = Image.fromarray(rgb).resize((w, h), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((pixels - mean_t) / std_t).unsqueeze(0)
