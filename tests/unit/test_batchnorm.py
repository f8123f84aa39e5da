"""Folding BatchNorm into convolutions in the private reduced-precision ResNet copy."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from clipsurgery_widgets.engine.batchnorm import fold_batch_norms
from clipsurgery_widgets.engine.model_guard import eval_view


@pytest.fixture()
def resnet_tower():
    """A tiny open_clip ModifiedResNet with BatchNorm statistics and affine terms that are not the defaults."""
    from clipsurgery_widgets.engine.loading import build_tiny_model

    visual = build_tiny_model("tiny-random-resnet").visual
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in visual.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return visual.eval()


def _trunk(visual, x):
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))


def test_a_folded_copy_computes_what_the_tower_computes(resnet_tower):
    copy = eval_view(resnet_tower)
    folded = fold_batch_norms(copy)
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in resnet_tower.modules())
    assert folded == batchnorms > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = _trunk(resnet_tower, x), _trunk(copy, x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_folding_leaves_the_users_tower_alone(resnet_tower):
    saved = {name: t.detach().clone() for name, t in resnet_tower.state_dict().items()}
    modules = dict(resnet_tower.named_modules())
    fold_batch_norms(eval_view(resnet_tower))
    assert dict(resnet_tower.named_modules()).keys() == modules.keys()
    assert all(isinstance(modules[name], type(m)) for name, m in resnet_tower.named_modules())
    assert resnet_tower.layer1[0].conv1.bias is None
    for name, tensor in resnet_tower.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_other_modules_are_not_folded():
    sequential = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    assert fold_batch_norms(eval_view(sequential)) == 0


def test_the_bf16_resnet_copy_is_folded(resnet_tower):
    from clipsurgery_widgets.engine.precision import Precision, reduced_tower

    copy = reduced_tower(resnet_tower, Precision("bf16", "cpu"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert copy.layer1[0].conv1.bias.dtype == torch.bfloat16
    assert any(isinstance(m, nn.BatchNorm2d) for m in resnet_tower.modules())


def test_calibrating_a_random_resnet_makes_its_patch_tokens_differ():
    from clipsurgery_widgets.engine import preprocess, sample_image
    from clipsurgery_widgets.engine.batchnorm import calibrate_batch_norms
    from clipsurgery_widgets.engine.loading import build_tiny_model
    from clipsurgery_widgets.engine.towers.resnet import resnet_pool_tokens

    def patch_cosines(visual):
        pixels = preprocess(sample_image("astronaut"), 224, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), 32)
        _, surgery, _ = resnet_pool_tokens(visual, pixels)
        unit = torch.nn.functional.normalize(surgery[0, 1:], dim=-1)
        return unit @ unit.T

    visual = build_tiny_model("tiny-random-resnet").visual.eval()
    assert patch_cosines(visual).min() > 0.999  # open_clip's init: every patch points one way
    calibrate_batch_norms(visual, [preprocess(sample_image(name), 224, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), 32)
                                   for name in ("cat", "coffee")])
    assert not visual.training and patch_cosines(visual).min() < 0.99
    assert all(m.weight.eq(1).all() for n, m in visual.named_modules() if n.endswith("bn3"))


def test_the_bf16_resnet_copy_runs_channels_last_and_agrees(resnet_tower):
    from clipsurgery_widgets.engine.precision import Precision, reduced_tower
    from clipsurgery_widgets.engine.towers.resnet import resnet_features

    copy = reduced_tower(resnet_tower, Precision("bf16", "cpu"))
    assert copy.layer1[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert resnet_tower.layer1[0].conv2.weight.is_contiguous()  # the user's stays as it was
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    layouts = []
    copy.conv1.register_forward_pre_hook(  # on the private copy only
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = resnet_features(copy, x).float()
    assert layouts == [True]  # the pixels were handed to the stem channels-last
    expected = resnet_features(resnet_tower, x)
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.99
