"""Text-based decomposition (docs/algorithms.md#text-based-decomposition): terms, spatial maps, resumable image-set passes, mean ablation.

References are literal: attention through nn.MultiheadAttention itself, ln_post written out with
frozen statistics, ablation written as "subtract the term, add its mean".
"""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import jittered, random_pixels
from PIL import Image
from torch import nn

from clipsurgery_widgets.engine.decomposition import dataset_pass as decomposition_pass
from clipsurgery_widgets.engine.decomposition.ablation import (
    Ablation,
    ablated_embeddings,
    evaluate_ablation,
    folder_ablation,
    labelled_folder,
    mean_terms,
    zero_shot_accuracy,
)
from clipsurgery_widgets.engine.decomposition.dataset_pass import (
    PassInterrupted,
    decompose_images,
)
from clipsurgery_widgets.engine.decomposition.terms import (
    Decomposition,
    DecompositionMemoryError,
    decompose,
    decomposition_memory,
    decomposition_nbytes,
    segment_maps,
    spatial_maps,
)
from clipsurgery_widgets.engine.errors import ImageInputError, UnsupportedModelError
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.loading import build_tiny_model, wrap_model
from clipsurgery_widgets.engine.towers.encode import encode_image_tokens

TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def pixels(batch=2, size=(224, 224), seed=0):
    return random_pixels(batch, size, seed)


@pytest.fixture(scope="module")
def vit(perturbed_vit):
    return perturbed_vit


@pytest.fixture(scope="module")
def vit_layer_scale():
    model = open_clip.CLIP(embed_dim=24, vision_cfg={"image_size": 64, "layers": 3, "width": 48, "head_width": 16,
                                                     "patch_size": 16, "ls_init_value": 0.5},
                           text_cfg=TEXT_CFG)
    assert not isinstance(model.visual.transformer.resblocks[0].ls_1, nn.Identity)
    return jittered(model, seed=2)


def normalised_embedding(model, x):
    with torch.no_grad():
        r = model.encode_image(x)
    return r / r.norm(dim=-1, keepdim=True)


# --- terms sum to the normalised embedding ----------------------------------------------------

@pytest.mark.parametrize("spatial", [True, False])
@pytest.mark.parametrize("which", ["plain", "layer_scale"])
def test_terms_sum_to_normalised_encode_image(which, spatial, vit, vit_layer_scale):
    model = vit if which == "plain" else vit_layer_scale
    size = (224, 224) if which == "plain" else (64, 64)
    x = pixels(batch=3, size=size)
    d = decompose(model, x, spatial=spatial)
    layers, heads = len(model.visual.transformer.resblocks), model.visual.transformer.resblocks[0].attn.num_heads
    tokens = 1 + (size[0] // 16) * (size[1] // 16)
    dim = model.visual.proj.shape[1]
    assert d.attn.shape == ((3, layers, tokens, heads, dim) if spatial else (3, layers, heads, dim))
    assert d.mlp.shape == (3, layers + 1, dim)
    summed = d.attn.flatten(1, -2).sum(1) + d.mlp.sum(1)
    torch.testing.assert_close(summed, normalised_embedding(model, x), atol=1e-4, rtol=0)


def test_non_square_input_and_loaded_model_record(vit):
    x = pixels(batch=2, size=(160, 256))
    d = decompose(wrap_model(vit), x)
    assert d.grid == (10, 16) and d.attn.shape[2] == 1 + 160
    # encode_image only takes the native size; the towers' raw class token equals it there.
    raw = encode_image_tokens(vit, x, depth=1).raw[:, 0]
    torch.testing.assert_close(d.total(), raw / raw.norm(dim=-1, keepdim=True), atol=1e-4, rtol=0)


def test_spatial_terms_sum_to_the_non_spatial_ones(vit):
    x = pixels()
    torch.testing.assert_close(decompose(vit, x, True).head_terms(), decompose(vit, x, False).attn,
                               atol=1e-6, rtol=0)


# --- each term against a literal reference ------------------------------------------------------

def reference_components(model, x):
    """Per block: (per-head attention output at CLS [B, H, C], MLP output at CLS [B, C]) before ln_post,
    computed with nn.MultiheadAttention's own forward and attention weights; plus e and the final CLS z."""
    v = model.visual
    with torch.no_grad():
        patches = v.conv1(x).flatten(2).transpose(1, 2)
        z = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), patches], 1) + v.positional_embedding
        z = v.ln_pre(z)
        e = z[:, 0].clone()
        per_block = []
        for block in v.transformer.resblocks:
            a = block.ln_1(z)
            out, weights = block.attn(a, a, a, need_weights=True, average_attn_weights=False)  # [B, H, T, T]
            heads = block.attn.num_heads
            d = a.shape[-1] // heads
            w_v = block.attn.in_proj_weight[2 * a.shape[-1]:]
            b_v = block.attn.in_proj_bias[2 * a.shape[-1]:]
            values = a @ w_v.T + b_v  # [B, T, C]
            head_out = []
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                mixed = torch.einsum("bt,btd->bd", weights[:, h, 0], values[..., sl])
                head_out.append(mixed @ block.attn.out_proj.weight[:, sl].T + block.attn.out_proj.bias / heads)
            head_out = block.ls_1(torch.stack(head_out, 1))  # [B, H, C]
            torch.testing.assert_close(head_out.sum(1), block.ls_1(out)[:, 0], atol=1e-5, rtol=1e-4)
            z = z + block.ls_1(out)
            mlp = block.ls_2(block.mlp(block.ln_2(z)))
            per_block.append((head_out, mlp[:, 0].clone()))
            z = z + mlp
    return e, per_block, z[:, 0]


