"""Reliability of the disk caches (issue 16): every cached read is validated before use (a damaged
or planted file is deleted, recomputed and logged once); writes are atomic and durable; an
unwritable cache warns once and everything still works without it."""
from __future__ import annotations

import logging
import os
import struct
import warnings

import numpy as np
import pytest
import torch

from clipsurgery_widgets.engine import load_model
from clipsurgery_widgets.engine.decomposition.dataset_pass import decompose_images
from clipsurgery_widgets.engine.decomposition.textspan import encode_text_pool
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.text.encoding import encode_texts

IMAGES = [np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8) for i in range(2)]


@pytest.fixture(scope="module")
def vit():
    return load_model("tiny-random-vit", device="cpu")


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def huge_header() -> bytes:
    """A valid .npy header declaring 10^10 float32 values, followed by almost nothing."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + b"\x00" * 16


def damaged_label_files(dim: int) -> dict[str, bytes]:
    return {
        "empty": b"",
        "truncated": npy_bytes(np.ones(dim, np.float32))[:-7],
        "wrong_shape": npy_bytes(np.ones(dim + 3, np.float32)),
        "zero_d": npy_bytes(np.float32(1.0)),
        "float64": npy_bytes(np.ones(dim, np.float64) / np.sqrt(dim)),
        "int64": npy_bytes(np.ones(dim, np.int64)),
        "nan": npy_bytes(np.full(dim, np.nan, np.float32)),
        "huge": huge_header(),
        "garbage": b"\x93NUMPY not really",
    }


def label_file(root, label: str = "cat"):
    files = list((root / "label-features").rglob("*.npy"))
    assert len(files) == 1, files
    return files[0]


# --- item 3: damaged label features ---------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(damaged_label_files(32)))
def test_damaged_label_feature_file_is_replaced_by_a_fresh_value(vit, tmp_path, caplog, kind):
    Explainer(vit, cache_dir=tmp_path).label_features(["cat"])
    path = label_file(tmp_path)
    path.write_bytes(damaged_label_files(32)[kind])
    explainer = Explainer(vit, cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="clipsurgery_widgets"):
        got = explainer.label_features(["cat"])
        explainer.label_features(["cat"])  # now served from memory; no second message
    expected = encode_texts(vit, None, ["cat"])
    torch.testing.assert_close(got, expected)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    messages = [r for r in caplog.records if "cache" in r.getMessage().lower()]
    assert len(messages) == 1, [r.getMessage() for r in caplog.records]
    # the damaged file was replaced by a good one
    np.testing.assert_array_equal(np.load(path), expected[0].numpy())


def test_explain_works_after_a_damaged_label_file(vit, tmp_path):
    Explainer(vit, cache_dir=tmp_path).explain(IMAGES[0], ["cat", "dog"])
    for path in (tmp_path / "label-features").rglob("*.npy"):
        path.write_bytes(npy_bytes(np.full(32, np.nan, np.float32)))
    result = Explainer(vit, cache_dir=tmp_path).explain(IMAGES[0], ["cat", "dog"])
    fresh = Explainer(vit, cache_dir=False).explain(IMAGES[0], ["cat", "dog"])
    np.testing.assert_allclose(result.surgery.patch_scores, fresh.surgery.patch_scores, atol=1e-6)


def test_label_feature_writes_are_fsynced(vit, tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    Explainer(vit, cache_dir=tmp_path).label_features(["cat"])
    assert len(synced) >= 2  # the file, then its directory
    assert not list((tmp_path / "label-features").rglob("*.tmp"))


# --- item 3: decomposition .npz -------------------------------------------------------------------

def damaged_npz(good: bytes, tmp_path) -> dict[str, bytes]:
    import io

    wrong = io.BytesIO()
    np.savez(wrong, attn=np.ones((2, 2, 32), np.float32), mlp=np.ones((7, 32), np.float32),
             norm=np.float32(1.0))
    huge = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(huge, "w") as zf:
        zf.writestr("attn.npy", huge_header())
        zf.writestr("mlp.npy", npy_bytes(np.ones((7, 32), np.float32)))
        zf.writestr("norm.npy", npy_bytes(np.float32(1.0)))
    return {"empty": b"", "truncated": good[: len(good) // 2], "wrong_shape": wrong.getvalue(),
            "huge": huge.getvalue()}


@pytest.mark.parametrize("kind", ["empty", "truncated", "wrong_shape", "huge"])
def test_damaged_decomposition_file_is_recomputed(vit, tmp_path, caplog, kind):
    fresh = decompose_images(vit, IMAGES[:1], cache_dir=False, progress=False)
    decompose_images(vit, IMAGES[:1], cache_dir=tmp_path, progress=False)
    (path,) = (tmp_path / "decomposition").rglob("*.npz")
    path.write_bytes(damaged_npz(path.read_bytes(), tmp_path)[kind])
    with caplog.at_level(logging.WARNING, logger="clipsurgery_widgets"):
        got = decompose_images(vit, IMAGES[:1], cache_dir=tmp_path, progress=False)
    assert torch.equal(got.attn, fresh.attn) and torch.equal(got.mlp, fresh.mlp)
    assert torch.equal(got.norms, fresh.norms)
    assert len([r for r in caplog.records if "cache" in r.getMessage().lower()]) == 1


# --- item 3: the text-pool cache -------------------------------------------------------------------

def test_text_pool_cache_of_the_wrong_width_is_recomputed(vit, tmp_path):
    texts = ["a red car", "a dog on grass", "a city at night"]
    good = encode_text_pool(vit, texts, cache_dir=tmp_path, progress=False)
    (path,) = (tmp_path / "label-features").rglob("*.npy")
    path.write_bytes(npy_bytes(np.ones((3, 7), np.float32)))
    again = encode_text_pool(vit, texts, cache_dir=tmp_path, progress=False)
    torch.testing.assert_close(again, good)
    assert np.load(path).shape == (3, 32)


# --- item 4: unwritable caches ------------------------------------------------------------------------

def test_unwritable_label_cache_warns_once_and_works(vit, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    explainer = Explainer(vit, cache_dir=blocker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explainer.label_features(["cat"])
        explainer.label_features(["dog"])
        decompose_images(vit, IMAGES[:1], cache_dir=blocker, progress=False)
    torch.testing.assert_close(explainer.label_features(["cat", "dog"]), encode_texts(vit, None, ["cat", "dog"]))
    cache_warnings = [w for w in caught if "cache" in str(w.message).lower()]
    assert len(cache_warnings) == 1, [str(w.message) for w in caught]
    assert "not-a-dir" in str(cache_warnings[0].message)


def test_sam_cache_in_a_file_path_warns_once_and_works(tmp_path, tiny_sam):
    from clipsurgery_widgets.engine.sam.refiner import SamRefiner

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    refiner = SamRefiner(tiny_sam, cache_dir=blocker / "sub")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refiner.set_image(IMAGES[0])
        refiner.set_image(IMAGES[1])
    assert refiner.embeddings_computed == 2 and refiner.predict(points=[[5, 5]]) is not None
    assert len([w for w in caught if "cache" in str(w.message).lower()]) == 1


def test_sam_cache_on_a_read_only_store_warns_and_works(tmp_path, tiny_sam, monkeypatch):
    """A read-only filesystem: every write fails with EROFS (simulated; tests may run as root)."""
    import errno

    from clipsurgery_widgets.engine import cache as cache_module
    from clipsurgery_widgets.engine.sam.refiner import SamRefiner

    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(tmp_path) in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(cache_module.os, "open", read_only_open)
    refiner = SamRefiner(tiny_sam, cache_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refiner.set_image(IMAGES[0])
    assert refiner.embeddings_computed == 1
    assert len([w for w in caught if "cache" in str(w.message).lower()]) == 1


def test_damaged_sam_embedding_file_is_deleted_and_recomputed(tmp_path, tiny_sam):
    from clipsurgery_widgets.engine.sam.refiner import SamRefiner

    SamRefiner(tiny_sam, cache_dir=tmp_path).set_image(IMAGES[0])
    (path,) = tmp_path.glob("*.pt")
    data = torch.load(path, weights_only=True)
    data["features"] = torch.full_like(data["features"], float("nan"))
    torch.save(data, path)
    refiner = SamRefiner(tiny_sam, cache_dir=tmp_path)
    refiner.set_image(IMAGES[0])
    assert refiner.embeddings_computed == 1
    assert torch.isfinite(torch.load(path, weights_only=True)["features"]).all()
