"""SamRefiner on the tiny random SAM: prompts sent to SAM, history, instances, caches, checkpoints."""
from __future__ import annotations

import argparse
import inspect
import threading

import numpy as np
import pytest
import torch

from clipsurgery_widgets.engine import maps
from clipsurgery_widgets.engine.errors import (
    CheckpointError,
    ImageInputError,
    UnsupportedModelError,
)
from clipsurgery_widgets.engine.sam.refiner import (
    SamRefiner,
    build_tiny_sam,
    instance_prompts,
)

H, W = 120, 160


class PredictSpy:
    """Wraps one refiner's predictor.predict (an instance attribute, nothing global) and records calls."""

    def __init__(self, refiner: SamRefiner) -> None:
        from segment_anything import SamPredictor

        self.signature = inspect.signature(SamPredictor.predict)
        self.wrapped = refiner.predictor.predict
        self.calls: list[dict] = []
        refiner.predictor.predict = self

    def __call__(self, *args, **kwargs):
        bound = self.signature.bind(None, *args, **kwargs)
        bound.apply_defaults()
        call = {k: (None if v is None else np.array(v, copy=True)) for k, v in bound.arguments.items()
                if k in ("point_coords", "point_labels", "box", "mask_input")}
        call["multimask_output"] = bound.arguments["multimask_output"]
        self.calls.append(call)
        return self.wrapped(*args, **kwargs)

    @property
    def last(self) -> dict:
        return self.calls[-1]


class EncoderCounter:
    """Counts image-encoder forward passes with a hook registered (and removed) by the test."""

    def __init__(self, sam) -> None:
        self.count = 0
        self.handle = sam.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.count += 1

    def close(self):
        self.handle.remove()


@pytest.fixture(scope="module")
def tiny_sam():
    return build_tiny_sam()


@pytest.fixture()
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


@pytest.fixture()
def refiner(tiny_sam, image):
    r = SamRefiner(tiny_sam)
    r.set_image(image)
    return r


def planted_map(grid, centre, amplitude=1.0, width=1.5):
    gh, gw = grid
    rows, cols = np.mgrid[0:gh, 0:gw]
    return amplitude * np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * width ** 2))