def test_every_head_and_mlp_term_matches_the_literal_formula(vit_layer_scale):
    model = vit_layer_scale
    x = pixels(batch=2, size=(64, 64), seed=3)
    e, per_block, z_cls = reference_components(model, x)
    ln, proj = model.visual.ln_post, model.visual.proj
    mu = z_cls.mean(-1, keepdim=True)
    sigma = torch.sqrt(((z_cls - mu) ** 2).mean(-1, keepdim=True) + ln.eps)
    norm = ((ln(z_cls) @ proj).norm(dim=-1, keepdim=True))
    k = 2 * len(per_block) + 1  # components sharing ln_post's centring and bias

    def post(x_, share):
        mu_, sigma_, norm_ = (t.reshape(-1, *([1] * (x_.ndim - 2)), 1) for t in (mu, sigma, norm))
        return (ln.weight * (x_ - mu_ * share / k) / sigma_ + ln.bias * share / k) @ proj / norm_

    d = decompose(model, x, spatial=False)
    heads = per_block[0][0].shape[1]
    torch.testing.assert_close(d.mlp[:, 0], post(e, 1.0), atol=1e-5, rtol=1e-4)
    for layer, (head_out, mlp) in enumerate(per_block):
        torch.testing.assert_close(d.attn[:, layer], post(head_out, 1.0 / heads), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(d.mlp[:, layer + 1], post(mlp, 1.0), atol=1e-5, rtol=1e-4)


def test_position_terms_are_attention_times_value_through_the_out_projection(vit_layer_scale):
    """Spatial term (l, i, h) = alpha_lh(0, i) W_O[:, h] v_h(i) + b_O / (T H), layer-scaled, through ln_post."""
    model, v = vit_layer_scale, vit_layer_scale.visual
    x = pixels(batch=2, size=(64, 64), seed=6)
    d = decompose(model, x, spatial=True)
    with torch.no_grad():
        z = v.ln_pre(torch.cat([v.class_embedding.expand(2, 1, -1), v.conv1(x).flatten(2).transpose(1, 2)], 1)
                     + v.positional_embedding)
        blocks = v.transformer.resblocks
        for block in blocks[:-1]:
            z = block(z)
        last = blocks[-1]
        a = last.ln_1(z)
        _, weights = last.attn(a, a, a, need_weights=True, average_attn_weights=False)  # [B, H, T, T]
        width, heads = a.shape[-1], last.attn.num_heads
        tokens, hd = a.shape[1], width // heads
        values = a @ last.attn.in_proj_weight[2 * width:].T + last.attn.in_proj_bias[2 * width:]
        terms = torch.zeros(2, tokens, heads, width)
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            through = values[..., sl] @ last.attn.out_proj.weight[:, sl].T  # [B, T, C]
            terms[:, :, h] = weights[:, h, 0, :, None] * through + last.attn.out_proj.bias / (tokens * heads)
        terms = terms * last.ls_1.gamma
        z_cls = last(z)[:, 0]
    ln, proj = v.ln_post, v.proj
    k = 2 * len(blocks) + 1
    mu = z_cls.mean(-1)[:, None, None, None]
    sigma = torch.sqrt(z_cls.var(-1, unbiased=False) + ln.eps)[:, None, None, None]
    norm = (ln(z_cls) @ proj).norm(dim=-1)[:, None, None, None]
    share = 1.0 / (k * tokens * heads)
    expected = (ln.weight * (terms - mu * share) / sigma + ln.bias * share) @ proj / norm
    torch.testing.assert_close(d.attn[:, -1], expected, atol=1e-6, rtol=1e-4)


def test_model_is_not_modified(vit):
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    decompose(vit, pixels(batch=1), spatial=True)
    after = vit.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vit.modules())


