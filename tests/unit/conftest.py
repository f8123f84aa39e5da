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


def jittered(model, seed: int = 1):
    """Perturb every parameter of ``model`` (our own copy) a little, so that zero biases, unit LayerNorm
    weights and uniform layer scales can't hide a term missing from an implementation."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g) * (p.abs().mean() + 0.05))
    return model.eval()


@pytest.fixture(scope="module")
def perturbed_vit():
    """A perturbed private copy of tiny-random-vit (an open_clip CLIP module)."""
    from clipsurgery_widgets.engine.loading import build_tiny_model

    return jittered(build_tiny_model("tiny-random-vit"))


def random_pixels(batch: int, size: tuple[int, int], seed: int = 0):
    """Reproducible random pixels [batch, 3, H, W] (preprocessed-image stand-ins for tower tests)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=g)


def load_script(path, name: str):
    """Import a script (benchmarks/, scripts/) that is not part of the package, as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mimebundle(widget) -> dict:
    """The data of a widget's display bundle (``_repr_mimebundle_`` may add metadata: (data, metadata))."""
    bundle = widget._repr_mimebundle_()
    return bundle[0] if isinstance(bundle, tuple) else bundle


@pytest.fixture(scope="session")
def cat():
    """The sample cat photo, RGB uint8 [300, 451, 3] (files may define their own ``cat``)."""
    from clipsurgery_widgets.engine.images import sample_image

    return sample_image("cat")


@pytest.fixture(scope="session")
def tiny_sam():
    """A tiny randomly initialised Segment Anything model (files may define their own)."""
    from clipsurgery_widgets.engine.sam.refiner import build_tiny_sam

    return build_tiny_sam()
