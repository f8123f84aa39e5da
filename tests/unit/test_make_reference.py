"""scripts/make_reference.py on the tiny random model: the files it writes, its refusal of random
weights, and the notebook helper that shows the files (clipsurgery_widgets/figures/reference.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
from matplotlib.figure import Figure
from PIL import Image

from clipsurgery_widgets.figures.reference import load_reference, reference_html

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_reference.py"


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT, "make_reference")


@pytest.fixture(scope="module")
def written(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    code = script.main(["--model", "tiny-random-vit", "--out", str(out), "--allow-random"])
    assert code == 0
    return out


def test_every_reference_has_a_png_and_a_json(script, written):
    names = sorted(p.stem for p in written.iterdir())
    assert names == sorted(n for n in script.REFERENCES for _ in (0, 1))
    for name in script.REFERENCES:
        with Image.open(written / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) > 100
        record = json.loads((written / f"{name}.json").read_text())
        assert record["name"] == name and record["model"] == "tiny-random-vit"
        assert record["weights"] == "random" and record["pretrained"] is None
        assert record["numbers"] and record["what"]


def test_numbers_match_an_independent_computation(written):
    from clipsurgery_widgets.engine import Explainer, load_model, sample_image

    explainer = Explainer(load_model("tiny-random-vit", device="cpu"), cache_dir=False)
    rgb = sample_image("coffee")
    heat = explainer.explain(rgb, ["coffee cup", "saucer", "spoon", "table"]).map_for("coffee cup")
    cup = np.asarray(Image.open(SCRIPT.parents[1] / "notebooks" / "data" / "coffee_cup_mask.png")) > 0
    want = heat[cup].mean() - heat[~cup].mean()
    numbers = json.loads((written / "01_raw_vs_surgery.json").read_text())["numbers"]
    assert numbers["surgery map, cup inside - outside"] == pytest.approx(want, abs=1e-6)
    tokens = json.loads((written / "02_caption_tokens.json").read_text())["numbers"]
    assert "<start>" in tokens["astronaut: ranking"] and "<end>" in tokens["astronaut: ranking"]


def test_random_weights_are_refused_without_the_flag(script, tmp_path, capsys):
    code = script.main(["--model", "tiny-random-vit", "--out", str(tmp_path / "refs")])
    assert code == 2
    assert not (tmp_path / "refs").exists()
    assert "random weights" in capsys.readouterr().err


def test_the_default_folder_is_never_written_with_random_weights(script, monkeypatch):
    before = sorted(script.DEFAULT_OUT.glob("*")) if script.DEFAULT_OUT.exists() else []
    monkeypatch.setenv("CLIPSURGERY_MODEL", "tiny-random-vit")
    assert script.main([]) == 2
    after = sorted(script.DEFAULT_OUT.glob("*")) if script.DEFAULT_OUT.exists() else []
    assert after == before


def test_unknown_reference_names_are_refused(script, tmp_path):
    assert script.main(["--model", "tiny-random-vit", "--out", str(tmp_path), "--allow-random",
                        "--only", "01_raw_vs_surgery,nope"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_helper_shows_a_stored_reference_beside_the_live_figure(written):
    live = Figure(figsize=(2, 2))
    live.subplots().plot([0, 1], [1, 0])
    page = reference_html("03_attention_stats", live=live, directory=written)
    assert page.count("data:image/png;base64,") == 2  # live + reference
    assert "RANDOM weights" in page  # a random-weight file never passes for a reference
    reference = load_reference("03_attention_stats", written)
    assert reference is not None and not reference.trained and reference.numbers


def test_helper_says_how_to_make_a_missing_reference(tmp_path):
    page = reference_html("08_feature_surgery", directory=tmp_path, what="The maps share their noise.")
    assert "No reference figure" in page and "make_reference.py" in page and "share their noise" in page
    assert load_reference("08_feature_surgery", tmp_path) is None
    with pytest.raises(ValueError, match="file stems"):
        load_reference("../etc/passwd", tmp_path)
