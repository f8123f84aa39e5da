"""Precision: resolution, autocast without touching the model or process state, agreement of bf16
with fp32 (label maps, segmentation, SAM masks), and caches that keep precisions apart."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipsurgery_widgets.engine import (Explainer, encode_image_tokens, encode_texts, preprocess, sample_image,
                                        segment)
from clipsurgery_widgets.engine.precision import (Precision, PrecisionError, check_precision, choose_precision,
                                                  computing_in, resolve_precision, using_precision)

LABELS = ["person", "rocket", "flag", "sky", "helmet"]


@pytest.fixture(scope="module")
def astronaut():
    return sample_image("astronaut")


@pytest.fixture(scope="module")
def calibrated_resnet():
    """A private tiny ResNet whose patch tokens differ: at random init they share one direction to 1e-7
    (zero-initialised bn3, BatchNorm statistics of no data), so its maps are rounding noise even in fp32.
    Here bn3 is switched on and the BatchNorm statistics are measured on the sample images."""
    from clipsurgery_widgets.engine import wrap_model
    from clipsurgery_widgets.engine.batchnorm import calibrate_batch_norms
    from clipsurgery_widgets.engine.loading import build_tiny_model

    clip = build_tiny_model("tiny-random-resnet")
    calibrate_batch_norms(clip.visual, [preprocess(sample_image(name), size, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), 32)
                                        for name in ("astronaut", "cat", "coffee", "rocket") for size in (224, 448)])
    return wrap_model(clip.eval())


# --- resolution and validation ------------------------------------------------------------------

def test_auto_is_fp32_on_the_cpu_and_names_are_checked():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(PrecisionError, match="'auto'.*'fp32'.*'bf16'.*'fp16'"):
        check_precision("half")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    assert Precision.resolve(None, "cpu") == Precision("fp32", "cpu")


def test_explainer_defaults_to_auto_and_refuses_fp16_on_the_cpu(tiny_vit):
    explainer = Explainer(tiny_vit, cache_dir=False)
    assert explainer.precision == "auto" and explainer.resolved_precision().name == "fp32"
    assert explainer.resolved_precision("bf16").name == "bf16"
    with pytest.raises(PrecisionError, match="fp16"):
        Explainer(tiny_vit, cache_dir=False, precision="fp16")
    with pytest.raises(PrecisionError, match="not a precision"):
        Explainer(tiny_vit, cache_dir=False, precision="float16")


def test_scope_order_call_then_block_then_own_setting():
    assert choose_precision() == "fp32"
    with using_precision("bf16"):
        assert choose_precision() == "bf16" and choose_precision(own="fp32") == "bf16"
        assert choose_precision("fp32") == "fp32"
    with using_precision("auto"):
        assert choose_precision(own="bf16") == "bf16" and choose_precision() == "auto"
    assert choose_precision() == "fp32"


# --- the model and the process are left as they were ---------------------------------------------

def _torch_state():
    return (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled(),
            torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), torch.random.get_rng_state().clone(),
            torch.backends.mha.get_fastpath_enabled())


def test_no_process_wide_state_and_no_model_change(tiny_vit, astronaut):
    before = _torch_state()
    weights = {k: v.clone() for k, v in tiny_vit.model.state_dict().items()}
    dtypes = {k: v.dtype for k, v in weights.items()}
    pixels = preprocess(astronaut, 224, tiny_vit.mean, tiny_vit.std, tiny_vit.patch_size)
    tokens = encode_image_tokens(tiny_vit.model, pixels, precision="bf16")
    feats = encode_texts(tiny_vit, None, ["dog"], templates=None, precision="bf16")
    assert tokens.raw.dtype == tokens.surgery.dtype == feats.dtype == torch.float32
    after = _torch_state()
    assert before[:5] == after[:5] and torch.equal(before[5], after[5]) and before[6] == after[6]
    state = tiny_vit.model.state_dict()
    assert all(state[k].dtype == dtypes[k] and torch.equal(state[k], weights[k]) for k in weights)


def test_fp32_switches_off_an_outer_autocast(tiny_vit, astronaut):
    pixels = preprocess(astronaut, 224, tiny_vit.mean, tiny_vit.std, tiny_vit.patch_size)
    plain = encode_image_tokens(tiny_vit.model, pixels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = encode_image_tokens(tiny_vit.model, pixels, precision="fp32")
        assert torch.is_autocast_enabled("cpu")  # the caller's block is still on afterwards
    assert torch.equal(plain.surgery, inside.surgery)
    with computing_in("bf16", tiny_vit.model) as p:
        assert p.reduced and torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")


# --- agreement with fp32 ----------------------------------------------------------------------------

def _pearsons(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Correlation of each label's map: a, b [N, T] patch scores."""
    return [float(np.corrcoef(a[:, t], b[:, t])[0, 1]) for t in range(a.shape[1])]


