"""The Ray engine on a local two-CPU instance gives exactly the single-process numbers.

Ray is a test dependency (the ``test`` extra), so this runs in CI (no skip when it is missing); one
instance serves the module and is shut down at the end.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from eval_fixtures import FAST_TEMPLATES, write_dataset
from PIL import Image

from clipsurgery_widgets.engine.decomposition import decompose_images
from clipsurgery_widgets.evaluation import evaluate

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402  (a test dependency: a missing Ray fails here instead of skipping)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def generic_root(tmp_path_factory):
    root = write_dataset("generic", tmp_path_factory.mktemp("ray-data"), n=3)
    # A fourth image whose mask names a class the list does not have: skipped (and said) either way.
    Image.fromarray(np.zeros((64, 80, 3), np.uint8)).save(root / "images" / "img3.png")
    Image.fromarray(np.full((64, 80), 7, np.uint8)).save(root / "masks" / "img3.png")
    return root


def _assert_same_stats(local, distributed):
    assert local.keys() == distributed.keys()
    for item, stats in local.items():
        for method, arrays in stats.items():
            for name, value in arrays.items():
                np.testing.assert_array_equal(value, distributed[item][method][name], err_msg=f"{item}/{method}/{name}")


@pytest.mark.parametrize("task, methods", [("seg", "raw,sclip"), ("explain", "clip_surgery,raw")])
def test_ray_engine_gives_the_local_numbers(local_ray, generic_root, task, methods):
    common = dict(dataset="generic", root=generic_root, methods=methods, model="tiny-random-vit",
                  templates=FAST_TEMPLATES, progress=False)
    with pytest.warns(UserWarning, match="skipped"):
        local = evaluate(task, **common)
    with pytest.warns(UserWarning, match="skipped"):
        distributed = evaluate(task, engine="ray", workers=2, **common)
    assert distributed.evaluated == local.evaluated == 3
    assert distributed.skipped == local.skipped and [s["id"] for s in local.skipped] == ["img3"]
    assert distributed.methods == local.methods  # every number, per-class lists included
    _assert_same_stats(local.item_stats, distributed.item_stats)


def test_decompose_images_through_ray_equals_the_local_pass(local_ray, generic_root, tiny_vit, tmp_path):
    from clipsurgery_widgets.evaluation.distributed_decomposition import (
        decompose_images_distributed,
    )

    images = sorted((generic_root / "images").glob("*.png"))[:3]
    local = decompose_images(tiny_vit, images, cache_dir=False, progress=False)
    distributed = decompose_images_distributed("tiny-random-vit", images, cache_dir=tmp_path, num_workers=2,
                                               progress=False)
    assert distributed.keys == local.keys
    for name in ("attn", "mlp", "norms"):
        assert torch.equal(getattr(distributed, name), getattr(local, name)), name
    # The actors wrote decompose_images' own per-image cache: a local pass now reads it back unchanged.
    assert len(list(tmp_path.rglob("*.npz"))) == len(images)
    cached = decompose_images(tiny_vit, images, cache_dir=tmp_path, progress=False)
    assert torch.equal(cached.attn, local.attn)
