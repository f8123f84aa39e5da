"""A widget's output in a notebook: the live view at once, its static PNG when the cell's work is done.

The live view goes out the moment the widget is displayed, so its status line shows the progress of
the first result. The PNG copy (for viewers without a kernel: nbconvert HTML, GitHub, an untrusted
notebook) needs that result, so it is drawn later: IPython's ``post_run_cell`` event runs in the
kernel after the cell's code and before the kernel reports the cell finished, so the PNG replaces the
output (``update_display``) in time for nbclient/nbconvert to keep it, without holding up the view.

The output's text (``text/plain``) is what a front end without the live model falls back to; it
names the one action that brings the view back.
"""
from __future__ import annotations

import base64
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: An output's text where the live view cannot be shown; ``{name}`` is the widget's class.
KERNEL_NOTE = "{name}: live view needs its kernel - run this cell again."

# (display id, PNG maker) of outputs shown since the last cell finished.
_waiting: list[tuple[str, Callable[[], dict | None]]] = []


def kernel_note(widget: Any) -> str:
    """The text a front end shows instead of the live view: the widget's name and how to get it back."""
    return KERNEL_NOTE.format(name=type(widget).__name__)


def live_bundle(widget: Any, view_bundle: dict | None) -> dict:
    """The widget's live output (widget view + the kernel note as text), without a static copy."""
    bundle = dict(view_bundle or {})
    bundle["text/plain"] = kernel_note(widget)
    return bundle


def png_entry(png: bytes | None, metadata: dict | None = None) -> tuple[dict, dict]:
    """(data, metadata) entries that add ``png`` to an output (empty when there is no PNG)."""
    if not png:
        return {}, {}
    return {"image/png": base64.b64encode(png).decode("ascii")}, ({"image/png": metadata} if metadata else {})


def show(widget: Any, view_bundle: dict | None, static: Callable[[], tuple[bytes | None, dict | None]]) -> None:
    """Display ``widget`` now; add its static PNG when the running cell has finished its work.

    view_bundle: the widget's own mimebundle (the widget-view entry).
    static: returns (PNG bytes or None, the PNG's display metadata or None); it may wait for the
    widget's pending work, which is why it runs after the cell rather than now.
    Outside IPython (no shell to run it later) the PNG is drawn at once.
    """
    from IPython import get_ipython
    from IPython.display import display

    bundle = live_bundle(widget, view_bundle)
    shell = get_ipython()
    if shell is None or getattr(shell, "events", None) is None:
        data, metadata = png_entry(*static())
        display({**bundle, **data}, metadata=metadata, raw=True)
        return
    handle = display(bundle, raw=True, display_id=True)

    def with_png() -> dict | None:
        data, metadata = png_entry(*static())
        return None if not data else {"data": {**bundle, **data}, "metadata": metadata}

    _waiting.append((handle.display_id, with_png))
    if add_static_copies not in shell.events.callbacks.get("post_run_cell", []):
        shell.events.register("post_run_cell", add_static_copies)


def add_static_copies(result: Any = None) -> None:
    """post_run_cell: give every output shown by the finished cell its static PNG (waits for its work)."""
    from IPython.display import update_display

    pending = list(_waiting)
    _waiting.clear()
    for display_id, with_png in pending:
        try:
            output = with_png()
        except Exception:  # noqa: BLE001 - no static copy is better than a broken cell
            log.debug("no static copy for display %s", display_id, exc_info=True)
            continue
        if output is not None:
            update_display(output["data"], metadata=output["metadata"], raw=True, display_id=display_id)


class ShownAtOnce:
    """Mixin (before the ipywidgets box in the bases) for widgets shown at once, PNG added later.

    The class provides ``_static_copy() -> (png bytes or None, display metadata or None)``.
    """

    def _static_copy(self) -> tuple[bytes | None, dict | None]:
        raise NotImplementedError

    def _ipython_display_(self, **kwargs: Any) -> None:
        """Show the live view at once (its status line says what is being computed); the static PNG
        for viewers without a kernel is added when the cell's work is done."""
        show(self, super()._repr_mimebundle_(**kwargs), self._static_copy)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # For displays outside IPython's own (which uses _ipython_display_): everything in one go.
        bundle = live_bundle(self, super()._repr_mimebundle_(**kwargs))
        data, metadata = png_entry(*self._static_copy())
        bundle.update(data)
        return (bundle, metadata) if metadata else bundle
