"""Many images: Explainer.explain_many equals explain() one at a time; `clipsurgery explain DIR --out-dir`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipsurgery_widgets.cli import main
from clipsurgery_widgets.engine.explainer import Explainer

LABELS = ["red square", "background", "cat+dog"]


def picture(seed: int, shape=(60, 90)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 60, (*shape, 3), dtype=np.uint8)
    top, left = rng.integers(0, shape[0] // 2), rng.integers(0, shape[1] // 2)
    rgb[top:top + 20, left:left + 25] = (220, 30, 30)
    return rgb


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "photos"
    path.mkdir()
    for i in range(3):
        Image.fromarray(picture(i)).save(path / f"img{i}.png")
    Image.fromarray(picture(7, (40, 40))).save(path / "other.jpg")
    (path / "notes.txt").write_text("not an image")
    return path


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_resnet"])
@pytest.mark.parametrize("method", ["surgery", "both"])
def test_explain_many_equals_explain_one_by_one(request, fixture, method):
    model = request.getfixturevalue(fixture)
    images = [picture(i) for i in range(5)] + [picture(9, (50, 120))]
    batched = Explainer(model, cache_dir=False).explain_many(images, LABELS, batch_size=4, progress=False,
                                                            method=method, size=160)
    single = Explainer(model, cache_dir=False)
    assert len(batched) == len(images)
    for image, result in zip(images, batched):
        expected = single.explain(image, LABELS, method=method, size=160)
        assert result.labels == expected.labels and result.image_size == expected.image_size
        for name, maps in expected.by_method.items():
            np.testing.assert_allclose(result.by_method[name].patch_scores, maps.patch_scores, atol=1e-5, rtol=0)
        np.testing.assert_allclose(result.probs, expected.probs, atol=1e-5, rtol=0)
    # Different images give different maps (a batch mix-up would not pass the comparison above either).
    assert not np.allclose(batched[0].surgery.patch_scores, batched[1].surgery.patch_scores)


def test_explain_many_runs_the_image_tower_once_per_batch(tiny_vit, monkeypatch):
    import clipsurgery_widgets.engine.explainer as explainer_module

    calls = []
    real = explainer_module.encode_image_tokens

    def counting(model, pixels, **kwargs):
        calls.append(int(pixels.shape[0]))
        return real(model, pixels, **kwargs)

    monkeypatch.setattr(explainer_module, "encode_image_tokens", counting)
    images = [picture(i) for i in range(7)]
    Explainer(tiny_vit, cache_dir=False).explain_many(images, LABELS, batch_size=3, progress=False)
    assert calls == [3, 3, 1]
    calls.clear()  # the default on the CPU: one image per pass (batches were not faster there)
    Explainer(tiny_vit, cache_dir=False).explain_many(images[:3], LABELS, progress=False)
    assert calls == [1, 1, 1]


def test_the_default_batch_size_follows_the_device():
    from clipsurgery_widgets.engine.batch_explain import default_batch_size

    assert default_batch_size("cpu") == default_batch_size(torch.device("cpu")) == 1
    assert default_batch_size("cuda:0") == default_batch_size(torch.device("cuda")) == 8


def test_explain_many_progress_bar_and_bad_batch_size(tiny_vit, capsys):
    explainer = Explainer(tiny_vit, cache_dir=False)
    explainer.explain_many([picture(1), picture(2)], ["dog"], progress=True)
    assert "2/2" in capsys.readouterr().err
    seen = []
    images = [picture(3), picture(4), picture(5)]
    results = explainer.explain_many(images, ["dog"], batch_size=2, progress=False,
                                     on_result=lambda i, rgb, e: seen.append((i, rgb.shape, e)))
    assert [i for i, _, _ in seen] == [0, 1, 2] and [e for _, _, e in seen] == results
    assert all(shape == (60, 90, 3) for _, shape, _ in seen)
    with pytest.raises(ValueError, match="batch_size"):
        explainer.explain_many([picture(1)], ["dog"], batch_size=0)


def test_cli_folder_writes_one_figure_per_image_and_skips_existing(capsys, folder, tmp_path):
    out_dir = tmp_path / "figs"
    argv = ("explain", str(folder), "--labels", "red square,background", "--model", "tiny-random-vit",
            "--out-dir", str(out_dir), "--batch-size", "2", "--quiet")
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["img0.png", "img1.png", "img2.png", "other.png"]
    for name in written:
        with Image.open(out_dir / name) as fig:
            assert fig.size[0] > 100 and fig.size[1] > 100
    stamp = (out_dir / "img0.png").stat().st_mtime_ns
    os.utime(out_dir / "img0.png", ns=(stamp - 10**9, stamp - 10**9))  # mark it as older
    (out_dir / "img1.png").unlink()
    code, _, err = run(capsys, *argv[:-1])
    assert code == 0, err
    assert "1 image(s)" in err and "3 already written" in err
    assert (out_dir / "img1.png").exists()
    assert (out_dir / "img0.png").stat().st_mtime_ns == stamp - 10**9  # skipped: not rewritten
    code, _, err = run(capsys, *argv[:-1], "--overwrite")
    assert code == 0 and "4 image(s)" in err
    assert (out_dir / "img0.png").stat().st_mtime_ns > stamp - 10**9


def test_cli_glob_and_format(capsys, folder, tmp_path):
    out_dir = tmp_path / "pdfs"
    code, _, err = run(capsys, "explain", str(folder / "img*.png"), "--labels", "red square", "--model",
                       "tiny-random-resnet", "--method", "surgery", "--out-dir", str(out_dir), "--out", "x.pdf",
                       "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["img0.pdf", "img1.pdf", "img2.pdf"]


@pytest.mark.parametrize("extra, match", [
    ((), "--out-dir"),
    (("--out-dir", "figs", "--batch-size", "0"), "--batch-size"),
])
def test_cli_folder_usage_errors(capsys, folder, extra, match):
    code, _, err = run(capsys, "explain", str(folder), "--labels", "cat", "--model", "tiny-random-vit", *extra)
    assert code == 2 and match in err


def test_cli_empty_folder_is_a_usage_error(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "explain", str(empty), "--labels", "cat", "--model", "tiny-random-vit",
                       "--out-dir", str(tmp_path / "figs"))
    assert code == 2 and "no images" in err


def test_batched_tokens_equal_single_tokens(tiny_vit):
    images = [picture(i) for i in range(3)]
    batched = Explainer(tiny_vit, cache_dir=False).image_tokens_many(images, 224)
    single = Explainer(tiny_vit, cache_dir=False)
    for image, tokens in zip(images, batched):
        one = single.image_tokens(image, 224)
        assert tokens.raw.shape == one.raw.shape == (1, 197, tiny_vit.model.visual.output_dim)
        torch.testing.assert_close(tokens.surgery, one.surgery, atol=1e-5, rtol=0)
