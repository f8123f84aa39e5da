"""Label lists and combined targets: one parsing rule for the CLI, the explainer and every widget.

- A string is a comma-separated list: "cat, dog ,tree" -> ["cat", "dog", "tree"]. Spaces around
  each label are stripped and empty pieces are dropped.
- A list (or tuple, or any ordered iterable) keeps its items as given (each must be a string;
  spaces around them are stripped), so the empty string "" can be asked for on purpose.
- A set has no order, and label order decides the order of maps and colours: its labels are
  sorted alphabetically, with a notice.
- A repeated label is kept once, at its first place, with a notice naming it.
- A combined target "a+b" names several parts explained together (see docs/algorithms.md#points-for-sam);
  ``parse_target`` splits it. ``\\+`` is a literal plus inside a part: "C\\+\\+" is the one label
  "C++", "C\\+\\+ + python" combines "C++" and "python". A label keeps its escapes as written (the
  explanation's labels are the strings given); only the text sent to the model is unescaped.
"""
from __future__ import annotations

import re
from typing import Sequence

from ..errors import TextInputError
from ..notices import quote, warn_user

ESCAPED_PLUS = "\\+"
_UNESCAPED_PLUS = re.compile(r"(?<!\\)\+")


def parse_labels(labels: str | Sequence[str], *, allow_empty: bool = False) -> list[str]:
    """Labels from "a, b, c" or ["a", "b", "c"], by the rule above.

    Raises TextInputError when nothing is left (unless ``allow_empty``) or an item is not a string.
    Repeats and sets are accepted with a notice (``UserWarning``, attributed to the caller).
    """
    if isinstance(labels, str):
        items = [part.strip() for part in labels.split(",")]
        items = [item for item in items if item]
    else:
        if labels is None or not hasattr(labels, "__iter__"):
            raise TextInputError(f"Labels must be a comma-separated string or a list of strings, "
                                 f"not {type(labels).__name__}.")
        items = list(labels)
        for item in items:
            if not isinstance(item, str):
                raise TextInputError(f"Labels must be strings; got {type(item).__name__} ({item!r}).")
        items = [item.strip() for item in items]
        if isinstance(labels, (set, frozenset)):
            items.sort()
            if len(items) > 1:
                warn_user("Labels given as a set have no order; they were sorted alphabetically. Pass a list "
                          "to choose the order of the maps.")
    unique = list(dict.fromkeys(items))
    if len(unique) < len(items):
        repeats = [label for label in unique if items.count(label) > 1]
        shown = ", ".join(quote(label) for label in repeats[:5]) + (" and more" if len(repeats) > 5 else "")
        warn_user(f"Repeated label(s) {shown} kept once (at the first place); each label is explained once.")
    if not unique and not allow_empty:
        raise TextInputError("No labels given: pass at least one label, e.g. 'cat, dog' or ['cat', 'dog'].")
    return unique


def parse_target(target: str) -> list[str]:
    """Split a combined target "a+b" into its parts ["a", "b"] (spaces around parts stripped).

    ``\\+`` is a literal plus: "C\\+\\+" -> ["C++"], "a\\+b + c" -> ["a+b", "c"].
    """
    if not isinstance(target, str):
        raise TextInputError(f"A target must be a string such as 'person+bench', not {type(target).__name__}.")
    pieces = _UNESCAPED_PLUS.split(target)
    parts = [piece.strip().replace(ESCAPED_PLUS, "+") for piece in pieces]
    if len(parts) > 1 and not all(piece.strip() for piece in pieces):
        raise TextInputError(f"Combined target {quote(target)} has an empty part; write parts joined by '+', "
                             f"e.g. 'person+bench', and a literal plus as '\\+', e.g. 'C\\+\\+'.")
    return parts
