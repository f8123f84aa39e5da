"""Label lists and combined targets: one parsing rule for the CLI, the explainer and every widget.

- A string is a comma-separated list: "cat, dog ,tree" -> ["cat", "dog", "tree"]. Spaces around
  each label are stripped, empty pieces are dropped, a repeated label is kept once (first place).
- A list keeps its items as given (each must be a string; spaces around them are stripped), so
  the empty string "" can be asked for on purpose; repeats are dropped the same way.
- A combined target "a+b" names several parts explained together (see docs/algorithms.md#points-for-sam);
  ``parse_target`` splits it.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import TextInputError


def parse_labels(labels: str | Sequence[str], *, allow_empty: bool = False) -> list[str]:
    """Labels from "a, b, c" or ["a", "b", "c"], by the rule above.

    Raises TextInputError when nothing is left (unless ``allow_empty``) or an item is not a string.
    """
    if isinstance(labels, str):
        items = [part.strip() for part in labels.split(",")]
        items = [item for item in items if item]
    else:
        try:
            items = list(labels)
        except TypeError:
            raise TextInputError(f"Labels must be a comma-separated string or a list of strings, "
                                 f"not {type(labels).__name__}.") from None
        for item in items:
            if not isinstance(item, str):
                raise TextInputError(f"Labels must be strings; got {type(item).__name__} ({item!r}).")
        items = [item.strip() for item in items]
    unique = list(dict.fromkeys(items))
    if not unique and not allow_empty:
        raise TextInputError("No labels given: pass at least one label, e.g. 'cat, dog' or ['cat', 'dog'].")
    return unique


def parse_target(target: str) -> list[str]:
    """Split a combined target "a+b" into its parts ["a", "b"] (spaces around parts stripped)."""
    if not isinstance(target, str):
        raise TextInputError(f"A target must be a string such as 'person+bench', not {type(target).__name__}.")
    parts = [part.strip() for part in target.split("+")]
    if "+" in target and not all(parts):
        raise TextInputError(f"Combined target {target!r} has an empty part; write parts joined by '+', "
                             f"e.g. 'person+bench'.")
    return parts
