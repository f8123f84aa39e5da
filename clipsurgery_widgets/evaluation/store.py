"""On-disk state of a run: one small .npz per finished item and the manifest OUT/run.json.

Each item file is written to a temporary name in the same folder and renamed into place, so an
interrupted run leaves only whole files; a rerun skips the items already on disk. The manifest
records what produced them (task settings, model, dataset path), and a run with other settings
refuses to reuse the folder rather than mix results.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from ..engine.errors import ClipSurgeryError
from .tasks.base import ItemStats

FORMAT_VERSION = 1
_ITEM_KEY = "__item__"


class ResumeMismatchError(ClipSurgeryError, ValueError):
    """OUT holds results of a run with other settings; they must not be mixed."""


class ItemStore:
    """Per-item stats under ``OUT/items/`` and the manifest ``OUT/run.json``."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out).expanduser()
        self.items_dir = self.out / "items"
        self.manifest_path = self.out / "run.json"

    # --- manifest ------------------------------------------------------------------------------

    def open(self, manifest: dict) -> None:
        """Create OUT, or check that its manifest matches ``manifest`` (ResumeMismatchError if not)."""
        manifest = json.loads(json.dumps(manifest))  # compare in JSON terms (tuples become lists)
        if self.manifest_path.is_file():
            old = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            differences = manifest_differences(old, manifest)
            if differences:
                raise ResumeMismatchError(
                    f"{self.out} holds results of a run with other settings ({'; '.join(differences[:3])}); "
                    f"use another --out folder, or delete {self.out} to start over.")
            manifest = {**old, "model": {**old.get("model", {}), **manifest.get("model", {})}}
        elif self.out.exists() and any(self.out.iterdir()) and not self.items_dir.is_dir():
            raise ResumeMismatchError(f"{self.out} is not empty and holds no evaluation run; choose an empty or "
                                      f"new --out folder.")
        self.items_dir.mkdir(parents=True, exist_ok=True)
        self.write_manifest(manifest)

    def write_manifest(self, manifest: dict) -> None:
        write_atomic(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))

    # --- items ---------------------------------------------------------------------------------

    def path(self, item_id: str) -> Path:
        return self.items_dir / f"{quote(item_id, safe='')}.npz"

    def done(self) -> set[str]:
        if not self.items_dir.is_dir():
            return set()
        return {unquote(p.name[: -len(".npz")]) for p in self.items_dir.glob("*.npz")}

    def write(self, item_id: str, stats: ItemStats) -> None:
        arrays = {_ITEM_KEY: np.array(item_id)}
        for group, named in stats.items():
            for name, value in named.items():
                if "/" in group or "/" in name:
                    raise ValueError(f"stat names may not contain '/': {group!r}, {name!r}")
                arrays[f"{group}/{name}"] = np.asarray(value)
        with tempfile.NamedTemporaryFile(dir=self.items_dir, prefix=".tmp-", suffix=".npz", delete=False) as handle:
            try:
                np.savez(handle, **arrays)
            except BaseException:
                handle.close()
                os.unlink(handle.name)
                raise
        os.replace(handle.name, self.path(item_id))

    def read(self, item_id: str) -> ItemStats:
        with np.load(self.path(item_id), allow_pickle=False) as data:
            stats: ItemStats = {}
            for key in data.files:
                if key == _ITEM_KEY:
                    continue
                group, _, name = key.partition("/")
                stats.setdefault(group, {})[name] = data[key]
        return stats


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` through a temporary file and a rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)


def manifest_differences(old: dict, new: dict) -> list[str]:
    """Human-readable differences that forbid a resume (task, settings, model)."""
    found = []
    if old.get("format") != new.get("format"):
        found.append(f"format {old.get('format')} -> {new.get('format')}")
    if old.get("task") != new.get("task"):
        found.append(f"task {old.get('task')} -> {new.get('task')}")
    found += _dict_differences(old.get("settings", {}), new.get("settings", {}), "")
    old_model, new_model = old.get("model", {}), new.get("model", {})
    if old_model.get("fingerprint") and new_model.get("fingerprint"):
        if old_model["fingerprint"] != new_model["fingerprint"]:
            found.append(f"model {old_model['fingerprint']} -> {new_model['fingerprint']}")
    else:
        for key in ("name", "pretrained", "checkpoint"):
            if old_model.get(key) != new_model.get(key):
                found.append(f"model {key} {old_model.get(key)} -> {new_model.get(key)}")
    return found


def _dict_differences(old: dict, new: dict, prefix: str) -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _dict_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            short = (lambda v: (repr(v)[:40] + "...") if len(repr(v)) > 43 else repr(v))
            found.append(f"{prefix}{key} {short(a)} -> {short(b)}")
    return found