# --- refusals and memory --------------------------------------------------------------------------

def test_resnet_is_refused_with_a_clear_error(tiny_resnet):
    with pytest.raises(UnsupportedModelError, match="vision transformers.*ViT"):
        decompose(tiny_resnet, torch.zeros(1, 3, 224, 224))


def test_memory_is_reported_and_bounded(vit):
    d = decompose(vit, pixels(batch=2), spatial=True)
    assert d.nbytes == decomposition_nbytes(6, 197, 2, 32, spatial=True, batch=2)
    assert decomposition_memory(vit, spatial=True) * 2 == d.nbytes
    assert decomposition_memory(vit, spatial=False) < decomposition_memory(vit, spatial=True) / 100
    with pytest.raises(DecompositionMemoryError, match="spatial=False"):
        decompose(vit, pixels(batch=2), spatial=True, max_bytes=d.nbytes - 1)


def test_vit_b16_spatial_memory_estimate_is_about_58_mb():
    # Pure arithmetic for ViT-B/16 at 224: 12 layers, 197 tokens, 12 heads, D = 512.
    assert abs(decomposition_nbytes(12, 197, 12, 512) / 1e6 - 58.1) < 0.1


# --- spatial maps ----------------------------------------------------------------------------------

def planted_decomposition():
    """Two layers, two heads, grid 2x3, D = 4; label 0 = e0 lives at patch 4 in head (1, 0)."""
    attn = torch.zeros(1, 2, 7, 2, 4)
    attn[0, 1, 1 + 4, 0, 0] = 2.0  # layer 1, patch 4, head 0 writes label 0
    attn[0, 0, 1 + 1, 1, 1] = 1.0  # layer 0, patch 1, head 1 writes label 1
    attn[0, :, 0] = 5.0  # the class-token position is never part of a map
    return Decomposition(attn=attn, mlp=torch.zeros(1, 3, 4), norm=torch.ones(1), grid=(2, 3))


def test_spatial_maps_follow_the_spec_formula():
    d = planted_decomposition()
    labels = torch.eye(4)[:3]
    maps = spatial_maps(d, labels)
    assert maps.shape == (1, 3, 2, 3)
    # literal: sum patches over layers and heads, dot, minus mean over labels, clip, min-max
    scores = d.attn[0, :, 1:].sum(dim=(0, 2)) @ labels.T  # [N, T]
    scores = (scores - scores.mean(-1, keepdim=True)).clamp(min=0)
    expected = (scores - scores.min(0).values) / (scores.max(0).values - scores.min(0).values)
    torch.testing.assert_close(maps[0, :2], expected.T.reshape(3, 2, 3)[:2])
    assert maps[0, 0].flatten().argmax() == 4 and maps[0, 1].flatten().argmax() == 1
    assert torch.all(maps[0, 2] == 0)  # label 2 is nowhere: a constant map gives zeros, no NaN


