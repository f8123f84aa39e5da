"""Model loading: tiny models, every checkpoint format, unsafe pickles, offline and unknown names."""
from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from clipsurgery_widgets.engine import (
    CheckpointError,
    LoadedModel,
    ModelLoadError,
    UnsupportedModelError,
    build_tiny_model,
    load_model,
    load_model_from_env,
    wrap_model,
)
from clipsurgery_widgets.engine.loading import check_supported_config

PIXELS = torch.linspace(-1, 1, 3 * 224 * 224).reshape(1, 3, 224, 224)


def perturbed_tiny(name: str = "tiny-random-vit") -> torch.nn.Module:
    """A tiny model whose weights differ from the built-in seed, so a reload is observable."""
    model = build_tiny_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name,family,patch", [("tiny-random-vit", "vit", 16), ("tiny-random-resnet", "resnet", 32)])
def test_tiny_models_load_offline(name, family, patch):
    loaded = load_model(name, device="cpu")
    assert isinstance(loaded, LoadedModel)
    assert loaded.family == family and loaded.patch_size == patch
    assert loaded.image_size == (224, 224) and loaded.name == name
    assert not loaded.model.training
    assert loaded.tokenizer(["a cat"]).shape == (1, 77)
    assert loaded.model.encode_image(PIXELS).shape == (1, 32)
    # Fixed seed: two loads give the same weights and the same fingerprint.
    again = load_model(name, device="cpu")
    assert same_weights(loaded.model, again.model) and loaded.fingerprint == again.fingerprint


def test_tiny_model_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model("tiny-random-vit")
    assert torch.equal(torch.rand(3), expected)


def test_device_defaults_to_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: default device is cuda")
    assert load_model("tiny-random-vit").device.type == "cpu"


@pytest.mark.parametrize("fmt", ["state_dict", "wrapped_ddp", "safetensors", "jit"])
def test_checkpoint_round_trip(tmp_path, fmt):
    model = perturbed_tiny()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt")
    if fmt == "state_dict":
        torch.save(model.state_dict(), path)
    elif fmt == "wrapped_ddp":  # open_clip training checkpoints: {"state_dict": {"module.x": ...}, "epoch": ...}
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:  # an OpenAI-style TorchScript archive whose root module is the CLIP model
        text = torch.zeros(1, 77, dtype=torch.long)
        traced = torch.jit.trace(model, (PIXELS, text), check_trace=False, strict=False)
        torch.jit.save(traced, str(path))
    loaded = load_model("tiny-random-vit", checkpoint=path, device="cpu")
    assert same_weights(loaded.model, model)
    assert not same_weights(loaded.model, build_tiny_model())
    assert loaded.fingerprint.startswith("file/") and loaded.pretrained == str(path)
    torch.testing.assert_close(loaded.model.encode_image(PIXELS), model.encode_image(PIXELS))


def test_checkpoint_fingerprint_follows_content(tmp_path):
    a, b = perturbed_tiny(), perturbed_tiny()
    torch.save(a.state_dict(), tmp_path / "a.pt")
    torch.save(b.state_dict(), tmp_path / "b.pt")
    shutil.copy(tmp_path / "a.pt", tmp_path / "a_copy.pt")  # same bytes under another name
    fa = load_model("tiny-random-vit", checkpoint=tmp_path / "a.pt").fingerprint
    assert fa != load_model("tiny-random-vit", checkpoint=tmp_path / "b.pt").fingerprint
    assert fa == load_model("tiny-random-vit", checkpoint=tmp_path / "a_copy.pt").fingerprint


def test_openai_state_dict_architecture_is_inferred(tmp_path):
    # Heads of width 64 are what the OpenAI layout implies, so the architecture can be read off shapes.
    import open_clip

    model = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 224, "layers": 2, "width": 64, "head_width": 64,
                                                     "patch_size": 32},
                           text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
                           quick_gelu=True)
    torch.save(model.state_dict(), tmp_path / "openai.pt")
    loaded = load_model(str(tmp_path / "openai.pt"), device="cpu")
    assert loaded.name == "custom" and loaded.patch_size == 32
    assert same_weights(loaded.model, model)


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch should-not-exist",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch, writer):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"visual.proj": RunsCode()}, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump({"visual.proj": RunsCode()}, fh)
    with pytest.raises(CheckpointError, match="trust_checkpoint=True"):
        load_model("tiny-random-vit", checkpoint=path)
    assert not (tmp_path / "should-not-exist").exists()


