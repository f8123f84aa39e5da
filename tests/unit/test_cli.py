"""The `clipsurgery` command: usage errors exit 2, runtime errors exit 1 with one line, a figure on success."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsurgery_widgets import __version__
from clipsurgery_widgets.cli import main, parse_size


@pytest.fixture
def photo(tmp_path) -> Path:
    rgb = np.zeros((60, 90, 3), np.uint8)
    rgb[10:40, 20:50] = (220, 30, 30)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    return path


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own exits
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "explain" in out
    code, out, _ = run(capsys, "explain", "--help")
    assert code == 0 and "--checkpoint" in out and "--labels" in out


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "explain" in err


@pytest.mark.parametrize("extra,match", [
    ([], "--labels"),
    (["--labels", " , "], "--labels is empty"),
    (["--labels", "cat", "--size", "big"], "--size must be"),
    (["--labels", "cat", "--size", "0"], "--size must be"),
    (["--labels", "cat", "--opacity", "1.5"], "--opacity"),
    (["--labels", "cat", "--cmap", "nocolours"], "not a matplotlib colour map"),
    (["--labels", "cat", "--out", "fig.txt"], "--out must end"),
    (["--labels", "cat", "--method", "magic"], "invalid choice"),
    (["--labels", "cat", "--layout", "poster"], "use column, page"),
    (["--labels", "cat", "--layout", "100"], "between 0.5 and 60"),
])
def test_usage_errors_exit_2(capsys, photo, extra, match):
    code, _, err = run(capsys, "explain", str(photo), "--model", "tiny-random-vit", *extra)
    assert code == 2
    assert match in err


def test_size_not_in_whole_patches_is_a_usage_error(capsys, photo):
    code, _, err = run(capsys, "explain", str(photo), "--labels", "cat", "--model", "tiny-random-vit", "--size", "230")
    assert code == 2 and "224x224" in err


@pytest.mark.parametrize("argv,match", [
    (["explain", "missing.png", "--labels", "cat", "--model", "tiny-random-vit"], "Image file not found"),
    (["explain", "{photo}", "--labels", "cat", "--model", "ViT-B-61"], "Did you mean"),
    (["explain", "{photo}", "--labels", "cat"], "checkpoint"),  # default model offline
    (["explain", "{photo}", "--labels", "cat", "--model", "tiny-random-vit", "--checkpoint", "nope.pt"], "not found"),
])
def test_runtime_errors_exit_1_with_one_line(capsys, photo, argv, match):
    argv = [a.replace("{photo}", str(photo)) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("clipsurgery: error:")]
    assert len(lines) == 1 and match in lines[0]
    assert "Traceback" not in err


def test_verbose_shows_traceback(capsys):
    code, _, err = run(capsys, "explain", "missing.png", "--labels", "cat", "--model", "tiny-random-vit", "--verbose")
    assert code == 1 and "Traceback" in err


@pytest.mark.parametrize("model", ["tiny-random-vit", "tiny-random-resnet"])
def test_explain_writes_a_figure(capsys, tmp_path, photo, model):
    def figure_size(labels, method):
        out = tmp_path / "figs" / f"{method}-{len(labels.split(','))}.png"
        code, _, err = run(capsys, "explain", str(photo), "--labels", labels, "--model", model,
                           "--method", method, "--size", "224", "--out", str(out))
        assert code == 0, err
        assert "[3/3] wrote" in err
        with Image.open(out) as fig:
            return fig.size

    three_both = figure_size("red square,background,cat+dog", "both")
    three_surgery = figure_size("red square,background,cat+dog", "surgery")
    one_both = figure_size("red square", "both")
    assert three_both[0] > three_surgery[0]  # image / raw / surgery columns versus image / surgery
    assert three_both[1] > 2 * one_both[1]  # one row per label


def test_sample_image_and_non_square_size(capsys, tmp_path):
    out = tmp_path / "fig.pdf"
    code, _, err = run(capsys, "explain", "sample:cat", "--labels", "cat", "--model", "tiny-random-vit",
                       "--size", "160x224", "--out", str(out), "--quiet")
    assert code == 0 and err == ""
    assert out.read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("layout,inches", [("column", 3.5), ("page", 7.0), ("5", 5.0), ("4x3", 4.0)])
def test_layout_sizes_the_figure_for_print(capsys, tmp_path, layout, inches):
    out = tmp_path / "fig.png"
    code, _, err = run(capsys, "explain", "sample:cat", "--labels", "cat,dog", "--model", "tiny-random-vit",
                       "--size", "224", "--out", str(out), "--dpi", "100", "--layout", layout, "--quiet")
    assert code == 0, err
    with Image.open(out) as fig:
        assert fig.size[0] == pytest.approx(inches * 100, abs=1)  # exactly the printed width
        if "x" in layout:
            assert fig.size[1] == pytest.approx(300, abs=1)


def test_parse_size():
    assert parse_size("512") == 512 and parse_size("448x672") == (448, 672)


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "clipsurgery"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and __version__ in result.stdout


# --- dense methods: --compare and the segment subcommand -----------------------------------------

def test_compare_writes_one_grid_from_one_pass(capsys, photo, tmp_path, monkeypatch):
    import clipsurgery_widgets.engine.explainer as explainer_module

    passes = []
    original = explainer_module.encode_dense_many
    monkeypatch.setattr(explainer_module, "encode_dense_many", lambda *a, **k: passes.append(1) or original(*a, **k))
    out = tmp_path / "compare.png"
    code, _, err = run(capsys, "explain", str(photo), "--labels", "red,square", "--model", "tiny-random-vit",
                       "--compare", "sclip, clearclip,naclip", "--out", str(out))
    assert code == 0, err
    assert passes == [1] and "sclip, clearclip, naclip" in err
    grid = np.asarray(Image.open(out))
    assert grid.shape[1] > grid.shape[0]  # 2 label rows, 4 columns (image + three methods)


@pytest.mark.parametrize("method", ["gem", "surgery"])
def test_every_method_name_is_accepted(capsys, photo, tmp_path, method):
    code, _, err = run(capsys, "explain", str(photo), "--labels", "red", "--model", "tiny-random-vit",
                       "--method", method, "--out", str(tmp_path / "m.png"))
    assert code == 0, err
    assert (tmp_path / "m.png").stat().st_size > 0


def test_segment_with_a_class_file_writes_figure_and_labels(capsys, photo, tmp_path):
    classes = tmp_path / "names.txt"
    classes.write_text("background, floor\nred square, red box\n")
    out, labels = tmp_path / "seg.png", tmp_path / "labels.png"
    code, _, err = run(capsys, "segment", str(photo), "--classes", str(classes), "--model", "tiny-random-vit",
                       "--method", "naclip", "--crop", "0", "--out", str(out), "--save-labels", str(labels))
    assert code == 0, err
    index = np.asarray(Image.open(labels))
    assert index.shape == (60, 90) and index.dtype == np.uint8 and set(np.unique(index)) <= {0, 1}
    assert out.stat().st_size > 0 and "2 classes with naclip" in err


def test_segment_uses_the_benchmark_settings_unless_overridden(capsys, photo, tmp_path):
    code, _, err = run(capsys, "segment", str(photo), "--classes", "voc21", "--model", "tiny-random-vit",
                       "--method", "sclip", "--short-side", "112", "--out", str(tmp_path / "s.png"))
    assert code == 0, err
    assert "logit_scale=65.0" in err and "area_thd=0.1" in err and "short_side=112" in err


@pytest.mark.parametrize("extra,match", [
    (["--classes", "vocc21"], "neither a benchmark"),
    (["--classes", "voc21", "--method", "magic"], "invalid choice"),
    (["--classes", "voc21", "--save-labels", "x.jpg"], "--save-labels must end in .png"),
    (["--classes", "voc21", "--crop", "8"], "crop"),
])
def test_segment_usage_errors(capsys, photo, tmp_path, extra, match):
    code, _, err = run(capsys, "segment", str(photo), "--model", "tiny-random-vit",
                       "--out", str(tmp_path / "s.png"), *extra)
    assert code in (1, 2) and match in err