def test_single_head_map_uses_only_that_head():
    d = planted_decomposition()
    labels = torch.eye(4)[:2]
    head_maps = spatial_maps(d, labels, heads=[(0, 1)])
    assert torch.all(head_maps[0, 0] == 0) and head_maps[0, 1].flatten().argmax() == 1
    masks = segment_maps(spatial_maps(d, labels))
    assert masks[0, 0].flatten().nonzero().flatten().tolist() == [4]


def test_spatial_map_errors():
    d = planted_decomposition()
    with pytest.raises(ValueError, match="does not exist"):
        spatial_maps(d, torch.eye(4), heads=[(5, 0)])
    with pytest.raises(ValueError, match=r"\[T, 4\]"):
        spatial_maps(d, torch.eye(3))
    flat = Decomposition(attn=d.attn.sum(2), mlp=d.mlp, norm=d.norm, grid=d.grid)
    with pytest.raises(ValueError, match="spatial=True"):
        spatial_maps(flat, torch.eye(4))


# --- image-set pass: progress, interruption, resume ------------------------------------------------

def images(count=5):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(count)]


@pytest.fixture(scope="module")
def tiny_loaded():
    return wrap_model(jittered(build_tiny_model("tiny-random-vit"), seed=5))


def test_image_set_terms_match_the_per_image_decomposition(tiny_loaded, tmp_path):
    from clipsurgery_widgets.engine.images import preprocess

    imgs = images(3)
    terms = decompose_images(tiny_loaded, imgs, cache_dir=tmp_path, progress=False)
    assert terms.attn.shape == (3, 6, 2, 32) and len(set(terms.keys)) == 3
    x = torch.cat([preprocess(im, 224, tiny_loaded.mean, tiny_loaded.std, 16) for im in imgs])
    torch.testing.assert_close(terms.embeddings(), normalised_embedding(tiny_loaded.model, x), atol=1e-4, rtol=0)


def test_interrupted_pass_resumes_with_identical_results(tiny_loaded, tmp_path, monkeypatch):
    imgs = images(5)
    reference = decompose_images(tiny_loaded, imgs, cache_dir=tmp_path / "a", progress=False)

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt  # what Ctrl-C in a notebook does mid-pass

    with pytest.raises(KeyboardInterrupt):
        decompose_images(tiny_loaded, imgs, cache_dir=tmp_path / "b", progress=False, on_image=interrupt)
    assert len(list((tmp_path / "b").rglob("*.npz"))) == 2

    computed = []
    original = decomposition_pass._compute
    monkeypatch.setattr(decomposition_pass, "_compute", lambda *a: computed.append(1) or original(*a))
    resumed = decompose_images(tiny_loaded, imgs, cache_dir=tmp_path / "b", progress=False)
    assert len(computed) == 3  # the two saved images are not recomputed
    for name in ("attn", "mlp", "norms"):
        assert torch.equal(getattr(resumed, name), getattr(reference, name))
    assert resumed.keys == reference.keys


def test_stop_event_interrupts_with_a_resume_hint(tiny_loaded, tmp_path):
    import threading

    stop = threading.Event()
    stop.set()
    with pytest.raises(PassInterrupted, match="resumes"):
        decompose_images(tiny_loaded, images(2), cache_dir=tmp_path, progress=False, stop=stop)