class Legacy:  # an object beyond plain tensors, as old training scripts saved
    pass


def test_trust_checkpoint_opts_out_for_legacy_pickles(tmp_path):
    model = perturbed_tiny()
    path = tmp_path / "legacy.pt"
    torch.save({"state_dict": model.state_dict(), "args": Legacy()}, path)
    with pytest.raises(CheckpointError, match="trust_checkpoint"):
        load_model("tiny-random-vit", checkpoint=path)
    loaded = load_model("tiny-random-vit", checkpoint=path, trust_checkpoint=True)
    assert same_weights(loaded.model, model)


@pytest.mark.parametrize("content,match", [(None, "not found"), (b"not a checkpoint at all", "not a readable"),
                                           (b"PK\x03\x04broken zip", "not a readable"),
                                           (b"", "not a readable")])
def test_bad_checkpoint_files(tmp_path, content, match):
    path = tmp_path / "w.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_model("tiny-random-vit", checkpoint=path)


def test_checkpoint_for_another_architecture(tmp_path):
    torch.save(build_tiny_model("tiny-random-resnet").state_dict(), tmp_path / "rn.pt")
    with pytest.raises(CheckpointError, match="does not match the model architecture"):
        load_model("tiny-random-vit", checkpoint=tmp_path / "rn.pt")


def test_offline_download_fails_fast_with_clear_message():
    with pytest.raises(ModelLoadError) as info:
        load_model("ViT-B-16", pretrained="openai")
    msg = str(info.value)
    assert "'ViT-B-16'" in msg and "'openai'" in msg
    assert "cached in" in msg and "checkpoint=" in msg and "--checkpoint" in msg


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(UnsupportedModelError, match="Did you mean: .*ViT-B-16"):
        load_model("ViT-B-61")
    with pytest.raises(UnsupportedModelError, match="no pretrained tag 'nonsense'.*openai"):
        load_model("ViT-B-16", pretrained="nonsense")


@pytest.mark.parametrize("name,why", [("ViT-B-16-SigLIP", "timm"), ("convnext_base", "timm"),
                                      ("coca_ViT-B-32", "attention-pooling"), ("ViT-B-16-SigLIP2", "timm")])
def test_unsupported_towers_refused_before_download(name, why):
    import open_clip

    if name not in open_clip.list_models():
        pytest.skip(f"{name} not in this open_clip")
    with pytest.raises(UnsupportedModelError, match=why) as info:
        load_model(name, pretrained=None)
    assert "Supported:" in str(info.value)


def test_hf_text_tower_refused():
    with pytest.raises(UnsupportedModelError, match="Hugging Face"):
        check_supported_config("x", {"vision_cfg": {}, "text_cfg": {"hf_model_name": "bert-base"}})


def test_real_architecture_without_weights_builds():
    loaded = load_model("RN50", pretrained=None, device="cpu")
    assert loaded.family == "resnet" and loaded.pretrained is None


def test_wrap_built_model_never_changes_it():
    model = perturbed_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = load_model(model)
    assert loaded.model is model and loaded.name == "custom"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    other = wrap_model(perturbed_tiny())
    assert loaded.fingerprint != other.fingerprint


def test_non_clip_module_refused():
    with pytest.raises(UnsupportedModelError, match="not an open_clip CLIP"):
        load_model(torch.nn.Linear(2, 2))


def test_model_from_environment(monkeypatch):
    monkeypatch.setenv("CLIPSURGERY_MODEL", "tiny-random-resnet")
    assert load_model_from_env().family == "resnet"
    monkeypatch.setenv("CLIPSURGERY_MODEL", "RN50:none")
    assert load_model_from_env().pretrained is None
    monkeypatch.delenv("CLIPSURGERY_MODEL")
    with pytest.raises(ModelLoadError, match="ViT-B-16"):
        load_model_from_env()


def test_unreachable_hub_goes_offline_at_once(monkeypatch):
    """Without a network the hub client would retry for a minute; a short probe avoids that."""
    import socket
    import time

    from huggingface_hub import constants

    from clipsurgery_widgets.engine import loading

    with socket.socket() as sock:  # a loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    t0 = time.perf_counter()
    assert loading._weights_host_reachable("ViT-B-16", "openai") is False
    with pytest.raises(ModelLoadError, match="looks offline"):
        load_model("ViT-B-16", pretrained="openai")
    assert time.perf_counter() - t0 < 20
    assert constants.HF_HUB_OFFLINE is False  # restored after the attempt