def reference_points(scores, grid, size, threshold=0.8):
    """docs/algorithms.md#points-for-sam written out literally (downsample 2 on an even grid = mean of 2x2 blocks)."""
    gh, gw = grid
    h, w = gh // 2, gw // 2
    cells = scores.reshape(gh, gw).reshape(h, 2, w, 2).mean(axis=(1, 3)).reshape(-1)
    cells = (cells - cells.min()) / (cells.max() - cells.min())
    num = min(int((cells >= threshold).sum()), cells.size // 2)
    order = np.argsort(cells)
    pos, neg = order[::-1][:num], order[:num]
    out = []
    for idx, label in [(i, 1) for i in pos] + [(i, 0) for i in neg]:
        r, c = divmod(int(idx), w)
        x = int(min((c + 0.5) * size[1] / w, size[1] - 1))
        y = int(min((r + 0.5) * size[0] / h, size[0] - 1))
        out.append((x, y, label))
    return out


# --- tiny model -------------------------------------------------------------------------------

def test_tiny_sam_is_seeded_and_leaves_global_rng_alone():
    before = torch.get_rng_state()
    a, b, c = build_tiny_sam(), build_tiny_sam(), build_tiny_sam(seed=1)
    assert torch.equal(before, torch.get_rng_state())
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert SamRefiner(a).fingerprint == SamRefiner(b).fingerprint != SamRefiner(c).fingerprint


# --- points from a surgery map ------------------------------------------------------------------

def test_points_from_scores_sends_the_spec_points(refiner):
    grid = (14, 14)
    scores = planted_map(grid, (4, 9)).reshape(-1) + 1e-4 * np.arange(196)  # ramp: no ties
    spy = PredictSpy(refiner)
    result = refiner.points_from_scores(torch.tensor(scores), grid)

    assert len(spy.calls) == 1 and spy.last["multimask_output"] is True
    sent = [(int(x), int(y), int(l)) for (x, y), l in zip(spy.last["point_coords"], spy.last["point_labels"])]
    expected_points, expected_labels = maps.map_to_points(scores, grid, size=(H, W), threshold=0.8, downsample=2)
    assert sent == [(int(x), int(y), int(l)) for (x, y), l in zip(expected_points, expected_labels)]
    assert sorted(sent) == sorted(reference_points(scores, grid, (H, W)))
    assert 1 in spy.last["point_labels"] and 0 in spy.last["point_labels"]
    # the refiner keeps them as its prompts, and the best of the 3 masks
    np.testing.assert_array_equal(refiner.points, expected_points)
    np.testing.assert_array_equal(refiner.point_labels, expected_labels)
    assert result.masks.shape == (3, H, W) and result.masks.dtype == bool
    assert result.best == int(np.argmax(result.scores))
    np.testing.assert_array_equal(result.mask, result.masks[result.best])
    np.testing.assert_array_equal(refiner.mask, result.mask)


def test_points_from_part_scores_use_combine_targets(refiner):
    grid = (14, 14)
    parts = np.stack([planted_map(grid, (3, 3)).reshape(-1), planted_map(grid, (10, 10)).reshape(-1)], axis=1)
    parts += 1e-4 * np.arange(196)[:, None]
    spy = PredictSpy(refiner)
    refiner.points_from_scores(parts, grid, image_size=(H, W))
    points, labels = maps.combine_targets(parts, grid, (H, W), 0.8, 2)
    np.testing.assert_array_equal(spy.last["point_coords"], points)
    np.testing.assert_array_equal(spy.last["point_labels"], labels)
    assert len(spy.calls) == 1


def test_points_from_scores_checks_its_inputs(refiner):
    with pytest.raises(ValueError, match="same image"):
        refiner.points_from_scores(np.arange(196.0), (14, 14), image_size=(H + 1, W))
    with pytest.raises(ValueError, match="no points"):
        refiner.points_from_scores(np.zeros(196), (14, 14))
    with pytest.raises(ValueError, match=r"\[N\] or part scores"):
        refiner.points_from_scores(np.zeros((2, 196, 1)), (14, 14))


# --- interactive editing --------------------------------------------------------------------------

def test_adding_and_removing_points_changes_what_sam_gets(refiner):
    spy = PredictSpy(refiner)
    refiner.add_point(10, 20)
    refiner.add_point(30.4, 40.6, positive=False)
    assert len(spy.calls) == 2
    np.testing.assert_array_equal(spy.last["point_coords"], [[10, 20], [30, 41]])
    np.testing.assert_array_equal(spy.last["point_labels"], [1, 0])
    assert refiner.points.dtype == np.int64 and refiner.point_labels.dtype == np.uint8

    refiner.remove_point(0)
    np.testing.assert_array_equal(spy.last["point_coords"], [[30, 41]])
    np.testing.assert_array_equal(spy.last["point_labels"], [0])
    assert len(spy.calls) == 3

    refiner.remove_point_near(100, 100, radius=5)  # nothing that close: no change, no call
    assert len(spy.calls) == 3 and len(refiner.points) == 1
    refiner.remove_point_near(33, 43, radius=5)
    assert len(refiner.points) == 0 and refiner.result is None and refiner.mask is None
    assert len(spy.calls) == 3  # no prompts left: SAM is not asked
    with pytest.raises(IndexError, match="0 points"):
        refiner.remove_point(0)


def test_undo_redo(refiner):
    spy = PredictSpy(refiner)
    for x in (10, 20, 30):
        refiner.add_point(x, 5)
    assert refiner.undo()
    np.testing.assert_array_equal(refiner.points, [[10, 5], [20, 5]])
    np.testing.assert_array_equal(spy.last["point_coords"], [[10, 5], [20, 5]])
    assert refiner.undo() and refiner.can_redo
    np.testing.assert_array_equal(refiner.points, [[10, 5]])
    assert refiner.redo()
    np.testing.assert_array_equal(spy.last["point_coords"], [[10, 5], [20, 5]])
    refiner.add_point(50, 50, positive=False)  # a new edit drops the redo branch
    assert not refiner.can_redo and not refiner.redo()
    np.testing.assert_array_equal(refiner.points, [[10, 5], [20, 5], [50, 50]])
    refiner.clear()
    assert len(refiner.points) == 0 and refiner.result is None
    assert refiner.undo()
    np.testing.assert_array_equal(refiner.points, [[10, 5], [20, 5], [50, 50]])
    np.testing.assert_array_equal(spy.last["point_labels"], [1, 1, 0])
    while refiner.undo():
        pass
    assert len(refiner.points) == 0 and not refiner.can_undo


def test_reset_to_and_explicit_predict(refiner):
    spy = PredictSpy(refiner)
    refiner.reset_to([[1, 2], [3, 4]], [0, 1])
    np.testing.assert_array_equal(spy.last["point_coords"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(spy.last["point_labels"], [0, 1])
    result = refiner.predict(points=[[7, 8]], multimask=False)
    assert result.masks.shape == (1, H, W) and result.best == 0 and spy.last["multimask_output"] is False
    np.testing.assert_array_equal(refiner.points, [[7, 8]])
    assert refiner.undo()
    np.testing.assert_array_equal(refiner.points, [[1, 2], [3, 4]])


def test_box_prompt(refiner):
    spy = PredictSpy(refiner)
    refiner.set_box([10, 20, 80, 90])
    np.testing.assert_allclose(spy.last["box"], [10, 20, 80, 90])
    assert spy.last["point_coords"] is None
    refiner.add_point(40, 50)
    np.testing.assert_allclose(spy.last["box"], [10, 20, 80, 90])
    np.testing.assert_array_equal(spy.last["point_coords"], [[40, 50]])
    refiner.set_box([-5, 10, W + 50, 60])  # clipped to the image
    np.testing.assert_allclose(spy.last["box"], [0, 10, W, 60])
    refiner.set_box(None)
    assert spy.last["box"] is None and refiner.box is None
    with pytest.raises(ValueError, match="x0 < x1"):
        refiner.set_box([50, 10, 20, 60])
    with pytest.raises(ValueError, match="4 finite numbers"):
        refiner.set_box([1, 2, 3])


def test_refine_feeds_back_the_best_logits(refiner):
    spy = PredictSpy(refiner)
    first = refiner.predict(points=[[50, 60], [120, 30]], labels=[1, 0])
    assert spy.last["mask_input"] is None
    refined = refiner.refine()
    np.testing.assert_array_equal(spy.last["mask_input"], first.logits[first.best][None])
    assert spy.last["mask_input"].shape == (1, *refiner.model.prompt_encoder.mask_input_size)
    np.testing.assert_array_equal(spy.last["point_coords"], [[50, 60], [120, 30]])
    assert not np.allclose(refined.logits, first.logits)  # the mask input reached the decoder
    assert refiner.undo()  # back to the prompts without mask input
    assert refiner.prompts.mask_input is None
    with pytest.raises(ValueError, match=r"mask_input must be low-res logits \[1, 64, 64\]"):
        refiner.predict(points=[[1, 1]], mask_input=np.zeros((1, 256, 256)))


# --- instances --------------------------------------------------------------------------------------

def test_instance_prompts_split_two_blobs(refiner):
    grid, size = (14, 14), (140, 140)
    blob_a, blob_b = (3, 3), (10, 10)
    scores = planted_map(grid, blob_a, 1.0) + planted_map(grid, blob_b, 0.9)
    norm = (scores - scores.min()) / (scores.max() - scores.min())
    rows, cols = np.mgrid[0:14, 0:14]
    near_a = (np.hypot(rows - blob_a[0], cols - blob_a[1]) < 4) & (norm >= 0.8)
    near_b = (np.hypot(rows - blob_b[0], cols - blob_b[1]) < 4) & (norm >= 0.8)

    prompts = instance_prompts(scores.reshape(-1), grid, size, threshold=0.8)
    assert len(prompts) == 2
    for prompt, own, other in ((prompts[0], near_a, near_b), (prompts[1], near_b, near_a)):
        np.testing.assert_array_equal(prompt.region, own)  # the thresholded blob, nothing else
        cells = prompt.points // 10  # 10 pixels per cell: (x, y) -> (col, row)
        positives = cells[prompt.labels == 1]
        negatives = cells[prompt.labels == 0]
        assert len(positives) >= 1 and all(own[r, c] for c, r in positives)
        assert any(other[r, c] for c, r in negatives)  # the other blob's peak keeps SAM off it
        assert all(norm[r, c] < 0.05 for c, r in negatives if not other[r, c])
    assert prompts[0].peak == pytest.approx(1.0) and prompts[1].peak < 1.0


def test_predict_instances_prompts_sam_once_per_region(tiny_sam):
    r = SamRefiner(tiny_sam)
    r.set_image(np.full((140, 140, 3), 90, np.uint8))
    r.add_point(5, 5)
    before = r.result
    grid = (14, 14)
    scores = (planted_map(grid, (3, 3)) + planted_map(grid, (10, 10), 0.9)).reshape(-1)
    spy = PredictSpy(r)
    instances = r.predict_instances(scores, grid)
    assert len(spy.calls) == 2 and len(instances) == 2
    assert instances.masks.shape == (2, 140, 140) and instances.scores.shape == (2,)
    for call, centre in zip(spy.calls, ((3, 3), (10, 10))):
        pos = call["point_coords"][call["point_labels"] == 1] // 10
        assert np.abs(pos[:, ::-1] - np.array(centre)).max() <= 2  # positives on the right blob
    for prompt, result in zip(instances.prompts, instances.results):
        np.testing.assert_array_equal(result.points, prompt.points)
    assert r.result is before and len(r.points) == 1  # interactive state untouched


def test_instance_prompts_bad_input():
    with pytest.raises(ValueError, match="grid 14x14 needs 196"):
        instance_prompts(np.zeros(195), (14, 14), (100, 100))
    assert instance_prompts(np.zeros(196), (14, 14), (100, 100)) == []  # constant map: no region


# --- embeddings and caches --------------------------------------------------------------------------

def test_embedding_computed_once_per_image(tiny_sam, image):
    counter = EncoderCounter(tiny_sam)
    try:
        r = SamRefiner(tiny_sam, max_cached_images=2)
        other = image[::-1].copy()
        third = image[:, ::-1].copy()
        r.set_image(image)
        r.set_image(image)
        assert counter.count == 1
        r.set_image(other)
        r.set_image(image)
        assert counter.count == 2
        r.set_image(third)  # evicts `other` (least recently used)
        r.set_image(image)
        assert counter.count == 3
        r.set_image(other)
        assert counter.count == 4 and r.embeddings_computed == 4
    finally:
        counter.close()


def test_cached_embedding_equals_predictor_set_image(tiny_sam, image):
    from segment_anything import SamPredictor

    reference = SamPredictor(tiny_sam)
    reference.set_image(image)
    r = SamRefiner(tiny_sam)
    r.set_image(image)
    assert torch.equal(r.predictor.features, reference.features)
    assert r.predictor.input_size == reference.input_size and r.predictor.original_size == (H, W)
    ref_masks, ref_scores, _ = reference.predict(np.array([[30.0, 40.0]]), np.array([1]))
    ours = r.predict(points=[[30, 40]])
    np.testing.assert_array_equal(ours.masks, ref_masks)
    np.testing.assert_allclose(ours.scores, ref_scores)


def test_disk_cache_reload_gives_identical_masks(tmp_path, image):
    first = SamRefiner(build_tiny_sam(), cache_dir=tmp_path)
    first.set_image(image)
    a = first.predict(points=[[40, 50], [100, 80]], labels=[1, 0])
    assert len(list(tmp_path.glob("*.pt"))) == 1

    fresh = build_tiny_sam()  # same weights, new process-like start
    counter = EncoderCounter(fresh)
    try:
        second = SamRefiner(fresh, cache_dir=tmp_path)
        second.set_image(image)
        assert counter.count == 0
        b = second.predict(points=[[40, 50], [100, 80]], labels=[1, 0])
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.logits, b.logits)
        np.testing.assert_array_equal(a.scores, b.scores)
    finally:
        counter.close()

    other_weights = build_tiny_sam(seed=1)  # different fingerprint: its own cache entry
    counter = EncoderCounter(other_weights)
    try:
        SamRefiner(other_weights, cache_dir=tmp_path).set_image(image)
        assert counter.count == 1 and len(list(tmp_path.glob("*.pt"))) == 2
    finally:
        counter.close()


def test_corrupt_disk_cache_is_recomputed(tmp_path, tiny_sam, image):
    SamRefiner(tiny_sam, cache_dir=tmp_path).set_image(image)
    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(b"not a torch file")
    counter = EncoderCounter(tiny_sam)
    try:
        r = SamRefiner(tiny_sam, cache_dir=tmp_path)
        r.set_image(image)
        assert counter.count == 1
        r.predict(points=[[5, 5]])
    finally:
        counter.close()
    assert torch.load(path, weights_only=True)["features"].shape == (1, 256, 16, 16)


def test_new_image_clears_prompts(refiner, image):
    refiner.add_point(10, 10)
    refiner.set_image(image)  # same image: prompts stay
    assert len(refiner.points) == 1 and refiner.result is not None
    refiner.set_image(image[::-1].copy())
    assert len(refiner.points) == 0 and refiner.result is None and not refiner.can_undo


def test_set_image_in_background_thread_reports_progress(tiny_sam, image):
    r = SamRefiner(tiny_sam)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(r.set_image(image, progress=lambda f, m: seen.append(f))))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive()
    fractions, outcome = seen[:-1], seen[-1]
    assert outcome is True and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and len(fractions) >= 4  # per encoder block
    assert r.predict(points=[[3, 3]]).masks.shape == (3, H, W)


def test_overlapping_set_image_calls_latest_wins(tiny_sam, image):
    r = SamRefiner(tiny_sam)
    later = image[::-1].copy()
    r.set_image(later)  # cached, so the second call below does not wait for the first
    started, release = threading.Event(), threading.Event()

    def slow_progress(fraction, message):
        if fraction == 0.0:
            started.set()
            release.wait(timeout=10)

    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(r.set_image(image, progress=slow_progress)))
    worker.start()
    assert started.wait(timeout=10)
    assert r.set_image(later) is True
    key_later = r.image_key
    release.set()
    worker.join(timeout=30)
    assert outcome == [False] and r.image_key == key_later