def _decided(fp32_maps: np.ndarray, share: float = 0.02) -> np.ndarray:
    """Pixels whose two best labels differ by more than ``share`` of the map range (random weights make near-ties)."""
    top2 = np.sort(fp32_maps, axis=0)[-2:]
    return (top2[1] - top2[0]) > share * (fp32_maps.max() - fp32_maps.min())


@pytest.mark.parametrize("size", [224, 448])
@pytest.mark.parametrize("method", ["surgery", "raw", "sclip", "naclip", "gem", "maskclip", "clearclip"])
def test_vit_bf16_maps_agree_with_fp32(tiny_vit, astronaut, method, size):
    explainer = Explainer(tiny_vit, cache_dir=False)
    a = explainer.explain(astronaut, LABELS, method=method, size=size, precision="fp32").mapset()
    b = explainer.explain(astronaut, LABELS, method=method, size=size, precision="bf16").mapset()
    assert min(_pearsons(a.patch_scores, b.patch_scores)) >= 0.99
    same = a.maps.argmax(0) == b.maps.argmax(0)
    decided = _decided(a.maps)
    assert decided.mean() > 0.2 and same[decided].mean() >= 0.98
    if method == "surgery":  # the default method: its maps are far enough apart for every pixel
        assert same.mean() >= 0.98


def test_vit_bf16_segmentation_agrees_with_fp32(tiny_vit, astronaut):
    a = segment(tiny_vit, astronaut, LABELS, method="sclip", precision="fp32")
    b = segment(tiny_vit, astronaut, LABELS, method="sclip", precision="bf16")
    assert (a.labels == b.labels).float().mean() >= 0.98
    assert b.probs.dtype == torch.float32


@pytest.mark.parametrize("size", [224, 448])
@pytest.mark.parametrize("method", ["surgery", "raw"])
def test_resnet_bf16_maps_agree_with_fp32(calibrated_resnet, astronaut, method, size):
    """The ResNet trunk in bf16 moves its nearly parallel patch tokens enough to cost a little
    agreement on this tiny model (see the closing note of the precision issue): bounds measured here."""
    explainer = Explainer(calibrated_resnet, cache_dir=False)
    a = explainer.explain(astronaut, LABELS, method=method, size=size, precision="fp32").mapset()
    b = explainer.explain(astronaut, LABELS, method=method, size=size, precision="bf16").mapset()
    assert min(_pearsons(a.patch_scores, b.patch_scores)) >= 0.97
    same = a.maps.argmax(0) == b.maps.argmax(0)
    assert same[_decided(a.maps)].mean() >= 0.8


def test_sam_bf16_masks_agree_with_fp32(astronaut):
    from clipsurgery_widgets.engine import SamRefiner, build_tiny_sam

    refiner = SamRefiner(build_tiny_sam())
    points = np.array([[250.0, 150.0], [300.0, 300.0], [100.0, 400.0]])
    masks = {}
    for precision in ("fp32", "bf16"):
        assert refiner.set_image(astronaut, precision=precision)
        masks[precision] = refiner.predict(points=points).masks
    assert refiner.embeddings_computed == 2  # one embedding per precision
    for m1, m2 in zip(masks["fp32"], masks["bf16"]):
        assert (m1 & m2).sum() / max((m1 | m2).sum(), 1) >= 0.95


