"""Image input: every PIL mode, arrays and tensors, EXIF orientation, and each bad input."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from clipsurgery_widgets.engine import ImageInputError, load_image, preprocess
from clipsurgery_widgets.engine.images import check_input_size
from clipsurgery_widgets.engine.loading import OPENAI_MEAN, OPENAI_STD

GRADIENT = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (20, 1))  # [20, 32], 0..248 left to right


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_pil_mode_becomes_rgb(tmp_path, mode):
    base = Image.fromarray(GRADIENT, "L")
    if mode == "I;16":
        img = Image.fromarray(GRADIENT.astype(np.uint16) * 257)
    elif mode == "I":
        img = Image.fromarray(GRADIENT.astype(np.int32) * 1000)
    elif mode == "F":
        img = Image.fromarray(GRADIENT.astype(np.float32) / 255.0)
    else:
        img = base.convert(mode)
    rgb = load_image(img)
    assert rgb.shape == (20, 32, 3) and rgb.dtype == np.uint8
    if mode not in ("1", "P", "CMYK"):  # these quantise or change colour spaces
        # The gradient survives: dark on the left, bright on the right, grey (R == G == B).
        assert rgb[0, 0, 0] < 20 and rgb[0, -1, 0] > 230
        assert (rgb[..., 0] == rgb[..., 1]).all()
    # Files too (PNG for most modes, TIFF for the float one).
    assert img.mode == mode
    suffix = ".tiff" if mode in ("F", "I", "CMYK") else ".png"
    path = tmp_path / f"img{suffix}"
    img.save(path)
    assert load_image(path).shape == (20, 32, 3)


def test_alpha_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red-ish, fully transparent on the left half
    rgba[:, 2:, 3] = 255
    for source in (Image.fromarray(rgba, "RGBA"), rgba):
        rgb = load_image(source)
        assert (rgb[:, :2] == 255).all()  # transparent -> white
        assert (rgb[:, 2:] == [200, 0, 0]).all()


def test_half_transparent_la_image():
    la = Image.fromarray(np.dstack([np.zeros((2, 2), np.uint8), np.full((2, 2), 128, np.uint8)]), "LA")
    rgb = load_image(la)
    assert np.all(np.abs(rgb.astype(int) - 127) <= 1)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert load_image(path).shape == (40, 20, 3)


@pytest.mark.parametrize("array,expected_shape", [
    (np.zeros((5, 6), np.uint8), (5, 6, 3)),
    (np.zeros((5, 6, 1), np.uint8), (5, 6, 3)),
    (np.zeros((5, 6, 3), np.uint8), (5, 6, 3)),
    (np.zeros((5, 6, 4), np.uint8), (5, 6, 3)),
    (np.full((5, 6, 3), 0.5, np.float32), (5, 6, 3)),
    (np.ones((5, 6), bool), (5, 6, 3)),
])
def test_arrays(array, expected_shape):
    assert load_image(array).shape == expected_shape


def test_float_array_scaled_to_uint8():
    assert load_image(np.full((2, 2, 3), 0.5))[0, 0, 0] == 128


@pytest.mark.parametrize("tensor", [torch.rand(3, 8, 10), torch.rand(8, 10, 3), torch.rand(8, 10), torch.rand(1, 8, 10)])
def test_tensors(tensor):
    assert load_image(tensor).shape == (8, 10, 3)


def test_encoded_bytes_and_sample():
    buf = io.BytesIO()
    Image.new("RGB", (7, 3), "blue").save(buf, "PNG")
    assert load_image(buf.getvalue()).shape == (3, 7, 3)
    cat = load_image("sample:cat")
    assert cat.ndim == 3 and cat.shape[2] == 3 and cat.dtype == np.uint8


@pytest.mark.parametrize("make,match", [
    (lambda p: p / "missing.png", "not found"),
    (lambda p: p, "is a folder"),
    (lambda p: _write(p / "notes.png", b"hello, not an image"), "Could not read"),
    (lambda p: _write(p / "cut.png", _png_bytes()[:60]), "Could not read"),
    (lambda p: _write(p / "empty.png", b""), "Could not read"),
])
def test_bad_files(tmp_path, make, match):
    with pytest.raises(ImageInputError, match=match):
        load_image(make(tmp_path))


@pytest.mark.parametrize("source,match", [
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((4, 5, 2), np.uint8), "shape"),
    (np.zeros((2, 4, 5, 3), np.uint8), "shape"),
    (np.zeros((4, 5), np.complex64), "dtype"),
    (np.full((4, 5), np.nan, np.float32), "NaN"),
    (np.full((4, 5), np.inf), "NaN or infinite"),
    (np.full((4, 5), 3.0), r"\[0, 1\]"),
    (np.full((4, 5), 300, np.int32), "0..255"),
    (b"", "empty"),
    (12345, "Unsupported image input"),
    ("sample:unicorn", "Unknown sample"),
])
def test_bad_inputs(source, match):
    with pytest.raises(ImageInputError, match=match):
        load_image(source)


def test_pixel_limit_refuses_decompression_bombs(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(path)
    with pytest.raises(ImageInputError, match="over the limit of 50,000"):
        load_image(path, max_pixels=50_000)
    with pytest.raises(ImageInputError, match="max_pixels"):
        load_image(np.zeros((300, 300), np.uint8), max_pixels=50_000)
    assert load_image(path, max_pixels=None).shape == (300, 300, 3)


def test_preprocess_resizes_whole_image_and_normalises():
    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[..., 0] = 255
    pixels = preprocess(rgb, 32, OPENAI_MEAN, OPENAI_STD, 16)
    assert pixels.shape == (1, 3, 32, 32)
    expected_red = (1 - OPENAI_MEAN[0]) / OPENAI_STD[0]
    torch.testing.assert_close(pixels[0, 0], torch.full((32, 32), expected_red), atol=1e-5, rtol=0)
    assert preprocess(rgb, (32, 64), OPENAI_MEAN, OPENAI_STD, 16).shape == (1, 3, 32, 64)


@pytest.mark.parametrize("size,match", [(230, "try 224x224"), ((224, 100), "try 224x96"), (8, "16-pixel"),
                                        ("224", "int S or a pair")])
def test_input_size_must_be_whole_patches(size, match):
    with pytest.raises(ValueError, match=match):
        check_input_size(size, 16)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
