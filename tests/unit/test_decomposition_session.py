"""DecompositionSession: each answer against a direct computation with the engine's building blocks."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.decomposition import session as session_module
from clipsurgery_widgets.engine.decomposition.ablation import Ablation, DecompositionInputError
from clipsurgery_widgets.engine.decomposition.dataset_pass import PassInterrupted, decompose_images
from clipsurgery_widgets.engine.decomposition.session import DecompositionNotReady, DecompositionSession
from clipsurgery_widgets.engine.decomposition.terms import decompose, spatial_maps
from clipsurgery_widgets.engine.decomposition.textspan import encode_text_pool, text_span
from clipsurgery_widgets.engine.errors import ImageInputError, UnsupportedModelError
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.images import preprocess
from clipsurgery_widgets.engine.text.encoding import TEMPLATES

POOL = [f"pattern {i}" for i in range(24)] + ["a red car", "a dog on grass"]
LABELS = ("cat", "dog", "car")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (48 + 16 * i, 80, 3), dtype=np.uint8) for i in range(4)]


@pytest.fixture
def session(explainer, images, tmp_path):
    return DecompositionSession(explainer, images, texts=POOL, cache_dir=tmp_path)


def reference(explainer, rgb):
    model = explainer.model
    return decompose(model, preprocess(rgb, 224, model.mean, model.std, 16), spatial=True)


def test_contributions_are_the_terms_dotted_with_each_label(session, explainer, images):
    got = session.contributions(1, "cat, dog, car")
    d = reference(explainer, images[1])
    features = explainer.label_features(list(LABELS), TEMPLATES)
    assert got.labels == LABELS and got.index == 1 and got.heads.shape == (3, 6, 2)
    np.testing.assert_array_equal(got.rgb, images[1])
    for t, feature in enumerate(features):
        np.testing.assert_allclose(got.heads[t], (d.head_terms()[0] @ feature).numpy(), atol=1e-5)
        np.testing.assert_allclose(got.layers[t], (d.layer_terms()[0] @ feature).numpy(), atol=1e-5)
        np.testing.assert_allclose(got.mlps[t], (d.mlp[0, 1:] @ feature).numpy(), atol=1e-5)
    # all contributions together are the cosine of the image embedding with the label
    with torch.no_grad():
        model = explainer.model
        emb = F.normalize(model.model.encode_image(preprocess(images[1], 224, model.mean, model.std, 16)), dim=-1)[0]
    total = got.heads.sum((1, 2)) + got.mlps.sum(1) + got.embedding
    np.testing.assert_allclose(total, (features @ emb).numpy(), atol=1e-4)
    assert got.row("car") == 2
    with pytest.raises(DecompositionInputError, match="zebra"):
        got.row("zebra")


def test_maps_are_the_spatial_maps_of_the_decomposition(session, explainer, images):
    d = reference(explainer, images[0])
    features = explainer.label_features(list(LABELS), TEMPLATES)
    np.testing.assert_allclose(session.maps(0, LABELS), spatial_maps(d, features)[0].numpy(), atol=1e-5)
    one = session.maps(0, LABELS, heads=[(4, 1)], size=(30, 40))
    assert one.shape == (3, 30, 40)
    np.testing.assert_allclose(one, spatial_maps(d, features, heads=[(4, 1)], size=(30, 40))[0].numpy(), atol=1e-5)
    with pytest.raises(DecompositionInputError, match=r"no head \(6, 0\)"):
        session.maps(0, LABELS, heads=[(6, 0)])


def test_image_set_terms_with_progress_stop_and_resume(session, explainer, images, tmp_path):
    assert session.set_terms is None and session.means is None
    stop = threading.Event()
    told = []

    def progress(text):
        told.append(text)
        if "2/4" in text:
            stop.set()

    with pytest.raises(PassInterrupted, match="resum"):
        session.image_set_terms(stop=stop, progress=progress)
    assert session.set_terms is None and len(list(tmp_path.rglob("*.npz"))) == 2
    assert told[0].startswith("Decomposing the image set: 0/4")
    terms = session.image_set_terms()
    expected = decompose_images(explainer, images, cache_dir=False, progress=False)
    torch.testing.assert_close(terms.attn, expected.attn, atol=1e-6, rtol=1e-5)
    assert session.set_terms is terms
    torch.testing.assert_close(session.means.attn, expected.attn.mean(0))
    torch.testing.assert_close(session.means.mlp, expected.mlp.mean(0))


def test_added_images_join_the_set_and_only_they_are_decomposed(session, explainer, images, monkeypatch):
    first = session.image_set_terms()
    counted = []
    original = session_module.decompose_images

    def counting(model, batch, **kwargs):
        counted.append(len(batch))
        return original(model, batch, **kwargs)

    monkeypatch.setattr(session_module, "decompose_images", counting)
    extra = np.random.default_rng(11).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert session.add_image(extra) == 4 and session.image_count == 5
    assert session.set_terms is None and session.image_names()[4] == "image 5"
    both = session.image_set_terms()
    assert counted == [1] and both.attn.shape[0] == 5
    torch.testing.assert_close(both.attn[:4], first.attn)
    alone = decompose_images(explainer, [extra], cache_dir=False, progress=False)
    torch.testing.assert_close(both.attn[4:], alone.attn, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(session.means.attn, both.attn.mean(0))
    np.testing.assert_array_equal(session.image(4), extra)


def test_two_threads_share_one_pass(session, monkeypatch):
    counted = []
    original = session_module.decompose_images

    def counting(model, batch, **kwargs):
        counted.append(len(batch))
        return original(model, batch, **kwargs)

    monkeypatch.setattr(session_module, "decompose_images", counting)
    results = []
    threads = [threading.Thread(target=lambda: results.append(session.image_set_terms())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert counted == [4] and len(results) == 2 and results[0] is results[1]


def test_head_texts_are_textspan_over_the_set(session, explainer):
    assert session.cached_head_texts(5, 1, m=4, rank=80) is None
    told = []
    texts = session.head_texts(5, 1, m=4, rank=80, progress=told.append)
    pool = encode_text_pool(explainer, POOL, progress=False)
    expected = text_span(session.set_terms.attn[:, 5, 1], pool, POOL, m=4, rank=80)
    assert [t for t, _ in texts] == [t for t, _ in expected] and texts
    np.testing.assert_allclose([f for _, f in texts], [f for _, f in expected], atol=1e-6)
    assert session.cached_head_texts(5, 1, m=4, rank=80) == texts
    assert any("pool texts" in t for t in told) and any("layer 5, head 1" in t for t in told)
    session.add_image(np.zeros((32, 32, 3), np.uint8))
    assert session.cached_head_texts(5, 1, m=4, rank=80) is None  # the set changed
    with pytest.raises(DecompositionInputError, match=r"no head \(5, 2\)"):
        session.head_texts(5, 2)


def test_prediction_before_and_after_mean_ablation(session, explainer, images):
    with pytest.raises(DecompositionNotReady, match="image_set_terms"):
        session.prediction(0, LABELS)
    terms = session.image_set_terms()
    features = explainer.label_features(list(LABELS), TEMPLATES)
    scale = float(explainer.model.model.logit_scale.detach().exp())
    d = reference(explainer, images[2])

    def probs(embedding):
        return torch.softmax(scale * F.normalize(embedding, dim=-1) @ features.T, -1).numpy()

    plain = session.prediction(2, LABELS)
    np.testing.assert_allclose(plain.before, probs(d.total()[0]), atol=1e-5)
    np.testing.assert_allclose(plain.after, plain.before, atol=1e-7)
    ablation = Ablation(heads={(3, 0)}, mlps={1})
    p = session.prediction(2, LABELS, ablation)
    literal = (d.total()[0] - d.head_terms()[0, 3, 0] + terms.attn[:, 3, 0].mean(0)
               - d.mlp[0, 2] + terms.mlp[:, 2].mean(0))
    np.testing.assert_allclose(p.after, probs(literal), atol=1e-5)
    assert p.top_after == LABELS[int(np.argmax(p.after))] and p.ablation == ablation
    everything = session.prediction(2, LABELS, Ablation.everything(6, 2))
    np.testing.assert_allclose(everything.after, probs(terms.embeddings().mean(0)), atol=1e-5)
    with pytest.raises(DecompositionInputError, match="attention layer 9"):
        session.prediction(2, LABELS, Ablation(attn_layers={9}))
    with pytest.raises(DecompositionInputError, match="Ablation"):
        session.prediction(2, LABELS, {"heads": []})
    with pytest.raises(ImageInputError, match="no image 7"):
        session.prediction(7, LABELS)


def test_accuracy_counts_the_best_label(session, explainer):
    terms = session.image_set_terms()
    features = explainer.label_features(list(LABELS), TEMPLATES)
    targets = [0, 1, 2, 0]
    ablation = Ablation(attn_layers={4, 5})
    result = session.accuracy(LABELS, targets, ablation)
    before = (F.normalize(terms.embeddings(), dim=-1) @ features.T).argmax(-1).numpy()
    assert result.accuracy_before == pytest.approx(np.mean(before == np.array(targets)))
    mean = terms.attn.mean(0)
    after_emb = terms.embeddings() - terms.attn[:, 4:].sum((1, 2)) + mean[4:].sum((0, 1))
    after = (F.normalize(after_emb, dim=-1) @ features.T).argmax(-1).numpy()
    assert result.accuracy_after == pytest.approx(np.mean(after == np.array(targets)))


def test_refusals_and_other_inputs(explainer, tiny_vit, tiny_resnet, tmp_path):
    with pytest.raises(ImageInputError, match="No images"):
        DecompositionSession(explainer, [], texts=POOL)
    with pytest.raises(UnsupportedModelError, match="vision transformers"):
        DecompositionSession(Explainer(tiny_resnet, cache_dir=False), [np.zeros((8, 8, 3), np.uint8)], texts=POOL)
    folder = tmp_path / "set"
    folder.mkdir()
    from PIL import Image

    for name in ("b.png", "a.jpg"):
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(folder / name)
    s = DecompositionSession(tiny_vit, folder, texts=POOL, cache_dir=False)  # a LoadedModel works too
    assert s.image_names() == ["a.jpg", "b.png"] and s.num_layers == 6 and s.num_heads == 2
    assert s.image(1).shape == (20, 30, 3) and s.logit_scale == pytest.approx(explainer.model.logit_scale)
    with pytest.raises(ImageInputError, match="no image 2"):
        s.image(2)


def test_heads_and_toggled_ablations(session):
    assert session.head((5, 1)) == (5, 1) and session.head(np.array([0, 1])) == (0, 1)
    for bad in ((5.5, 1), "12", (1, 2, 3), None):
        with pytest.raises(DecompositionInputError, match="pair of whole numbers"):
            session.head(bad)
    with pytest.raises(DecompositionInputError, match=r"no head \(0, 2\)"):
        session.head((0, 2))
    a = Ablation(heads={(1, 0)}, mlps={3}).toggled(heads=[(1, 0), (2, 1)], attn_layers=[4], mlps=[3, 5], embedding=True)
    assert a == Ablation(heads={(2, 1)}, attn_layers={4}, mlps={5}, embedding=True)
    assert a.toggled(embedding=True).embedding is False and a.toggled() == a