# --- caches keep precisions apart -------------------------------------------------------------------

def test_explainer_caches_are_keyed_by_precision(tiny_vit, astronaut, tmp_path, monkeypatch):
    from clipsurgery_widgets.engine import explainer as explainer_module

    calls = []
    real_tokens, real_texts = explainer_module.encode_image_tokens, explainer_module.encode_texts
    monkeypatch.setattr(explainer_module, "encode_image_tokens",
                        lambda *a, **k: calls.append(("image", k["precision"])) or real_tokens(*a, **k))
    monkeypatch.setattr(explainer_module, "encode_texts",
                        lambda *a, **k: calls.append(("text", k["precision"])) or real_texts(*a, **k))
    explainer = Explainer(tiny_vit, cache_dir=tmp_path)
    fp32 = explainer.label_features(["dog"])
    bf16 = explainer.label_features(["dog"], precision="bf16")
    assert not torch.equal(fp32, bf16)  # two computations, not one cached result
    assert torch.equal(explainer.label_features(["dog"]), fp32)
    t32 = explainer.image_tokens(astronaut)
    t16 = explainer.image_tokens(astronaut, precision="bf16")
    assert not torch.equal(t32.surgery, t16.surgery)
    assert explainer.image_tokens(astronaut, precision="bf16") is t16
    assert calls == [("text", "fp32"), ("text", "bf16"), ("image", "fp32"), ("image", "bf16")]
    # On disk too: a new explainer finds both, each under its own precision.
    again = Explainer(tiny_vit, cache_dir=tmp_path)
    assert torch.equal(again.label_features(["dog"], precision="bf16"), bf16)
    assert torch.equal(again.label_features(["dog"]), fp32)
    assert len(calls) == 4
    with using_precision("bf16"):  # a widget's block: its explainer calls run in bf16
        assert explainer.image_tokens(astronaut) is t16


def test_dense_tokens_cache_is_keyed_by_precision(tiny_vit, astronaut):
    explainer = Explainer(tiny_vit, cache_dir=False)
    a, _ = explainer.method_tokens(astronaut, 224, ["sclip"])
    b, _ = explainer.method_tokens(astronaut, 224, ["sclip"], precision="bf16")
    assert not torch.equal(a["sclip"], b["sclip"]) and b["sclip"].dtype == torch.float32
    assert explainer.method_tokens(astronaut, 224, ["sclip"])[0]["sclip"] is a["sclip"]


def test_sam_embedding_cache_is_keyed_by_precision(astronaut, tmp_path):
    from clipsurgery_widgets.engine import SamRefiner, build_tiny_sam

    refiner = SamRefiner(build_tiny_sam(), cache_dir=tmp_path)
    assert refiner.image_key_of(astronaut) != refiner.image_key_of(astronaut, precision="bf16")
    refiner.set_image(astronaut)
    key32 = refiner.image_key
    refiner.set_image(astronaut, precision="bf16")
    assert refiner.image_key != key32 and refiner.embeddings_computed == 2
    assert len(list(tmp_path.glob("sam-emb-*.pt"))) == 2
    with using_precision("bf16"):
        refiner.set_image(astronaut)
    assert refiner.embeddings_computed == 2  # found in the cache under bf16
    fresh = SamRefiner(build_tiny_sam(), cache_dir=tmp_path, precision="bf16")
    fresh.set_image(astronaut)
    assert fresh.embeddings_computed == 0 and fresh.predictor.features.dtype == torch.float32


def test_decomposition_session_keeps_one_precision_at_a_time(tiny_vit, astronaut, tmp_path):
    from clipsurgery_widgets.engine import DecompositionSession

    explainer = Explainer(tiny_vit, cache_dir=False)
    session = DecompositionSession(explainer, [astronaut], texts=["a dog", "a cat"], cache_dir=tmp_path)
    d32 = session.decomposition(0)
    assert session.decomposition(0) is d32
    session.precision = "bf16"
    d16 = session.decomposition(0)
    assert d16 is not d32 and d16.attn.dtype == torch.float32
    assert not torch.equal(d16.attn, d32.attn)
    assert torch.allclose(d16.total(), d32.total(), atol=0.05)


