"""Shared unit-test fixtures: the tiny random models (built once per session; never modify them)."""
import pytest

from clipsurgery_widgets.engine.loading import load_model


@pytest.fixture(scope="session")
def tiny_vit():
    """LoadedModel of tiny-random-vit (6 blocks, width 64, 2 heads, patch 16, embed 32), on the CPU."""
    return load_model("tiny-random-vit", device="cpu")


@pytest.fixture(scope="session")
def tiny_resnet():
    """LoadedModel of tiny-random-resnet (layers [1,1,1,1], width 16, embed 32), on the CPU."""
    return load_model("tiny-random-resnet", device="cpu")


@pytest.fixture(scope="session")
def explainer(tiny_vit):
    """Explainer over tiny-random-vit with no disk cache, shared by the widget and engine tests."""
    from clipsurgery_widgets.engine.explainer import Explainer

    return Explainer(tiny_vit, cache_dir=False)
