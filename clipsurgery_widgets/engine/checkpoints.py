"""Reading checkpoint files safely: OpenAI JIT archives (weights read without running the archive's
code), state dicts (plain, open_clip training, DDP) and .safetensors, with
torch.load(weights_only=True) unless the caller trusts the file."""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .jit_archive import ArchiveNeedsTrust, is_torchscript, read_torchscript_weights


def read_checkpoint(path: str | os.PathLike, trust: bool = False) -> tuple[dict[str, torch.Tensor], bool]:
    """Read a weights file into a flat state dict. Returns (state_dict, was_openai_jit_archive).

    TorchScript (OpenAI JIT) archives are read without running their code; one whose objects
    need their own ``__setstate__`` code is refused unless ``trust`` (then ``torch.jit.load``).
    """
    path = check_checkpoint_path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), False
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable .safetensors file: {first_line(exc)}.") from None
    try:
        if zipfile.is_zipfile(path) and is_torchscript(path):
            return _read_torchscript(path, trust), True
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        detail = str(exc)
        if "GLOBAL" not in detail and not _starts_like_pickle(path):
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (the file may be damaged or of "
                                  f"another format).") from None
        found = detail[detail.find("GLOBAL"):].split(" was not")[0].split(" whose")[0] if "GLOBAL" in detail \
            else "a raw pickle the safe loader cannot read"
        raise CheckpointError(
            f"Refused to load {path}: it holds pickled Python objects beyond plain tensors ({found}). If you "
            f"trust this file, pass trust_checkpoint=True (command line: --trust-checkpoint); unpickling an "
            f"untrusted file can run arbitrary code.") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: the file is damaged "
                              f"({first_line(exc)}). Download or copy it again.") from None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {first_line(exc)}.") from None
    return _as_state_dict(obj, path), False


def check_checkpoint_path(path: str | os.PathLike) -> Path:
    """The path, if it names an existing file; CheckpointError saying what it is otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file: pass the weights file inside it "
                              f"(e.g. {path / 'model.pt'}).")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: {path}. Check the path.")
    return path


def _read_torchscript(path: Path, trust: bool) -> dict[str, torch.Tensor]:
    try:
        return read_torchscript_weights(path)
    except ArchiveNeedsTrust as why:
        if not trust:
            raise CheckpointError(
                f"Refused to load {path}: this TorchScript archive can only be restored by running its own code "
                f"({why}). If you trust this file, pass trust_checkpoint=True (command line: --trust-checkpoint); "
                f"running an untrusted archive's code can do anything it says.") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch deprecates jit, but OpenAI ships it
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    except Exception as exc:
        raise CheckpointError(f"{path} looks like a TorchScript (OpenAI JIT) archive but could not be "
                              f"read: {first_line(exc)}.") from None


def _starts_like_pickle(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(1) == b"\x80"  # the PROTO opcode every pickle since protocol 2 opens with


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors.")
    prefix = "module."
    if obj and all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)


def _load_state_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path | str) -> None:
    # OpenAI archives carry bookkeeping entries and non-persistent buffers (e.g. attn_mask) that a
    # state dict does not; drop those, and nothing else, before the strict load.
    transient = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    transient |= {"input_resolution", "context_length", "vocab_size"}
    state = {k: v for k, v in state.items() if k not in transient}
    load_strict(model, state, path, "the model architecture", " Check the model name.")


def load_strict(model: nn.Module, state: dict, path: Any, what: str, hint: str = "") -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch becomes a CheckpointError naming ``what``."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise CheckpointError(f"{path} does not match {what}: {' '.join(lines[:3])[:400]}.{hint}") from None


def _load_weights_into(model: nn.Module, checkpoint: str | os.PathLike, trust: bool) -> None:
    state, _ = read_checkpoint(checkpoint, trust)
    _load_state_into(model, state, checkpoint)


# --- the record --------------------------------------------------------------------------------

def _checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """Content hash of a weights file (stable across copies and renames)."""
    h = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            h.update(chunk)
    return f"file/{h.hexdigest()}"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