# --- widgets: the "fast (bf16)" toggle --------------------------------------------------------------

def _shown(widget, control) -> bool:
    """True when ``control`` is somewhere in the widget's tree of children."""
    stack = [widget]
    while stack:
        node = stack.pop()
        if node is control:
            return True
        stack.extend(getattr(node, "children", ()))
    return False


def test_every_widget_shows_the_bf16_toggle(tiny_vit, astronaut):
    from clipsurgery_widgets.engine import SamRefiner, build_tiny_sam
    from clipsurgery_widgets.widgets import (AttentionExplorer, DecompositionExplorer, HeatmapExplorer, SamWidget,
                                             TokenExplorer)

    explainer = Explainer(tiny_vit, cache_dir=False)
    made = [HeatmapExplorer(explainer), TokenExplorer(explainer), AttentionExplorer(explainer),
            SamWidget(explainer, SamRefiner(build_tiny_sam())),
            DecompositionExplorer(explainer, [astronaut], texts=["a dog", "a cat"])]
    for widget in made:
        toggle = widget.controls["precision"]
        assert toggle.description == "fast (bf16)" and _shown(widget, toggle), type(widget).__name__
        assert widget.precision == "auto" and toggle.value is False
        widget.cancel()


def test_the_toggle_recomputes_in_bf16_and_caches_apart(tiny_vit, astronaut):
    from clipsurgery_widgets.widgets import HeatmapExplorer
    from clipsurgery_widgets.widgets.state import InvalidStateError

    explainer = Explainer(tiny_vit, cache_dir=False)
    widget = HeatmapExplorer(explainer, astronaut, labels=["sky", "person", "rocket"])
    assert widget.wait(60) and widget.error is None
    fp32 = widget.explanation.mapset().patch_scores
    widget.controls["precision"].value = True
    assert widget.precision == "bf16"
    assert widget.wait(60) and widget.error is None
    bf16 = widget.explanation.mapset().patch_scores
    assert not np.array_equal(fp32, bf16) and min(_pearsons(fp32, bf16)) >= 0.99
    assert {key[-1] for key in explainer._tokens._items} >= {"bf16"}  # a bf16 entry beside the fp32 one
    widget.precision = "fp32"
    assert widget.controls["precision"].value is False
    with pytest.raises(InvalidStateError, match="'auto'"):
        widget.precision = "half"
    assert widget.wait(60) and np.array_equal(widget.explanation.mapset().patch_scores, fp32)


# --- the cached reduced-precision copy of the image tower -------------------------------------------

@pytest.fixture()
def counted_copies(monkeypatch):
    """A fresh tiny ViT, and a list that records every reduced-precision tower copy made."""
    from clipsurgery_widgets.engine import load_model
    from clipsurgery_widgets.engine import precision as precision_module

    made = []
    real = precision_module._cast_copy

    def counting(visual, dtype):
        made.append((visual, dtype))
        return real(visual, dtype)

    monkeypatch.setattr(precision_module, "_cast_copy", counting)
    return load_model("tiny-random-vit", device="cpu"), made


def test_the_reduced_tower_copy_is_made_once_and_reused(counted_copies, astronaut):
    from clipsurgery_widgets.engine.towers.dense import encode_dense
    from clipsurgery_widgets.engine.towers.encode import tower_for

    model, made = counted_copies
    pixels = preprocess(astronaut, 224, model.mean, model.std, model.patch_size)
    first = encode_image_tokens(model, pixels, precision="bf16")
    second = encode_image_tokens(model, pixels, precision="bf16")
    dense = encode_dense(model, pixels, "sclip", precision="bf16")
    assert len(made) == 1 and made[0][1] == torch.bfloat16
    assert torch.equal(first.surgery, second.surgery) and first.surgery.dtype == dense.tokens.dtype == torch.float32
    copy = tower_for(model, model.model.visual, Precision("bf16", "cpu"))
    assert copy is not model.model.visual and len(made) == 1
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
    encode_image_tokens(model, pixels, precision="fp32")  # fp32 runs the user's tower: no copy
    assert len(made) == 1


