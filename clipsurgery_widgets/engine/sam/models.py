"""SAM architectures: the tiny test model, official checkpoints read into the right size, weight hashes."""
from __future__ import annotations

import hashlib
import itertools
import os
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, UnsupportedModelError

TINY_SAM_SEED = 0
# model type -> (image encoder width, number of encoder blocks); "tiny" is build_tiny_sam().
SAM_ARCHITECTURES: dict[str, tuple[int, int]] = {
    "vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32), "tiny": (64, 2),
}


def build_tiny_sam(seed: int = TINY_SAM_SEED) -> nn.Module:
    """A tiny randomly initialised SAM (256-pixel input, 16x16 embedding) for tests and demos.

    Its masks mean nothing. Built under a fixed seed with the global RNG left untouched.
    """
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=2, embed_dim=64, img_size=256, num_heads=2, patch_size=16, window_size=4,
                global_attn_indexes=[1], use_rel_pos=True, qkv_bias=True, out_chans=256,
                norm_layer=partial(nn.LayerNorm, eps=1e-6)),
            prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(16, 16),
                                         input_image_size=(256, 256), mask_in_chans=16),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
            pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
        )
    return sam.eval()


def load_sam_checkpoint(path: str | os.PathLike, model_type: str | None = None, *,
                        trust_checkpoint: bool = False) -> nn.Module:
    """Read an official SAM checkpoint into the matching architecture (CPU, eval mode).

    ``model_type`` None infers the size from the weights; a type that does not match the file is
    an error. ``trust_checkpoint`` reads with ``weights_only=False`` (only for files you trust).
    """
    from ..checkpoints import check_checkpoint_path, read_checkpoint

    path = Path(path).expanduser()
    if model_type is not None and model_type not in SAM_ARCHITECTURES:
        raise UnsupportedModelError(f"Unknown SAM model_type {model_type!r}: choose one of "
                                    f"{', '.join(SAM_ARCHITECTURES)} (or None to infer it from the file).")
    if path.is_dir():
        check_checkpoint_path(path)  # says it is a folder, not "not found"
    if not path.is_file():
        raise CheckpointError(f"SAM checkpoint not found: {path}. Check the path, or download the official weights "
                              f"with SamRefiner.from_pretrained({model_type or 'vit_b'!r}).")
    state, _ = read_checkpoint(path, trust_checkpoint)
    found = architecture_of(state)
    if found is None:
        raise CheckpointError(f"{path} does not look like a Segment Anything checkpoint ({describe_state(state)}). "
                              f"Pass an official SAM file such as sam_vit_b_01ec64.pth.")
    if model_type is None:
        model_type = found
    elif model_type != found:
        raise CheckpointError(f"{path} holds a {found} SAM checkpoint, but model_type={model_type!r} was given: "
                              f"pass model_type={found!r} (or leave it out to infer it).")
    with torch.random.fork_rng(devices=[]):  # random init before loading must not move the global RNG
        sam = build_architecture(model_type)
    from ..checkpoints import load_strict

    load_strict(sam, state, path, f"the {model_type} SAM architecture")
    return sam.eval()


def build_architecture(model_type: str) -> nn.Module:
    """An untrained SAM of ``model_type`` ("tiny" or a ``segment_anything`` registry name)."""
    if model_type == "tiny":
        return build_tiny_sam()
    from segment_anything import sam_model_registry

    return sam_model_registry[model_type](checkpoint=None)


def architecture_of(state: dict[str, torch.Tensor]) -> str | None:
    """The model type whose image encoder matches these weights, or None."""
    shape = _encoder_shape(state)
    if shape is None or "mask_decoder.iou_prediction_head.layers.0.weight" not in state:
        return None
    return next((name for name, arch in SAM_ARCHITECTURES.items() if arch == shape), None)


def describe_state(state: dict[str, torch.Tensor]) -> str:
    """A few words on what a state dict holds, for error messages."""
    shape = _encoder_shape(state)
    if shape is not None:
        return f"image encoder width {shape[0]} with {shape[1]} blocks, which matches no known SAM size"
    keys = list(itertools.islice(state, 3))
    return f"{len(state)} tensors, e.g. {', '.join(keys)}" if keys else "no tensors"


def module_fingerprint(module: nn.Module) -> str:
    """Hash of every parameter and buffer (names, shapes, bytes): identifies weights in cache keys."""
    h = hashlib.blake2b(digest_size=12)
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return f"sam/{h.hexdigest()}"


def _encoder_shape(state: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None or weight.ndim != 4:
        return None
    blocks = {key.split(".")[2] for key in state if key.startswith("image_encoder.blocks.")}
    return int(weight.shape[0]), len(blocks)
