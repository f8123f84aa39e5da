"""Model loading: open_clip names with pretrained tags, local checkpoints, built models, tiny models.

Everything returns a :class:`LoadedModel`, the one record the rest of the engine reads.
"""
from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .checkpoints import (  # noqa: F401
    _checkpoint_fingerprint,
    _load_state_into,
    _load_weights_into,
    check_checkpoint_path,
    first_line,
    read_checkpoint,
)
from .errors import CheckpointError, ModelLoadError, UnsupportedModelError
from .hub import (  # noqa: F401  (tests reach these through this module)
    _download_problem,
    _hub_logs_silenced,
    _hub_offline,
    _weights_host_reachable,
    weights_cache_dir,
)
from .model_guard import (WeightsWatch, content_fingerprint, eval_view, model_device, private_copy, same_device)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

TINY_SEED = 0
# Small randomly initialised configurations (RECIPES.md). Their explanations mean nothing: they
# exist so that tests, notebooks and smoke runs work offline in milliseconds. The ViT has 6 layers
# (RECIPES.md suggests 3) so that the default surgery depth of 6 is valid on it.
_TINY_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny-random-vit": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 6, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": _TINY_TEXT_CFG,
    },
    "tiny-random-resnet": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
        "text_cfg": _TINY_TEXT_CFG,
    },
}
SUPPORTED_FAMILIES = (
    "open_clip ViT image towers (VisionTransformer with a class token, e.g. ViT-B-16, ViT-L-14) and "
    "ModifiedResNet image towers (RN50, RN101, RN50x4, ...), with open_clip's own text transformer"
)