# --- bad inputs ---------------------------------------------------------------------------------

def test_bad_inputs_have_clear_errors(tiny_sam, refiner):
    fresh = SamRefiner(tiny_sam)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(points=[[1, 1]])
    with pytest.raises(ImageInputError):
        fresh.set_image(np.zeros((4, 5, 7)))
    with pytest.raises(TypeError, match="segment_anything Sam"):
        SamRefiner(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="outside the image"):
        refiner.add_point(W, 3)
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        refiner.predict(points=[[1, 1], [2, 2]], labels=[1])
    with pytest.raises(ValueError, match="1 \\(positive\\) or 0"):
        refiner.predict(points=[[1, 1]], labels=[2])
    with pytest.raises(ValueError, match=r"\[P, 2\]"):
        refiner.predict(points=[1, 2, 3])
    with pytest.raises(ValueError, match="No prompts"):
        refiner.predict()
    with pytest.raises(RuntimeError, match="Nothing to refine"):
        refiner.refine()


# --- checkpoints ---------------------------------------------------------------------------------

def test_from_checkpoint_round_trip_and_type_checks(tmp_path, tiny_sam, image):
    path = tmp_path / "tiny_sam.pth"
    torch.save(tiny_sam.state_dict(), path)
    loaded = SamRefiner.from_checkpoint(path, device="cpu")  # type inferred from the weights
    loaded.set_image(image)
    direct = SamRefiner(tiny_sam)
    direct.set_image(image)
    np.testing.assert_array_equal(loaded.predict(points=[[20, 30]]).logits, direct.predict(points=[[20, 30]]).logits)
    assert loaded.fingerprint == direct.fingerprint

    with pytest.raises(CheckpointError, match="holds a tiny SAM checkpoint.*model_type='tiny'"):
        SamRefiner.from_checkpoint(path, model_type="vit_b")
    with pytest.raises(CheckpointError, match="not found"):
        SamRefiner.from_checkpoint(tmp_path / "missing.pth", model_type="vit_b")
    with pytest.raises(UnsupportedModelError, match="vit_b, vit_l, vit_h"):
        SamRefiner.from_checkpoint(path, model_type="vit_xl")

    other = tmp_path / "not_sam.pth"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(CheckpointError, match="does not look like a Segment Anything checkpoint"):
        SamRefiner.from_checkpoint(other)


