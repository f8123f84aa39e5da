"""Class names for segmentation: class files, synonyms, and the eight benchmark sets.

A class is a list of names (synonyms). Segmentation scores every name on its own and combines
the names of one class after the softmax (docs/algorithms.md#segmentation-inference), so this
module only parses and flattens; it computes nothing.
"""
from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path
from typing import Sequence, Union

from ..errors import TextInputError

# The benchmark sets whose class files ship with the package (data/classes/<name>.txt).
BENCHMARKS: tuple[str, ...] = (
    "voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff164k", "cityscapes", "ade20k",
)

ClassEntry = Union[str, Sequence[str]]
ClassNames = Union[str, Sequence[ClassEntry]]


def split_names(line: str) -> list[str]:
    """One class written as comma-separated names -> its names, spaces stripped.

    >>> split_names("person, person in shirt")
    ['person', 'person in shirt']
    """
    return [name.strip() for name in line.split(",")]


def read_class_file(path: str | os.PathLike) -> list[list[str]]:
    """Read a class file: one line per class (class 0 first), synonyms separated by commas.

    Trailing blank lines are ignored; a blank line between classes is an error (it would shift
    every later class index).

    Returns:
        C lists of names, one per class.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TextInputError(f"Class file not found: {path}. Check the path, or use one of the benchmark "
                             f"sets {', '.join(BENCHMARKS)}.")
    return _parse_lines(path.read_text(encoding="utf-8"), str(path))


def benchmark_classes(name: str) -> list[list[str]]:
    """The class names of a benchmark set (e.g. ``"voc21"``): C lists of names, class 0 first.

    Sets: voc21, voc20, context60, context59, coco_object, coco_stuff164k, cityscapes, ade20k.
    These are the class lists (with synonyms) that the SCLIP and NACLIP evaluations use.
    """
    if not isinstance(name, str) or name not in BENCHMARKS:
        close = difflib.get_close_matches(str(name), BENCHMARKS, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise TextInputError(f"Unknown benchmark class set {name!r}.{hint} Choose one of {', '.join(BENCHMARKS)}, "
                             f"or pass a list of class names.")
    text = resources.files("clipsurgery_widgets").joinpath("data", "classes", f"{name}.txt").read_text("utf-8")
    return _parse_lines(text, f"benchmark set {name!r}")


def parse_class_names(class_names: ClassNames) -> list[list[str]]:
    """Normalise the ``class_names`` argument of segmentation to C lists of names.

    Args:
        class_names: a benchmark set name (``"voc21"``, ...), or a sequence of C entries, each a
            list of names or one string of comma-separated names (``"person, person in shirt"``).
            Names are stripped of surrounding spaces.

    Raises:
        TextInputError: empty list, a class without names, an empty name, or a bare string that
            is not a benchmark set name.
    """
    if isinstance(class_names, str):
        if class_names in BENCHMARKS:
            return benchmark_classes(class_names)
        close = difflib.get_close_matches(class_names, BENCHMARKS, n=3, cutoff=0.5)
        hint = f" Did you mean the benchmark set {' or '.join(repr(c) for c in close)}?" if close else ""
        raise TextInputError(
            f"class_names is the single string {class_names!r}, which is not a benchmark set.{hint} Pass a list "
            f"with one entry per class, e.g. ['background', 'cat', 'dog'] (synonyms as 'person, man'), or one "
            f"of {', '.join(BENCHMARKS)}.")
    if class_names is None or not hasattr(class_names, "__len__") or len(class_names) == 0:
        raise TextInputError("No classes given: pass a list with one entry per class, e.g. "
                             "['background', 'cat', 'dog'], or a benchmark set name such as 'voc21'.")
    return [_entry_names(index, entry) for index, entry in enumerate(class_names)]


def flatten_classes(classes: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """C lists of names -> (the Q names in order, the class index of each name)."""
    names: list[str] = []
    name_class: list[int] = []
    for index, class_names in enumerate(classes):
        names.extend(class_names)
        name_class.extend([index] * len(class_names))
    return tuple(names), tuple(name_class)


# --- helpers -----------------------------------------------------------------------------------

def _entry_names(index: int, entry: ClassEntry) -> list[str]:
    if isinstance(entry, str):
        names = split_names(entry)
    elif isinstance(entry, (list, tuple)):
        bad = [name for name in entry if not isinstance(name, str)]
        if bad:
            raise TextInputError(f"Class {index} has a name that is not a string ({bad[0]!r}); names must be strings.")
        names = [name.strip() for name in entry]
    else:
        raise TextInputError(f"Class {index} is a {type(entry).__name__}; each class must be a string "
                             f"('cat' or 'person, man') or a list of name strings.")
    if not names or names == [""]:
        raise TextInputError(f"Class {index} has no names ({entry!r}); give every class at least one name.")
    if any(not name for name in names):
        raise TextInputError(f"Class {index} ({entry!r}) has an empty name; remove the extra comma or empty string.")
    return names


def _parse_lines(text: str, source: str) -> list[list[str]]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise TextInputError(f"{source} holds no classes; write one class per line.")
    classes = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise TextInputError(f"{source}, line {number} is blank; every line must name one class (class 0 first).")
        names = split_names(line)
        if any(not name for name in names):
            raise TextInputError(f"{source}, line {number} has an empty name between commas: {line!r}.")
        classes.append(names)
    return classes