@dataclass(frozen=True)
class LoadedModel:
    """An open_clip CLIP model ready for explanation, with what the engine needs to know about it.

    Attributes:
        model: the open_clip ``CLIP`` module the engine runs, in eval mode, on ``device``: a built
            model that was in eval mode on ``device`` itself, else a view or copy of it (see
            :func:`wrap_model`).
        tokenizer: callable ``list[str] -> LongTensor [T, context_length]``.
        name: model name (open_clip config name, tiny name, or ``"custom"``).
        pretrained: pretrained tag, checkpoint path, or None.
        family: ``"vit"`` or ``"resnet"``.
        patch_size: pixels per grid cell (ViT patch size; 32 for ModifiedResNet).
        image_size: native (height, width) of the image tower.
        mean, std: per-channel normalisation used by preprocessing.
        initial_fingerprint: what identified the weights when loaded.
        device: where the model lives.
        watch: notices in-place weight changes (see :attr:`fingerprint`).
    """

    model: nn.Module
    tokenizer: Callable[..., torch.Tensor] = field(repr=False)
    name: str
    pretrained: str | None
    family: str
    patch_size: int
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    initial_fingerprint: str
    device: torch.device
    watch: WeightsWatch | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.watch is None:
            object.__setattr__(self, "watch", WeightsWatch(self.model, self.initial_fingerprint))

    @property
    def fingerprint(self) -> str:
        """Stable string identifying architecture and weights: the cache key of everything computed.

        Checked on every read (tensor version counters, about 0.3 ms for ViT-B-16): after weights
        change in place it becomes a content hash of the new weights. Edits through ``p.data``
        are not counted by torch; call ``watch.refresh()`` after those.
        """
        return self.watch.fingerprint()

    @property
    def text_dim(self) -> int:
        """D, the width of text (and image) features."""
        proj = self.model.text_projection
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])

    @property
    def context_length(self) -> int:
        return int(getattr(self.model, "context_length", 77))

    @property
    def num_blocks(self) -> int | None:
        """Transformer blocks of a ViT image tower (the largest surgery depth); None for a ModifiedResNet."""
        return len(self.model.visual.transformer.resblocks) if self.family == "vit" else None

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature exp(logit_scale), or 100 (OpenAI's trained value) without one."""
        return clip_logit_scale(self.model)


def clip_logit_scale(clip: nn.Module) -> float:
    """exp(clip.logit_scale) as a float: the factor before CLIP's softmax over texts; 100 when absent."""
    value = getattr(clip, "logit_scale", None)
    return float(value.detach().exp()) if value is not None else 100.0


def default_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(
    name: str | nn.Module = "ViT-B-16",
    pretrained: str | None = "openai",
    device: str | torch.device | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    quick_gelu: bool | None = None,
    trust_checkpoint: bool = False,
    cache_dir: str | None = None,
) -> LoadedModel:
    """Load a CLIP model for explanation.

    Args:
        name: an open_clip model name (``"ViT-B-16"``, ``"RN50"``, ...), ``"tiny-random-vit"`` /
            ``"tiny-random-resnet"`` (random weights, for tests only), a path to a checkpoint file,
            or an already-built open_clip ``CLIP`` model (wrapped, never modified: see :func:`wrap_model`).
        pretrained: open_clip pretrained tag (``"openai"``, ``"laion2b_s34b_b88k"``, ...). Weights are
            downloaded once into the Hugging Face cache. Ignored for tiny models and built models.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available. For a built model the
            default is the device it is on; another device gets a private copy of its weights there.
        checkpoint: a local weights file for architecture ``name``: an OpenAI JIT archive, an
            OpenAI or open_clip state dict (``.pt``/``.bin``), or ``.safetensors``.
        quick_gelu: force QuickGELU on or off; by default on for OpenAI weights (tag ``"openai"``,
            JIT archives) and off otherwise.
        trust_checkpoint: load pickles with ``weights_only=False`` and code-restored JIT archives with
            ``torch.jit.load``. Only for files you trust: both can run arbitrary code.
        cache_dir: where to keep downloaded weights (default: the Hugging Face cache).
    """
    if isinstance(name, nn.Module):
        return wrap_model(name, device=device)
    dev = default_device(device)
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"load_model: name must be a model name, a checkpoint path or a CLIP model, not {type(name).__name__}")
    name = str(name)
    if checkpoint is None and (os.sep in name or name.endswith((".pt", ".pth", ".bin", ".safetensors"))):
        # A path given as the name: infer the architecture from the weights.
        checkpoint, name = name, None
    if name in TINY_CONFIGS:
        model = build_tiny_model(name)
        if checkpoint is not None:
            _load_weights_into(model, checkpoint, trust_checkpoint)
        return _record(model, name, str(checkpoint) if checkpoint else None, dev,
                       fingerprint=_checkpoint_fingerprint(checkpoint) if checkpoint else f"{name}/seed{TINY_SEED}")
    if checkpoint is not None:
        return _load_from_checkpoint(name, Path(checkpoint), pretrained, dev, quick_gelu, trust_checkpoint)
    return _load_pretrained(name, pretrained, dev, quick_gelu, cache_dir)


def build_tiny_model(name: str = "tiny-random-vit") -> nn.Module:
    """A tiny randomly initialised open_clip CLIP (fixed seed; the global RNG is left untouched)."""
    import open_clip

    if name not in TINY_CONFIGS:
        raise UnsupportedModelError(f"Unknown tiny model {name!r}; choose one of {sorted(TINY_CONFIGS)}.")
    cfg = TINY_CONFIGS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=dict(cfg["vision_cfg"]),
                               text_cfg=dict(cfg["text_cfg"]), quick_gelu=True)
    return model.eval()


