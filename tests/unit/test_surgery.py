"""Feature surgery against the literal formulas of docs/algorithms.md#feature-surgery."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipsurgery_widgets.engine.surgery import feature_surgery, resolve_mode


def random_feats(batch, tokens, labels, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, tokens, dim, generator=gen, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(labels, dim, generator=gen, dtype=torch.float64), dim=-1)
    return image, text


def literal_multi_label(image, text):
    """The authors' 4-D formulation, one image at a time (each with its own weights)."""
    out = []
    for f in image:  # f: [1+N, C]
        prob = torch.softmax(2 * (f[0] @ text.T), dim=-1)  # [T]
        w = prob / prob.mean()
        products = f[:, None, :] * text[None, :, :]  # [1+N, T, C]
        products = products * w[None, :, None]
        redundant = products.mean(dim=1, keepdim=True)  # over labels
        out.append((products - redundant).sum(dim=-1))
    return torch.stack(out)


@pytest.mark.parametrize("batch", [1, 3])
def test_multi_label_equals_4d_formulation(batch):
    image, text = random_feats(batch, tokens=1 + 12, labels=5)
    scores = feature_surgery(image, text, mode="labels")
    assert scores.shape == (batch, 13, 5)
    torch.testing.assert_close(scores, literal_multi_label(image, text), atol=1e-12, rtol=0)


def test_batch_items_use_their_own_weights():
    image, text = random_feats(3, tokens=7, labels=4, seed=1)
    together = feature_surgery(image, text, mode="labels")
    for b in range(3):
        torch.testing.assert_close(together[b:b + 1], feature_surgery(image[b:b + 1], text, mode="labels"))
    # weights from image 0 applied to image 1 would give other numbers
    assert not torch.allclose(together[1:2], _with_weights_of(image[0], image[1], text), atol=1e-3)


def _with_weights_of(source, target, text):
    prob = torch.softmax(2 * (source[0] @ text.T), dim=-1)
    w = prob / prob.mean()
    weighted = w * (target @ text.T)
    return (weighted - weighted.mean(-1, keepdim=True))[None]


def test_empty_mode_subtracts_unnormalised_redundant_feature():
    image, text = random_feats(2, tokens=9, labels=1)
    redundant = 0.5 * F.normalize(torch.randn(16, dtype=torch.float64), dim=0)
    expected = torch.einsum("bic,tc->bit", image, text - redundant[None, :])
    torch.testing.assert_close(feature_surgery(image, text, redundant, mode="empty"), expected)
    torch.testing.assert_close(feature_surgery(image, text, redundant[None], mode="empty"), expected)


def test_none_mode_is_raw_cosine():
    image, text = random_feats(2, tokens=9, labels=3)
    expected = torch.einsum("bic,tc->bit", image, text)
    torch.testing.assert_close(feature_surgery(image, text, mode="none"), expected)


def test_auto_mode_switches_on_label_count():
    image, text = random_feats(1, tokens=5, labels=3)
    redundant = F.normalize(torch.randn(16, dtype=torch.float64), dim=0)
    torch.testing.assert_close(feature_surgery(image, text, mode="auto"), literal_multi_label(image, text))
    # with two or more labels the redundant feature is not used
    torch.testing.assert_close(feature_surgery(image, text, redundant, mode="auto"), literal_multi_label(image, text))
    one = text[:1]
    torch.testing.assert_close(feature_surgery(image, one, redundant, mode="auto"),
                               torch.einsum("bic,tc->bit", image, one - redundant))
    assert resolve_mode("auto", text) == "labels" and resolve_mode("auto", one, redundant) == "empty"
    with pytest.raises(ValueError, match="redundant="):
        feature_surgery(image, one, mode="auto")


def test_bad_modes_and_shapes():
    image, text = random_feats(1, tokens=5, labels=3)
    with pytest.raises(ValueError, match="Unknown feature-surgery mode"):
        feature_surgery(image, text, mode="multi")
    with pytest.raises(ValueError, match="redundant="):
        feature_surgery(image, text, mode="empty")
    with pytest.raises(ValueError, match="at least 2 labels"):
        feature_surgery(image, text[:1], mode="labels")
    with pytest.raises(ValueError, match=r"\[B, 1\+N, D\]"):
        feature_surgery(image[0], text)
    with pytest.raises(ValueError, match="Feature sizes differ"):
        feature_surgery(image, text[:, :8])
    with pytest.raises(ValueError, match=r"\[T, D\]"):
        feature_surgery(image, text[0])
    with pytest.raises(ValueError, match="redundant must be one"):
        feature_surgery(image, text, torch.zeros(8, dtype=torch.float64), mode="empty")