def test_legacy_pickle_needs_trust(tmp_path, tiny_sam):
    path = tmp_path / "legacy.pth"
    torch.save({"model": tiny_sam.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match="trust_checkpoint=True"):
        SamRefiner.from_checkpoint(path, model_type="tiny")
    loaded = SamRefiner.from_checkpoint(path, model_type="tiny", trust_checkpoint=True, device="cpu")
    assert loaded.fingerprint == SamRefiner(tiny_sam).fingerprint


def test_from_pretrained_rejects_unknown_type():
    with pytest.raises(UnsupportedModelError, match="No official checkpoint"):
        SamRefiner.from_pretrained("tiny")


# --- CLIPSURGERY_SAM ------------------------------------------------------------------------------

def test_load_sam_from_env_tiny(monkeypatch, tiny_sam, image):
    from clipsurgery_widgets.engine.sam.refiner import load_sam_from_env

    monkeypatch.setenv("CLIPSURGERY_SAM", "tiny")
    refiner = load_sam_from_env()
    assert refiner.fingerprint == SamRefiner(tiny_sam).fingerprint
    assert refiner.model is not tiny_sam  # a fresh model each time: nobody else's is touched
    refiner.set_image(image)
    assert refiner.predict(points=[[10, 10]]).masks.shape == (3, H, W)


def test_load_sam_from_env_checkpoint_paths(monkeypatch, tmp_path, tiny_sam):
    from clipsurgery_widgets.engine.sam.refiner import load_sam_from_env

    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_sam.state_dict(), path)
    expected = SamRefiner(tiny_sam).fingerprint
    for spec in (f"tiny:{path}", str(path)):  # with the type, or inferred from a bare path
        monkeypatch.setenv("CLIPSURGERY_SAM", spec)
        assert load_sam_from_env(device="cpu").fingerprint == expected
    monkeypatch.setenv("CLIPSURGERY_SAM", f"vit_b:{path}")
    with pytest.raises(CheckpointError, match="holds a tiny SAM checkpoint"):
        load_sam_from_env()
    monkeypatch.setenv("CLIPSURGERY_SAM", f"vit_b:{tmp_path / 'missing.pth'}")
    with pytest.raises(CheckpointError, match="not found"):
        load_sam_from_env()