def wrap_model(model: nn.Module, device: str | torch.device | None = None, name: str = "custom",
               pretrained: str | None = None) -> LoadedModel:
    """Describe an already-built open_clip CLIP model, never changing it.

    * In eval mode on ``device`` (or ``device`` None): the model itself is used.
    * In training mode (any submodule): the engine runs an eval-mode view that shares the model's
      parameter and buffer tensors (no extra memory; the model's flags and hooks stay as they are).
    * ``device`` another than the model's: a private eval-mode copy of the weights is made on
      ``device``, costing one full copy of the parameters and buffers in that device's memory
      (about 600 MB for ViT-B-16 in float32). The original stays where it is; later in-place
      changes to it are not seen by the copy. To avoid the copy, move the model yourself first:
      ``load_model(model.to("cuda"))``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"wrap_model needs an open_clip CLIP module, not {type(model).__name__}.")
    _check_clip(model, name)
    here = model_device(model)
    fingerprint = content_fingerprint(model)
    if device is not None and not same_device(here, torch.device(device)):
        model, here = private_copy(model, torch.device(device)), torch.device(device)
    elif any(m.training for m in model.modules()):
        model = eval_view(model)
    return _record(model, name, pretrained, here, fingerprint=fingerprint, owned=False)


# --- pretrained tags -----------------------------------------------------------------------

def _load_pretrained(name: str, pretrained: str | None, dev: torch.device, quick_gelu: bool | None,
                     cache_dir: str | None) -> LoadedModel:
    import open_clip

    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known + list(TINY_CONFIGS), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnsupportedModelError(
            f"Unknown model name {name!r}.{hint} See open_clip.list_models() for all names, or pass "
            f"a local checkpoint file with checkpoint=... .")
    check_supported_config(name, open_clip.get_model_config(name))
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained is not None and pretrained not in tags and not Path(pretrained).exists():
        raise UnsupportedModelError(
            f"Model {name!r} has no pretrained tag {pretrained!r}. Known tags: {', '.join(tags) or 'none'}.")
    if quick_gelu is None:
        quick_gelu = pretrained == "openai"
    try:
        # Without a network the hub client retries for about a minute; probe once, briefly, and go
        # offline-only (cached weights still load) when nothing answers.
        with _hub_logs_silenced(), _hub_offline(not _weights_host_reachable(name, pretrained)):
            model = open_clip.create_model(name, pretrained=pretrained, device=dev, force_quick_gelu=quick_gelu,
                                           cache_dir=cache_dir, require_pretrained=pretrained is not None)
    except Exception as exc:  # network, hub, missing file: one readable message, no hub traceback
        raise ModelLoadError(
            f"Could not load weights for model {name!r} with pretrained tag {pretrained!r}: "
            f"{_download_problem(exc)}. Weights are downloaded once and cached in "
            f"{cache_dir or weights_cache_dir()}. To use a local file instead, pass "
            f"load_model({name!r}, checkpoint='path/to/weights.pt') "
            f"(command line: --checkpoint FILE).") from None
    fingerprint = _short_hash(f"{name}|{pretrained}|quick_gelu={quick_gelu}")
    return _record(model.eval(), name, pretrained, dev, fingerprint=f"{name}/{pretrained}/{fingerprint}")


def check_supported_config(name: str, cfg: dict | None) -> None:
    """Refuse model configs whose towers the surgery can't handle, before anything is downloaded."""
    if not cfg:
        return
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    problem = None
    if vision.get("timm_model_name"):
        problem = f"its image tower is a timm model ({vision['timm_model_name']})"
    elif vision.get("attentional_pool"):
        problem = "its image tower uses an attention-pooling head"
    elif vision.get("pool_type", "tok") != "tok" or vision.get("no_ln_pre") or vision.get("final_ln_after_pool"):
        problem = "its image tower pools tokens differently from CLIP's class token"
    elif text.get("hf_model_name"):
        problem = f"its text tower is a Hugging Face model ({text['hf_model_name']})"
    elif "multimodal_cfg" in cfg:
        problem = "it is a captioning (CoCa) model"
    if problem:
        raise UnsupportedModelError(f"Model {name!r} is not supported: {problem}. Supported: {SUPPORTED_FAMILIES}.")


# --- local checkpoints -----------------------------------------------------------------------

def _load_from_checkpoint(name: str | None, path: Path, pretrained: str | None, dev: torch.device,
                          quick_gelu: bool | None, trust: bool) -> LoadedModel:
    import open_clip
    from open_clip.model import build_model_from_openai_state_dict

    check_checkpoint_path(path)
    state, is_jit = read_checkpoint(path, trust)
    if quick_gelu is None:
        quick_gelu = is_jit or pretrained == "openai"
    if name is None:
        try:
            model = build_model_from_openai_state_dict(dict(state), quick_gelu=quick_gelu)
            # The builder casts to fp16 for GPUs; keep float32 and the exact stored values instead.
            model = model.float()
            _load_state_into(model, state, path)
        except Exception as exc:
            raise CheckpointError(f"Could not infer a CLIP architecture from {path}: {first_line(exc)}. "
                                  f"Pass the model name as well, e.g. load_model('ViT-B-16', checkpoint=...).") from None
        name = "custom"
    else:
        if name not in open_clip.list_models():
            close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
            raise UnsupportedModelError(f"Unknown model name {name!r}." +
                                        (f" Did you mean: {', '.join(close)}?" if close else ""))
        check_supported_config(name, open_clip.get_model_config(name))
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
        _load_state_into(model, state, path)
    return _record(model.eval().to(dev), name, str(path), dev, fingerprint=_checkpoint_fingerprint(path))


