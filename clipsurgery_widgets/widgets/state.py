"""Public widget state, declared once as traitlets with one validation rule for every widget.

Each widget declares its settings as class attributes made with these factories, e.g.::

    opacity = Number(0.6, low=0.0, high=1.0, help="Weight of the heat map over the image.")

The rule, the same everywhere: a widget accepts what the engine accepts; an invalid value raises
:class:`InvalidStateError` (a ``ValueError``, never a raw ``TraitError``) naming the setting, the
value and what is allowed, and leaves the widget as it was; nothing is clamped or changed silently.
Controls are tied to their trait with :func:`link_control`, so a slider and the Python attribute
always agree.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import traitlets

from ..engine.errors import ClipSurgeryError, TextInputError
from ..engine.images import check_input_size
from ..engine.text.labels import parse_labels, parse_target

__all__ = ["InvalidStateError", "Number", "Integer", "Choice", "Flag", "Text", "OptionalNumber", "InputSize", "LabelList", "ColourMap",
           "OneOf", "link_with", "link_control", "link_choice", "refuse", "accept"]


class InvalidStateError(ClipSurgeryError, ValueError):
    """A widget setting was given a value it cannot take; the widget is unchanged."""


def invalid(obj: Any, name: str, value: Any, allowed: str) -> InvalidStateError:
    """The error for ``obj.name = value``: says what was given and what is allowed."""
    return InvalidStateError(f"{type(obj).__name__}.{name} = {value!r} is not valid: use {allowed}.")


def _real(obj: Any, name: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise invalid(obj, name, value, allowed)
    return float(value)


def _range_text(low: float | None, high: float | None, kind: str) -> str:
    if low is not None and high is not None:
        return f"{kind} from {low:g} to {high:g}"
    if low is not None:
        return f"{kind} >= {low:g}"
    return f"{kind} <= {high:g}" if high is not None else kind


def _bounded(trait: Any, obj: Any, value: Any, kind: str, whole: bool) -> float:
    """``value`` as a float inside the trait's [low, high] (a whole number when ``whole``), or InvalidStateError."""
    allowed = _range_text(trait.low, trait.high, kind)
    number = _real(obj, trait.name, value, allowed)
    if (whole and number != int(number)) or (trait.low is not None and number < trait.low) or \
            (trait.high is not None and number > trait.high):
        raise invalid(obj, trait.name, value, allowed)
    return number


class Number(traitlets.Float):
    """A finite float within [low, high] (either bound may be None)."""

    def __init__(self, default: float, low: float | None = None, high: float | None = None, **kwargs: Any):
        self.low, self.high = low, high
        super().__init__(default, **kwargs)

    def validate(self, obj: Any, value: Any) -> float:
        return _bounded(self, obj, value, "a number", whole=False)


class OptionalNumber(Number):
    """Like :class:`Number`, but None is allowed too (meaning "off")."""

    def __init__(self, default: float | None, low: float | None = None, high: float | None = None, **kwargs: Any):
        super().__init__(default, low, high, allow_none=True, **kwargs)

    def validate(self, obj: Any, value: Any) -> float | None:
        return None if value is None else super().validate(obj, value)


class Integer(traitlets.Int):
    """A whole number within [low, high] (either bound may be None); 3.0 is accepted as 3."""

    def __init__(self, default: int, low: int | None = None, high: int | None = None, **kwargs: Any):
        self.low, self.high = low, high
        super().__init__(default, **kwargs)

    def validate(self, obj: Any, value: Any) -> int:
        return int(_bounded(self, obj, value, "a whole number", whole=True))


class Choice(traitlets.TraitType):
    """One of a fixed set of values (strings, numbers or None)."""

    def __init__(self, values: Sequence[Any], default: Any = traitlets.Undefined, **kwargs: Any):
        self.values = tuple(values)
        super().__init__(self.values[0] if default is traitlets.Undefined else default, **kwargs)

    def validate(self, obj: Any, value: Any) -> Any:
        if not any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values):
            raise invalid(obj, self.name, value, "one of " + ", ".join(repr(v) for v in self.values))
        return value


class Flag(traitlets.Bool):
    """True or False (not 0/1, not strings)."""

    def validate(self, obj: Any, value: Any) -> bool:
        if not isinstance(value, bool):
            raise invalid(obj, self.name, value, "True or False")
        return value