def test_load_sam_from_env_offline_default_fails_fast_with_instructions(monkeypatch, tmp_path):
    import socket
    import time

    from clipsurgery_widgets.engine.errors import ModelLoadError
    from clipsurgery_widgets.engine.sam import downloads
    from clipsurgery_widgets.engine.sam.refiner import load_sam_from_env

    with socket.socket() as sock:  # a port nothing listens on stands in for the unreachable server
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/segment_anything/sam_vit_b_01ec64.pth"
    monkeypatch.setitem(downloads.SAM_CHECKPOINTS, "vit_b", (url, downloads.SAM_CHECKPOINTS["vit_b"][1]))
    monkeypatch.setenv("CLIPSURGERY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CLIPSURGERY_SAM", raising=False)  # the default is vit_b
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_sam_from_env()
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert f"Could not download {url}" in message and "offline" in message
    assert str(tmp_path / "sam" / "sam_vit_b_01ec64.pth") in message  # where to put a manual download
    assert "CLIPSURGERY_SAM=vit_b:/path/to/the/file.pth" in message and "CLIPSURGERY_SAM=tiny" in message


def test_load_sam_from_env_unknown_value(monkeypatch):
    from clipsurgery_widgets.engine.sam.refiner import load_sam_from_env

    monkeypatch.setenv("CLIPSURGERY_SAM", "vit_q")
    with pytest.raises(UnsupportedModelError, match="CLIPSURGERY_SAM='vit_q'.*'tiny', 'vit_b'"):
        load_sam_from_env()


def test_progress_exception_abandons_the_embedding(tiny_sam, image):
    class Stop(Exception):
        pass

    def stop_midway(fraction, message):
        if 0.0 < fraction < 1.0:
            raise Stop

    r = SamRefiner(tiny_sam)
    with pytest.raises(Stop):
        r.set_image(image, progress=stop_midway)
    assert r.image_key is None and r.embeddings_computed == 0
    assert all(not block._forward_hooks for block in tiny_sam.image_encoder.blocks)  # hooks removed
    assert r.set_image(image) is True and r.embeddings_computed == 1  # nothing half-done was cached
