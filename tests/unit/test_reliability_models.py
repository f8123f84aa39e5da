"""Reliability of model handling (issue 16): the user's model is never changed, in-place weight
changes are noticed before anything cached is served, damaged or code-carrying checkpoints, and
input edges that used to escape as raw errors."""
from __future__ import annotations

import logging
import random
import warnings
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from clipsurgery_widgets.engine import (
    CheckpointError,
    ImageInputError,
    build_tiny_model,
    load_model,
    wrap_model,
)
from clipsurgery_widgets.engine.checkpoints import read_checkpoint
from clipsurgery_widgets.engine.explainer import Explainer
from clipsurgery_widgets.engine.text.encoding import encode_texts

PHOTO = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)


def module_state(model: nn.Module) -> dict:
    """Everything of a module the engine must leave alone: flags, devices, dtypes, hooks, grads."""
    return {
        "training": [(name, m.training) for name, m in model.named_modules()],
        "tensors": [(name, t.device, t.dtype, t.requires_grad, t.data_ptr())
                    for name, t in list(model.named_parameters()) + list(model.named_buffers())],
        "hooks": [(name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for name, m in model.named_modules()],
        "modules": [(name, id(m)) for name, m in model.named_modules()],
    }


def process_state() -> dict:
    """Process-wide settings a library must not change behind its caller's back."""
    loggers = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
               if isinstance(logger, logging.Logger)}
    return {
        "threads": (torch.get_num_threads(), torch.get_num_interop_threads()),
        "torch_rng": torch.random.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "python_rng": random.getstate(),
        "grad": torch.is_grad_enabled(),
        "dtype": torch.get_default_dtype(),
        "root_level": logging.root.level,
        "disabled": logging.root.manager.disable,
        "loggers": loggers,
        "mha_fastpath": torch.backends.mha.get_fastpath_enabled(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def same_process_state(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else
               np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else
               (a[k] == b[k] if k != "loggers" else all(b[k].get(n) == lvl for n, lvl in a[k].items()))
               for k in a)


# --- item 1: the user's model is wrapped, never modified -----------------------------------------

@pytest.mark.parametrize("name", ["tiny-random-vit", "tiny-random-resnet"])
def test_explainer_leaves_a_training_model_as_it_was(name):
    model = build_tiny_model(name).train()
    before = module_state(model)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    explainer = Explainer(model, cache_dir=False)
    result = explainer.explain(PHOTO, ["cat", "dog"], method="both")
    assert model.training and module_state(model) == before
    # BatchNorm statistics (ResNet) are untouched: explanations run in eval mode privately.
    assert all(torch.equal(stats[k], v) for k, v in model.state_dict().items())
    # ...and equal what the same weights give in eval mode.
    reference = Explainer(build_tiny_model(name), cache_dir=False).explain(PHOTO, ["cat", "dog"], method="both")
    np.testing.assert_allclose(result.surgery.patch_scores, reference.surgery.patch_scores, atol=1e-5)


def test_eval_model_on_its_own_device_is_used_as_it_is():
    model = build_tiny_model()
    loaded = load_model(model)
    assert loaded.model is model and loaded.device == torch.device("cpu")


def test_load_model_for_another_device_makes_a_private_copy():
    model = build_tiny_model().train()
    before = module_state(model)
    loaded = load_model(model, device="meta")  # "another device" that exists on every machine
    assert module_state(model) == before and model.training
    assert loaded.model is not model and loaded.device.type == "meta"
    assert all(p.device.type == "meta" for p in loaded.model.parameters())
    assert not loaded.model.training
    assert loaded.fingerprint == wrap_model(build_tiny_model()).fingerprint  # same weights, same key


def test_hooks_registered_by_the_engine_never_land_on_the_user_model():
    model = build_tiny_model().train()
    loaded = wrap_model(model)
    handle = loaded.model.visual.register_forward_hook(lambda *args: None)
    assert len(model.visual._forward_hooks) == 0
    handle.remove()


def test_no_process_wide_state_changes():
    before = process_state()
    loaded = load_model("tiny-random-vit", device="cpu")
    explainer = Explainer(build_tiny_model().train(), cache_dir=False)
    explainer.explain(PHOTO, ["cat", "dog"], method="both")
    Explainer(loaded, cache_dir=False).explain(PHOTO, "cat", method="sclip")
    assert same_process_state(before, process_state())


# --- item 2: weights changed in place ------------------------------------------------------------

def fresh_features(model: nn.Module, labels: list[str]) -> torch.Tensor:
    return encode_texts(model, load_model("tiny-random-vit").tokenizer, labels).float()


def test_in_place_weight_change_is_noticed_before_serving_cached_features(tmp_path):
    model = build_tiny_model()
    explainer = Explainer(model, cache_dir=tmp_path)
    explainer.label_features(["cat"])
    old_fingerprint = explainer.model.fingerprint
    with torch.no_grad():
        model.text_projection.mul_(-1)
    got = explainer.label_features(["dog", "cat"])
    assert explainer.model.fingerprint != old_fingerprint
    torch.testing.assert_close(got, fresh_features(model, ["dog", "cat"]))
    # The unchanged weights still find correct values on disk: nothing was written under their key.
    again = Explainer(build_tiny_model(), cache_dir=tmp_path).label_features(["dog", "cat"])
    torch.testing.assert_close(again, fresh_features(build_tiny_model(), ["dog", "cat"]))


def test_in_place_change_of_a_model_loaded_by_name_changes_its_fingerprint():
    loaded = load_model("tiny-random-vit", device="cpu")
    explainer = Explainer(loaded, cache_dir=False)
    first = explainer.explain(PHOTO, ["cat", "dog"])
    fingerprint = loaded.fingerprint
    with torch.no_grad():
        loaded.model.visual.proj.mul_(-1)
    assert loaded.fingerprint != fingerprint
    second = explainer.explain(PHOTO, ["cat", "dog"])  # image tokens are not served from memory
    reference = Explainer(wrap_model(loaded.model), cache_dir=False).explain(PHOTO, ["cat", "dog"])
    np.testing.assert_allclose(second.surgery.patch_scores, reference.surgery.patch_scores, atol=1e-6)
    assert not np.allclose(first.surgery.patch_scores, second.surgery.patch_scores)


def test_results_of_weights_changed_mid_computation_are_not_stored(tmp_path, monkeypatch):
    import clipsurgery_widgets.engine.explainer as explainer_module

    model = build_tiny_model()
    explainer = Explainer(model, cache_dir=tmp_path)
    real = explainer_module.encode_texts

    def change_then_encode(clip, *args, **kwargs):
        with torch.no_grad():
            model.text_projection.mul_(-1)  # another thread trains the model meanwhile
        return real(clip, *args, **kwargs)

    monkeypatch.setattr(explainer_module, "encode_texts", change_then_encode)
    explainer.label_features(["zebra"])
    monkeypatch.setattr(explainer_module, "encode_texts", real)
    again = Explainer(build_tiny_model(), cache_dir=tmp_path).label_features(["zebra"])
    torch.testing.assert_close(again, fresh_features(build_tiny_model(), ["zebra"]))


# --- item 8: damaged checkpoint zips, directories ------------------------------------------------

def damaged_zips(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(build_tiny_model().state_dict(), good)
    data = good.read_bytes()
    eocd = data.rfind(b"PK\x05\x06")
    central = data.rfind(b"PK\x01\x02")
    broken_directory = tmp_path / "broken_directory.pt"
    broken_directory.write_bytes(data[:central] + b"\x00" * 46 + data[central + 46:])
    bare_eocd = tmp_path / "bare_eocd.pt"
    bare_eocd.write_bytes(data[eocd:])
    return [broken_directory, bare_eocd]


def test_damaged_zip_checkpoints_are_checkpoint_errors(tmp_path):
    from clipsurgery_widgets.engine.sam.models import load_sam_checkpoint

    for path in damaged_zips(tmp_path):
        with pytest.raises(CheckpointError, match="damaged|not a readable"):
            load_model("tiny-random-vit", checkpoint=path)
        with pytest.raises(CheckpointError, match="damaged|not a readable"):
            load_sam_checkpoint(path)


def test_directory_as_checkpoint_says_it_is_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="folder") as info:
        load_model("tiny-random-vit", checkpoint=tmp_path)
    assert "not found" not in str(info.value)
    with pytest.raises(CheckpointError, match="folder"):
        read_checkpoint(tmp_path)


# --- item 11: TorchScript archives never run their code ------------------------------------------

class StatefulBlock(nn.Module):
    """A TorchScript module whose __setstate__ prints: loading the archive the usual way runs it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.arange(6.0).reshape(2, 3))

    def forward(self, x):
        return x + self.weight.sum()

    @torch.jit.export
    def __getstate__(self):
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        print("ARCHIVE CODE RAN")
        self.weight = state[0]
        self.training = state[1]


class PlainBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("scale", torch.full((2,), 3.0))

    def forward(self, x):
        return self.lin(x) * self.scale


def script_archive(path, module: nn.Module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_jit_archive_with_setstate_code_is_refused_without_running_it(tmp_path, capfd):
    path = script_archive(tmp_path / "stateful.pt", _Holder())
    capfd.readouterr()
    with pytest.raises(CheckpointError, match="trust_checkpoint=True"):
        read_checkpoint(path)
    assert "ARCHIVE CODE RAN" not in capfd.readouterr().out
    state, is_jit = read_checkpoint(path, trust=True)  # trusted: torch.jit.load, which runs it
    assert is_jit and torch.equal(state["block.weight"], torch.arange(6.0).reshape(2, 3))


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = StatefulBlock()

    def forward(self, x):
        return self.block(x)


def test_plain_jit_archive_weights_are_read_without_torch_jit_load(tmp_path, monkeypatch):
    module = PlainBlock()
    path = script_archive(tmp_path / "plain.pt", module)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the archive's code")

    monkeypatch.setattr(torch.jit, "load", forbidden)
    state, is_jit = read_checkpoint(path)
    assert is_jit and set(state) >= {"lin.weight", "lin.bias", "scale"}
    for key, value in module.state_dict().items():
        assert torch.equal(state[key], value)


def test_jit_archive_with_out_of_bounds_tensor_view_is_refused(tmp_path):
    path = script_archive(tmp_path / "plain.pt", PlainBlock())
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info.filename) for info in zf.infolist()}
    storage = next(name for name in members if "/data/" in name and not name.endswith(".pkl")
                   and ".data/" not in name)
    members[storage] = members[storage][:4]  # a storage shorter than its tensors claim
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError):
        read_checkpoint(bad)


# --- item 9: input edges ---------------------------------------------------------------------------

def test_overlong_file_name_is_an_image_input_error(tmp_path):
    from clipsurgery_widgets.engine.images import load_image

    with pytest.raises(ImageInputError, match="name"):
        load_image(tmp_path / ("a" * 300 + ".png"))


def test_bfloat16_and_half_tensor_images_are_read():
    from clipsurgery_widgets.engine.images import load_image

    values = torch.rand(3, 20, 30)
    for dtype in (torch.bfloat16, torch.float16):
        rgb = load_image(values.to(dtype))
        assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
        expected = np.round(values.to(dtype).float().permute(1, 2, 0).numpy() * 255)
        assert np.abs(rgb.astype(int) - expected).max() <= 1


def test_templates_given_as_a_generator_are_used():
    explainer = Explainer(build_tiny_model(), cache_dir=False)
    templates = ["a photo of a {}.", "a drawing of a {}."]
    got = explainer.label_features(["cat"], templates=(t for t in templates))
    expected = encode_texts(explainer.model, None, ["cat"], templates=templates)
    torch.testing.assert_close(got, expected)


def test_rle_edges_are_clear_errors_or_right():
    from clipsurgery_widgets.engine.sam.export import mask_to_rle, rle_to_mask

    for _ in range(3):  # uninitialised memory would give a different mask each time
        with pytest.raises(ValueError, match="counts"):
            rle_to_mask({"size": [4, 5], "counts": ""})
    with pytest.raises(ValueError, match="size"):
        rle_to_mask({"size": [-1, 5], "counts": "0"})
    with pytest.raises(ValueError, match="ASCII"):
        rle_to_mask({"size": [4, 5], "counts": "é"})
    with pytest.raises(ValueError, match="counts"):
        rle_to_mask({"size": [4, 5], "counts": "3"})  # runs that do not cover the mask
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 2:4] = True
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask)), mask)
    empty = np.zeros((0, 0), dtype=bool)
    assert rle_to_mask({"size": [0, 0], "counts": ""}).shape == empty.shape


def test_download_url_without_a_file_name_is_refused(tmp_path):
    from clipsurgery_widgets.engine.sam.downloads import download_checkpoint

    for url in ("https://host/..", "https://host/.", "https://host/a/..", "https://host/"):
        with pytest.raises(ValueError, match="file name"):
            download_checkpoint(url, dest_dir=tmp_path, progress=False)
        with pytest.raises(ValueError, match="file name"):
            download_checkpoint(url, dest_dir=tmp_path, sha256="0" * 64, progress=False)


def test_replaced_parameters_and_submodules_change_the_fingerprint():
    loaded = wrap_model(build_tiny_model())
    first = loaded.fingerprint
    assert loaded.fingerprint == first  # stable while nothing changes
    loaded.model.visual.proj = nn.Parameter(loaded.model.visual.proj.detach() * 2)
    second = loaded.fingerprint
    assert second != first
    loaded.model.visual.ln_post = nn.LayerNorm(64, eps=1e-3)  # a new submodule with fresh tensors
    with torch.no_grad():
        loaded.model.visual.ln_post.weight.fill_(0.5)
    assert loaded.fingerprint not in (first, second)
