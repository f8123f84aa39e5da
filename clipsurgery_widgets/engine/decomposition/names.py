"""Display names for the images of a set, distinct enough to tell them apart in a menu.

A file is named by its file name; when two files share it ("red/circle.png", "blue/circle.png"),
as many parent folders are added as it takes to tell them apart. A PIL image opened from a file
is named like that file. Anything else (an array, bytes) is "image <n>", counted from 1. Names
given by the caller win. Names still equal after that get their position: "circle.png (3)".
"""
from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any, Mapping, Sequence

#: longer names keep their end (the file name) behind an ellipsis.
MAX_NAME = 40


def image_names(images: Sequence[Any], given: Mapping[int, str] | None = None) -> list[str]:
    """One short, distinct display name per image of ``images`` (see the module's docstring).

    given: {index: name} for images the caller has named (e.g. a sample's name, an upload's file name).
    """
    given = dict(given or {})
    paths = {i: PurePath(_path_of(image)) for i, image in enumerate(images)
             if i not in given and _path_of(image) is not None}
    names = {i: str(name) for i, name in given.items() if 0 <= i < len(images)}
    names.update(_shortest_distinct(paths))
    shown = [_shorten(names.get(i, f"image {i + 1}")) for i in range(len(images))]
    counts: dict[str, int] = {}
    for name in shown:
        counts[name] = counts.get(name, 0) + 1
    return [f"{name} ({i + 1})" if counts[name] > 1 else name for i, name in enumerate(shown)]


def _path_of(image: Any) -> str | None:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    filename = getattr(image, "filename", None)  # a PIL image opened from a file
    return filename if isinstance(filename, str) and filename else None


def _shortest_distinct(paths: dict[int, PurePath]) -> dict[int, str]:
    """Each path's shortest ending (file name, then parent/file name, ...) that no other path shares."""
    depth = {p: 1 for p in set(paths.values())}  # the same file given twice is told apart by position later
    while True:
        endings = {p: "/".join(p.parts[-d:]) for p, d in depth.items()}
        taken = list(endings.values())
        clashes = [p for p, e in endings.items() if taken.count(e) > 1 and depth[p] < len(p.parts)]
        if not clashes:
            return {i: endings[p] for i, p in paths.items()}
        for p in clashes:
            depth[p] += 1


def _shorten(name: str) -> str:
    return name if len(name) <= MAX_NAME else "…" + name[-(MAX_NAME - 1):]
