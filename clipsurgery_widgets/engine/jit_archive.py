"""Reading the weights of a TorchScript archive (OpenAI's JIT ``.pt`` files) without running it.

``torch.jit.load`` compiles the archive's code and runs it while loading (a scripted class's
``__setstate__``, for one). Here the archive's ``data.pkl`` is unpickled by a reader that knows
only what weights need (tensors from the archive's own storages, ordered dicts, and stand-ins for
the ``__torch__`` module classes, which never run anything), and the state dict is collected from
the module tree's tensor attributes. Archives whose objects restore themselves with their own
``__setstate__`` cannot be read that way; they are treated like pickles: refused unless trusted.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


# torch.jit._pickle's helpers only tag a container's type; each returns its first argument.
_TYPE_TAGS = {name: (lambda value, *rest: value) for name in
              ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag")}


class ArchiveNeedsTrust(Exception):
    """The archive's objects restore themselves with their own code."""


class _ScriptObject:
    """Stands in for one ``__torch__`` object: keeps the state the archive stores for it."""

    qualified_name = "?"

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD; never the archive's code
        self.state = state


def is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def read_torchscript_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archive's module tree, by dotted name (CPU tensors).

    Raises ArchiveNeedsTrust when the archive holds objects with a custom ``__setstate__``, and
    CheckpointError when it is damaged (a storage shorter than its tensors, unknown contents).
    """
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        data_pkl = next((n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")), None)
        if data_pkl is None:
            raise CheckpointError(f"{path} looks like a TorchScript archive but has no data.pkl.")
        prefix = data_pkl[: -len("data.pkl")]
        if any(n.startswith(prefix + "code/") and n.endswith(".py") and b"def __setstate__(" in zf.read(n)
               for n in names):
            raise ArchiveNeedsTrust("its classes restore themselves with their own __setstate__ code")
        byteorder = zf.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        if byteorder != "little":
            raise CheckpointError(f"{path} was written on a {byteorder}-endian machine; load it there and save a "
                                  f"state dict with torch.save(model.state_dict(), ...).")
        root = _WeightsUnpickler(io.BytesIO(zf.read(data_pkl)), zf, prefix, path).load()
    state: dict[str, torch.Tensor] = {}
    _collect(root, "", state, path, seen=set())
    if not state:
        raise CheckpointError(f"{path} is a TorchScript archive without weights.")
    return state


def _collect(obj: Any, prefix: str, out: dict[str, torch.Tensor], path: Path, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        raise ArchiveNeedsTrust(f"object {obj.qualified_name} stores its state as {type(state).__name__}, "
                                f"which only its own code can restore")
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{name}.", out, path, seen)


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, stream: io.BytesIO, zf: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(stream)
        self._zf, self._prefix, self._path = zf, prefix, path
        self._classes: dict[str, type] = {}
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self._classes:
                self._classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self._classes[qualified]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad, hooks, *rest: data
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch.jit._pickle" and name in _TYPE_TAGS:
            return _TYPE_TAGS[name]  # typed containers: the value itself
        raise ArchiveNeedsTrust(f"it refers to {module}.{name}, which plain weights do not need")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise CheckpointError(f"{self._path} refers to storage {pid!r}, which is not a tensor storage.")
        _, dtype, key, _location, numel = pid
        if key not in self._storages:
            member = f"{self._prefix}data/{key}"
            try:
                info = self._zf.getinfo(member)
            except KeyError:
                raise CheckpointError(f"{self._path} is damaged: storage {key} is missing.") from None
            itemsize = torch.empty((), dtype=dtype).element_size()
            if not isinstance(numel, int) or numel < 0 or info.file_size != numel * itemsize:
                raise CheckpointError(f"{self._path} is damaged: storage {key} holds {info.file_size} bytes, not "
                                      f"the {numel} values of {itemsize} bytes it declares.")
            raw = bytearray(self._zf.read(member))
            self._storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self._storages[key]

    def _rebuild_tensor(self, storage: torch.Tensor, offset: int, size: tuple, stride: tuple,
                        requires_grad: bool = False, hooks: Any = None, *rest: Any) -> torch.Tensor:
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
            raise CheckpointError(f"{self._path} is damaged: a tensor has an invalid layout.")
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
        if last >= storage.numel():
            raise CheckpointError(f"{self._path} is damaged: a tensor reaches past the end of its storage.")
        return torch.as_strided(storage, size, stride, offset).clone()