class Text(traitlets.Unicode):
    """A string (None is read as the empty string)."""

    def validate(self, obj: Any, value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise invalid(obj, self.name, value, "a string")
        return value


class ColourMap(traitlets.Unicode):
    """The name of a matplotlib colour map (e.g. "jet", "viridis")."""

    def validate(self, obj: Any, value: Any) -> str:
        from matplotlib import colormaps

        if not isinstance(value, str) or value not in colormaps:
            raise invalid(obj, self.name, value, "a matplotlib colour map name such as 'jet' or 'viridis'")
        return value


class InputSize(traitlets.TraitType):
    """A model input size as the engine takes it: an int S or (H, W), multiples of the owner's patch size.

    The owner has ``explainer.model.patch_size``; an int stays an int, a pair becomes a tuple.
    """

    def __init__(self, default: int | tuple[int, int] = 224, **kwargs: Any):
        super().__init__(default, **kwargs)

    def validate(self, obj: Any, value: Any) -> int | tuple[int, int]:
        patch = obj.explainer.model.patch_size
        try:
            height, width = check_input_size(value, patch)
        except (ValueError, TypeError, OverflowError) as exc:
            raise invalid(obj, self.name, value, f"an int S or a pair (H, W) of multiples of {patch} ({exc})") from None
        return int(value) if isinstance(value, numbers.Integral) else (height, width)


class LabelList(traitlets.TraitType):
    """Labels by the package's one rule (engine/text/labels.py): a list, or one comma-separated string;
    read back as a list. With ``targets=True`` each label may be an "a+b" combination, checked here."""

    def __init__(self, default: Sequence[str] = (), targets: bool = False, **kwargs: Any):
        self.targets = targets
        super().__init__(list(default), **kwargs)

    def validate(self, obj: Any, value: Any) -> list[str]:
        try:
            labels = parse_labels(value)
            for label in labels if self.targets else ():
                parse_target(label)
        except TextInputError as exc:
            raise InvalidStateError(f"{type(obj).__name__}.{self.name} = {value!r} is not valid: {exc}") from None
        return labels


class OneOf(traitlets.Unicode):
    """A string that must be one of the owner's current ``source`` list (e.g. the label among the labels)."""

    def __init__(self, source: str, default: str = "", **kwargs: Any):
        self.source = source
        super().__init__(default, **kwargs)

    def validate(self, obj: Any, value: Any) -> str:
        options = list(getattr(obj, self.source))
        if not isinstance(value, str) or value not in options:
            raise invalid(obj, self.name, value, f"one of the {self.source} ({', '.join(options)}), or add it to "
                                                 f"the {self.source} first")
        return value


def refuse(owner: Any, exc: BaseException, doing: str) -> None:
    """A control edit was refused: the widget shows why and pauses the work of older input
    (``ExplorerWidget._refuse_input``; see widgets/base.py). Every link reports refusals here."""
    report = getattr(owner, "_refuse_input", None) or getattr(owner, "_show_error", None)
    if report is not None:
        report(exc, doing)


def accept(owner: Any) -> None:
    """A control edit was accepted: the widget drops a refused input's error and resumes paused work."""
    report = getattr(owner, "_accept_input", None)
    if report is not None:
        report()


def propose(owner: Any, name: str, value: Any, doing: str, undo: Callable[[], Any] | None = None) -> bool:
    """Set ``owner.<name> = value`` from a control edit. On a refusal ``undo()`` puts the control back
    first (its own change events may fire), then the refusal is reported (:func:`refuse`) and False
    returned; an acceptance is reported too (:func:`accept`)."""
    try:
        setattr(owner, name, value)
    except InvalidStateError as exc:
        if undo is not None:
            undo()
        refuse(owner, exc, doing)
        return False
    accept(owner)
    return True


def link_with(owner: traitlets.HasTraits, name: str, control: widgets.Widget, show: Callable[[Any], None],
              read: Callable[[Any], Any] = lambda value: value, attribute: str = "value") -> None:
    """Keep ``owner.<name>`` and a control in step, both ways, under one guard.

    ``show(value)`` puts a trait value on the control; ``read(control_value)`` turns an edit into a
    trait value. A control edit the trait refuses is put back (``show`` of the current value) and
    reported to the widget (:func:`refuse`); an accepted one is reported too (:func:`accept`). A
    Python assignment that fails raises.
    """
    busy = [False]

    def guarded(handler: Callable[[Any], Any]) -> Callable[[dict], None]:
        def run(change: dict) -> None:
            if busy[0]:
                return
            busy[0] = True
            try:
                handler(change["new"])
            finally:
                busy[0] = False
        return run

    def edit(value: Any) -> None:
        propose(owner, name, read(value), f"setting {name}", undo=lambda: show(getattr(owner, name)))

    guarded(show)({"new": getattr(owner, name)})
    owner.observe(guarded(show), names=name)
    control.observe(guarded(edit), names=attribute)


def link_control(owner: traitlets.HasTraits, name: str, control: widgets.Widget, attribute: str = "value") -> None:
    """Keep ``owner.<name>`` and ``control.<attribute>`` equal in both directions (see :func:`link_with`)."""
    link_with(owner, name, control, lambda value: setattr(control, attribute, value), attribute=attribute)


def link_choice(owner: traitlets.HasTraits, name: str, control: widgets.Dropdown, label: Callable[[Any], str],
                encode: Callable[[Any], Any] = lambda value: value,
                decode: Callable[[Any], Any] = lambda value: value) -> None:
    """:func:`link_control` for a dropdown whose options grow to hold any valid value of the trait.

    A value set from Python that the dropdown does not offer yet is added as a new option (shown as
    ``label(value)``), never replaced by another. ``encode``/``decode`` map trait values to option
    values and back (e.g. None <-> -1: ipywidgets reads None as "no selection"). One guard covers
    both directions, because a dropdown jumps to its first option whenever its options change.
    """
    def show(value: Any) -> None:
        option = encode(value)
        if option not in [v for _, v in control.options]:
            control.options = list(control.options) + [(label(value), option)]
        control.value = option

    link_with(owner, name, control, show, read=decode)
