"""SamRefiner notices SAM's weights changing in place (issue 16, item 2): no embedding of the old
weights is served after the change, and none computed during a change is stored."""
from __future__ import annotations

import numpy as np
import torch

from clipsurgery_widgets.engine.sam.refiner import SamRefiner, build_tiny_sam


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def features(refiner: SamRefiner) -> torch.Tensor:
    return refiner.predictor.features.detach().clone()


def test_in_place_change_of_sam_weights_is_noticed(tmp_path):
    sam = build_tiny_sam()
    refiner = SamRefiner(sam, cache_dir=tmp_path)
    rgb = image()
    assert refiner.set_image(rgb)
    before, fingerprint = features(refiner), refiner.fingerprint
    with torch.no_grad():
        sam.image_encoder.patch_embed.proj.weight.mul_(-1)  # e.g. an optimizer step
    assert refiner.fingerprint != fingerprint
    assert refiner.set_image(rgb)
    assert refiner.embeddings_computed == 2  # recomputed, not served from either cache
    assert not torch.allclose(features(refiner), before)
    # A fresh refiner on a fresh model with the changed weights agrees with the recomputed embedding.
    other = build_tiny_sam()
    other.load_state_dict(sam.state_dict())
    fresh = SamRefiner(other)
    assert fresh.set_image(rgb)
    assert torch.allclose(features(fresh), features(refiner))


def test_the_fingerprint_given_is_replaced_when_weights_change(tmp_path):
    sam = build_tiny_sam()
    refiner = SamRefiner(sam, cache_dir=tmp_path, fingerprint="sam/mine")
    assert refiner.fingerprint == "sam/mine"
    with torch.no_grad():
        sam.mask_decoder.iou_prediction_head.layers[0].bias.add_(1.0)
    assert refiner.fingerprint != "sam/mine"


def test_an_embedding_computed_while_the_weights_change_is_not_stored(tmp_path):
    sam = build_tiny_sam()
    refiner = SamRefiner(sam, cache_dir=tmp_path)
    changed = []

    def progress(fraction: float, message: str) -> None:
        if "block 1/" in message and not changed:  # the weights change under the computation
            with torch.no_grad():
                sam.image_encoder.neck[0].weight.mul_(2)
            changed.append(True)

    assert refiner.set_image(image(), progress=progress) and changed
    assert list(tmp_path.glob("sam-emb-*.pt")) == []  # no file under a fingerprint it does not belong to
    assert refiner.set_image(image())  # not in memory either: computed again, with the new weights
    assert refiner.embeddings_computed == 2