def test_no_disk_when_cache_is_off_and_damaged_files_are_recomputed(tiny_loaded, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSURGERY_CACHE_DIR", str(tmp_path / "default"))
    decompose_images(tiny_loaded, images(1), cache_dir=False, progress=False)
    assert not (tmp_path / "default").exists()
    first = decompose_images(tiny_loaded, images(1), cache_dir=tmp_path / "c", progress=False)
    (saved,) = (tmp_path / "c").rglob("*.npz")
    saved.write_bytes(b"not an npz")
    again = decompose_images(tiny_loaded, images(1), cache_dir=tmp_path / "c", progress=False)
    assert torch.equal(first.attn, again.attn)


def test_empty_image_set_is_an_error(tiny_loaded):
    with pytest.raises(ValueError, match="No images"):
        decompose_images(tiny_loaded, [], cache_dir=False, progress=False)


# --- mean ablation ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def set_terms(tiny_loaded):
    return decompose_images(tiny_loaded, images(6), cache_dir=False, progress=False)


def test_ablating_nothing_changes_nothing(set_terms):
    labels = F.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    means = mean_terms(set_terms)
    torch.testing.assert_close(ablated_embeddings(set_terms, means, Ablation()), set_terms.embeddings())
    result = evaluate_ablation(set_terms, labels, [0, 1, 2, 3, 0, 1], Ablation())
    assert result.accuracy_before == result.accuracy_after
    assert np.array_equal(result.predictions_before, result.predictions_after)


def test_ablating_everything_gives_the_mean_prediction(set_terms):
    labels = F.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    everything = Ablation.everything(set_terms.num_layers, set_terms.num_heads)
    out = ablated_embeddings(set_terms, mean_terms(set_terms), everything)
    mean_embedding = set_terms.embeddings().mean(0)
    torch.testing.assert_close(out, mean_embedding.expand_as(out), atol=1e-6, rtol=1e-5)
    result = evaluate_ablation(set_terms, labels, [0] * 6, everything)
    expected = int((F.normalize(mean_embedding, dim=0) @ labels.T).argmax())
    assert set(result.predictions_after.tolist()) == {expected}


def test_ablating_one_head_and_one_mlp_is_subtract_and_add_the_mean(set_terms):
    means = mean_terms(set_terms)
    out = ablated_embeddings(set_terms, means, Ablation(heads={(4, 1)}, mlps={2}))
    expected = (set_terms.embeddings() - set_terms.attn[:, 4, 1] + set_terms.attn[:, 4, 1].mean(0)
                - set_terms.mlp[:, 3] + set_terms.mlp[:, 3].mean(0))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    layer = ablated_embeddings(set_terms, means, Ablation(attn_layers={5}))
    torch.testing.assert_close(layer, set_terms.embeddings() - set_terms.attn[:, 5].sum(1)
                               + set_terms.attn[:, 5].sum(1).mean(0), atol=1e-6, rtol=1e-5)


def test_ablation_errors(set_terms):
    with pytest.raises(ValueError, match="head \\(6, 0\\)"):
        ablated_embeddings(set_terms, mean_terms(set_terms), Ablation(heads={(6, 0)}))
    with pytest.raises(ValueError, match="one class index per image"):
        evaluate_ablation(set_terms, torch.eye(32)[:2], [0, 1], Ablation())


def test_zero_shot_accuracy_counts_matches():
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.1]])
    assert zero_shot_accuracy(emb, torch.eye(2), [0, 1, 1]) == pytest.approx(2 / 3)


def write_folder(root, per_class=2):
    rng = np.random.default_rng(1)
    for name in ("red_apple", "blue_sky"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not an image")


def test_labelled_folder_and_folder_ablation(tiny_loaded, tmp_path):
    write_folder(tmp_path / "data")
    data = labelled_folder(tmp_path / "data")
    assert data.classes == ("blue sky", "red apple") and data.targets.tolist() == [0, 0, 1, 1]
    explainer = Explainer(tiny_loaded, cache_dir=False)
    nothing, last = folder_ablation(explainer, tmp_path / "data", [Ablation(), Ablation(attn_layers={5})],
                                    templates=["a photo of {}."], cache_dir=tmp_path / "cache", progress=False)
    assert nothing.accuracy_before == nothing.accuracy_after == last.accuracy_before
    assert 0.0 <= last.accuracy_after <= 1.0 and last.targets.tolist() == [0, 0, 1, 1]


def test_labelled_folder_errors(tmp_path):
    with pytest.raises(ImageInputError, match="not a folder"):
        labelled_folder(tmp_path / "missing")
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "cat" / "a.png")
    with pytest.raises(ImageInputError, match="at least two"):
        labelled_folder(tmp_path / "one")