def _check_clip(model: nn.Module, name: str) -> str:
    """The tower family of an open_clip CLIP model the surgery handles; UnsupportedModelError otherwise."""
    visual = getattr(model, "visual", None)
    if visual is None or not hasattr(model, "token_embedding"):
        raise UnsupportedModelError(f"Model {name!r} is not supported: it is not an open_clip CLIP model with "
                                    f"its own text transformer. Supported: {SUPPORTED_FAMILIES}.")
    family = tower_family(visual)
    if family is None:
        raise UnsupportedModelError(f"Model {name!r} is not supported: its image tower is "
                                    f"{type(visual).__name__}. Supported: {SUPPORTED_FAMILIES}.")
    return family


def _record(model: nn.Module, name: str, pretrained: str | None, dev: torch.device, fingerprint: str,
            owned: bool = True) -> LoadedModel:
    """The LoadedModel record; ``owned`` models (built here) are moved to ``dev`` and put in eval mode."""
    import open_clip

    family = _check_clip(model, name)
    if owned:
        model = model.to(dev).eval()
    visual = model.visual
    size = visual.image_size
    size = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
    patch = visual.patch_size[0] if family == "vit" else 32
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    mean = tuple(float(m) for m in cfg.get("mean", OPENAI_MEAN))
    std = tuple(float(s) for s in cfg.get("std", OPENAI_STD))
    tokenizer = open_clip.get_tokenizer(name) if name in open_clip.list_models() else open_clip.SimpleTokenizer(
        context_length=int(getattr(model, "context_length", 77)))
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, pretrained=pretrained, family=family,
                       patch_size=int(patch), image_size=size, mean=mean, std=std,
                       initial_fingerprint=fingerprint, device=dev)


def tower_family(visual: nn.Module) -> str | None:
    """``"vit"`` or ``"resnet"`` for image towers the surgery handles, None otherwise."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        plain = (visual.attn_pool is None and getattr(visual, "pool_type", "tok") == "tok"
                 and not getattr(visual, "final_ln_after_pool", False) and visual.proj is not None
                 and all(isinstance(b.attn, nn.MultiheadAttention) for b in visual.transformer.resblocks))
        return "vit" if plain else None
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    return None


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


MODEL_ENV = "CLIPSURGERY_MODEL"
DEFAULT_MODEL_CHOICE = "ViT-B-16:openai"


def load_model_from_env(default: str = DEFAULT_MODEL_CHOICE, device: str | torch.device | None = None) -> LoadedModel:
    """Load the model named by the ``CLIPSURGERY_MODEL`` environment variable (notebooks use this).

    The value is ``NAME:PRETRAINED`` (``"ViT-B-16:openai"``, the default), ``NAME`` alone
    (``"tiny-random-vit"``, used by the tests), ``NAME:none`` for random weights, or a path to a
    checkpoint file (``"ViT-B-16:/path/weights.pt"`` names the architecture too).
    """
    spec = os.environ.get(MODEL_ENV, "").strip() or default
    name, _, tag = spec.partition(":")
    if name in TINY_CONFIGS:
        return load_model(name, device=device)
    if not tag:
        return load_model(name, device=device)
    if tag.lower() == "none":
        return load_model(name, pretrained=None, device=device)
    if os.sep in tag or Path(tag).suffix in (".pt", ".pth", ".bin", ".safetensors"):
        return load_model(name, checkpoint=tag, device=device)
    return load_model(name, pretrained=tag, device=device)
