"""DecompositionExplorer driven from Python: what the grid, bars, maps, texts and readout show."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from clipsurgery_widgets.engine.decomposition.ablation import Ablation
from clipsurgery_widgets.engine.decomposition.terms import decompose
from clipsurgery_widgets.engine.decomposition.textspan import (
    encode_text_pool,
    text_span,
)
from clipsurgery_widgets.engine.errors import ImageInputError, UnsupportedModelError
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import preprocess
from clipsurgery_widgets.engine.text.encoding import TEMPLATES
from clipsurgery_widgets.widgets import decomposition as widget_module
from clipsurgery_widgets.widgets import plotting
from clipsurgery_widgets.widgets.decomposition import DecompositionExplorer

POOL = [f"texture number {i}" for i in range(30)] + ["a <script>alert(1)</script> sign", "a red car", "a dog"]
LABELS = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64 + 16 * i, 96, 3), dtype=np.uint8) for i in range(4)]


@pytest.fixture
def explorer(explainer, images, tmp_path):
    w = DecompositionExplorer(explainer, images, texts=POOL, labels=LABELS, cache_dir=tmp_path)
    assert w.wait(60)
    assert w.error is None, w.error
    return w


def reference_decomposition(explainer, rgb):
    model = explainer.model
    return decompose(model, preprocess(rgb, 224, model.mean, model.std, 16), spatial=True)


def probs(embedding, features, scale):
    emb = embedding / embedding.norm()
    return torch.softmax(scale * emb @ features.T, -1).numpy()


def test_grid_and_bars_show_each_heads_contribution_to_the_label(explorer, explainer, images):
    d = reference_decomposition(explainer, images[0])
    feature = explainer.label_features(["cat"], TEMPLATES)[0]
    expected = (d.head_terms()[0] @ feature).numpy()
    assert explorer.label == "cat"
    np.testing.assert_allclose(np.asarray(explorer.grid_figure.data[0].z), expected, atol=1e-4)
    np.testing.assert_allclose(explorer.bar_figure.data[0].y, (d.layer_terms()[0] @ feature).numpy(), atol=1e-4)
    np.testing.assert_allclose(explorer.bar_figure.data[1].y, (d.mlp[0, 1:] @ feature).numpy(), atol=1e-4)
    explorer.label = "car"
    car = explainer.label_features(["car"], TEMPLATES)[0]
    np.testing.assert_allclose(np.asarray(explorer.grid_figure.data[0].z), (d.head_terms()[0] @ car).numpy(),
                               atol=1e-4)
    assert "car" in explorer.grid_figure.layout.title.text


def test_selecting_a_head_shows_its_texts_and_map(explorer, explainer):
    texts = explorer.select_head(5, 1)
    pool = encode_text_pool(explainer, POOL, progress=False)
    expected = text_span(explorer.set_terms.attn[:, 5, 1], pool, POOL, m=10, rank=80)
    assert [t for t, _ in texts] == [t for t, _ in expected] and texts
    html = explorer.texts_html
    assert "Layer 5, head 1" in html and all(t.replace("<", "&lt;") in html for t, _ in texts[:3])
    assert list(explorer.grid_figure.data[2].x) == [1] and list(explorer.grid_figure.data[2].y) == [5]
    head_heat = explorer.map_figure.data[1 * plotting.TRACES_PER_PANEL + plotting.HEAT_TRACE]
    assert head_heat.z is not None and np.nanmax(np.asarray(head_heat.z, dtype=float)) == pytest.approx(1.0, abs=0.05)
    assert "layer 5, head 1" in explorer.map_figure.layout.annotations[1].text


def test_clicking_a_cell_inspects_or_ablates(explorer):
    explorer.click_cell(4, 0)
    assert explorer.selected_head == (4, 0) and explorer.ablation.empty
    explorer.controls["mode"].value = "ablate"
    explorer.click_cell(3, 1)
    assert explorer.ablation.heads == {(3, 1)}
    assert list(explorer.grid_figure.data[1].x) == [1] and list(explorer.grid_figure.data[1].y) == [3]
    assert "1 head" in explorer.readout_html
    explorer.click_cell(3, 1)
    assert explorer.ablation.empty


def test_ablation_toggles_update_the_prediction(explorer, explainer, images):
    before = explorer.prediction
    np.testing.assert_allclose(before["before"], before["after"], atol=1e-6)  # nothing ablated yet
    assert "nothing" in explorer.readout_html
    explorer.toggle_layer(5)
    assert explorer.ablation.attn_layers == {5} and explorer._toggles["attn"][5].value
    # literal: replace layer 5's attention term by its mean over the image set
    d = reference_decomposition(explainer, images[0])
    set_mean = explorer.set_terms.attn[:, 5].sum(1).mean(0)
    ablated = d.total()[0] - d.layer_terms()[0, 5] + set_mean
    features = explainer.label_features(LABELS, TEMPLATES)
    scale = float(explainer.model.model.logit_scale.detach().exp())
    np.testing.assert_allclose(explorer.prediction["after"], probs(ablated, features, scale), atol=1e-5)
    np.testing.assert_allclose(explorer.prediction["before"], probs(d.total()[0], features, scale), atol=1e-5)
    assert "attention 5" in explorer.readout_html
    assert explorer.bar_figure.data[0].marker.color[5] != explorer.bar_figure.data[0].marker.color[0]
    explorer.toggle_layer(2, "mlp")
    assert explorer.ablation.mlps == {2} and "MLP 2" in explorer.readout_html
    explorer.controls["clear"].click()
    assert explorer.ablation.empty and not any(b.value for b in explorer._toggles["attn"])


def test_ablating_everything_predicts_the_set_mean(explorer, explainer):
    explorer.ablation = Ablation.everything(6, 2)
    mean_embedding = explorer.set_terms.embeddings().mean(0)
    features = explainer.label_features(LABELS, TEMPLATES)
    scale = float(explainer.model.model.logit_scale.detach().exp())
    np.testing.assert_allclose(explorer.prediction["after"], probs(mean_embedding, features, scale), atol=1e-5)
    assert all(b.value for b in explorer._toggles["mlp"]) and explorer.controls["embedding"].value


def test_all_but_last_four(explorer):
    explorer.controls["last4"].click()
    assert explorer.ablation.attn_layers == {0, 1}
    assert [b.value for b in explorer._toggles["attn"]] == [True, True, False, False, False, False]


def test_changing_image_and_labels(explorer, explainer, images):
    explorer.image_index = 2
    assert explorer.wait(30) and explorer.error is None
    d = reference_decomposition(explainer, images[2])
    torch.testing.assert_close(explorer.decomposition.attn, d.attn, atol=1e-5, rtol=1e-4)
    explorer.labels = "tree, <b>sky</b>"
    assert explorer.wait(30)
    assert list(explorer.controls["label"].options) == ["tree", "<b>sky</b>"]
    assert "&lt;b&gt;sky&lt;/b&gt;" in explorer.readout_html and "<b>sky</b>" not in explorer.readout_html
    with pytest.raises(ValueError, match="image_index"):
        explorer.image_index = 9


def test_errors_are_shown_and_the_widget_keeps_working(explorer):
    explorer.labels = " , "
    assert explorer.error is not None and "at least one label" in explorer.error
    explorer.labels = "cat, dog"
    assert explorer.wait(30) and explorer.error is None
    explorer.controls["mode"].value = "inspect"
    heatmap = explorer.grid_figure.data[0]
    (callback,) = heatmap._click_callbacks  # what plotly calls on a click
    callback(heatmap, SimpleNamespace(point_inds=[0], xs=[0], ys=[9]), None)
    assert "no head (9, 0)" in explorer.error
    callback(heatmap, SimpleNamespace(point_inds=[0], xs=[1], ys=[2]), None)
    assert explorer.selected_head == (2, 1)


def test_constructor_refusals(explainer, tiny_resnet):
    with pytest.raises(ImageInputError, match="No images"):
        DecompositionExplorer(explainer, [], texts=POOL)
    with pytest.raises(UnsupportedModelError, match="vision transformers"):
        DecompositionExplorer(Explainer(tiny_resnet, cache_dir=False), [np.zeros((8, 8, 3), np.uint8)], texts=POOL)


def test_stopped_pass_resumes(explainer, images, tmp_path, monkeypatch):
    calls = []
    original = widget_module.decompose_images

    def stop_after_two(*args, stop=None, on_image=None, **kwargs):
        def hook(done, total):
            on_image(done, total)
            if done == 2 and not calls:
                calls.append("stopped")
                stop.set()  # what the Stop button does mid-pass
        return original(*args, stop=stop, on_image=hook, **kwargs)

    monkeypatch.setattr(widget_module, "decompose_images", stop_after_two)
    w = DecompositionExplorer(explainer, images, texts=POOL, labels=LABELS, cache_dir=tmp_path)
    w.wait(60)
    assert w.error is not None and "resumes" in w.error and w.set_terms is None
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    w.resume()
    w.wait(60)
    assert w.error is None and w.set_terms.attn.shape[0] == 4


def test_shipped_pool_and_static_figure(explainer, images, tmp_path):
    w = DecompositionExplorer(explainer, images[:2], labels=LABELS, cache_dir=tmp_path)
    w.wait(60)
    texts = w.select_head(5, 0)
    assert texts and all(isinstance(t, str) for t, _ in texts)
    w.toggle_head(5, 1)
    fig = w.figure()
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("cat" in t for t in titles) and any(t.startswith("layer 5, head 0") for t in titles)
    assert "image/png" in w._repr_mimebundle_()