def test_the_users_tower_stays_fp32_and_unchanged(counted_copies, astronaut):
    from clipsurgery_widgets.engine.towers.dense import encode_dense

    model, _ = counted_copies
    visual = model.model.visual
    params = {name: (p, p.detach().clone()) for name, p in visual.named_parameters()}
    pixels = preprocess(astronaut, 224, model.mean, model.std, model.patch_size)
    encode_image_tokens(model, pixels, precision="bf16")
    encode_dense(model, pixels, "gem", precision="bf16")
    now = dict(visual.named_parameters())
    assert now.keys() == params.keys()
    for name, (tensor, saved) in params.items():
        assert now[name] is tensor and tensor.dtype == torch.float32 and torch.equal(tensor, saved), name


def test_an_in_place_weight_change_rebuilds_the_copy(counted_copies, astronaut):
    model, made = counted_copies
    pixels = preprocess(astronaut, 224, model.mean, model.std, model.patch_size)
    before = encode_image_tokens(model, pixels, precision="bf16").surgery
    with torch.no_grad():
        model.model.visual.proj.mul_(-1.0)  # an in-place edit the version counter records
    after = encode_image_tokens(model, pixels, precision="bf16").surgery
    reference = encode_image_tokens(model, pixels, precision="fp32").surgery
    assert len(made) == 2
    assert torch.nn.functional.cosine_similarity(after, reference, dim=-1).min() > 0.99
    assert torch.nn.functional.cosine_similarity(after, before, dim=-1).max() < -0.99


@pytest.mark.parametrize("tokens", [5, 197, 785])
def test_cpu_bf16_attention_matches_the_fused_kernel(tokens, monkeypatch):
    from clipsurgery_widgets.engine.towers import ops

    monkeypatch.setattr(ops, "_CPU_BF16_SCORE_CHUNK", 5 * tokens * tokens)  # 14 heads: chunks of 5, 5 and 4
    generator = torch.Generator().manual_seed(0)
    # q, k, v as the ViT blocks pass them: strided views of one packed projection [B, T, 3, H, d].
    packed = torch.randn(2, tokens, 3, 7, 16, generator=generator)
    q, k, v = packed.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, T, d] each, not contiguous
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = ops.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
        vv = ops.attention(v.bfloat16(), v.bfloat16(), v.bfloat16())
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    assert torch.nn.functional.cosine_similarity(got.float().flatten(2), expected.flatten(2), dim=-1).min() > 0.999
    expected_vv = torch.nn.functional.scaled_dot_product_attention(v, v, v)
    assert torch.nn.functional.cosine_similarity(vv.float().flatten(2), expected_vv.flatten(2), dim=-1).min() > 0.999
    with torch.no_grad():
        assert torch.equal(ops.attention(q, k, v), expected)  # fp32: the fused kernel itself


def test_an_explainer_and_its_model_share_one_reduced_copy(counted_copies, astronaut):
    from clipsurgery_widgets.engine.decomposition.terms import decompose

    model, made = counted_copies
    pixels = preprocess(astronaut, 224, model.mean, model.std, model.patch_size)
    explainer = Explainer(model, cache_dir=False)
    for holder in (model, explainer, model, explainer):
        decompose(holder, pixels, spatial=False, precision="bf16")
    assert len(made) == 1


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_resnet_in_training_mode_is_refused_in_every_precision(precision, astronaut):
    from clipsurgery_widgets.engine import capture_attention, load_model

    model = load_model("tiny-random-resnet", device="cpu")
    pixels = preprocess(astronaut, 224, model.mean, model.std, model.patch_size)
    model.model.visual.train()
    for run in (encode_image_tokens, capture_attention):
        with pytest.raises(ValueError, match="training mode.*model.eval"):
            run(model, pixels, precision=precision)
    assert model.model.visual.training  # refused, not switched
