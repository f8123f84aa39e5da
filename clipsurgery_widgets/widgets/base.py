"""What every widget shares: status line, error area, background work, static figure and PNG.

A widget subclasses :class:`ExplorerWidget` (an ``ipywidgets.VBox``), builds its controls and
figures, and implements :meth:`ExplorerWidget._render_figure`. Slow work goes through
:meth:`ExplorerWidget.submit` as a named job (see :mod:`.jobs`), which runs it in a background
thread, shows progress in the status line, discards results of requests that a newer input has
replaced, and reports failures in the error area so the widget keeps working. Public settings are
traits declared once (see :mod:`.state`).

The rule for refused input, the same in every widget: when the widget refuses an input (a control
edit its trait rejects, an image it cannot read), :meth:`ExplorerWidget._refuse_input` shows the
error and makes every unfinished job of :attr:`ExplorerWidget.input_jobs` stale, so that no result
computed from older input lands after it and clears the error. Those requests are paused, not
forgotten: the next accepted control edit (:meth:`ExplorerWidget._accept_input`, called by the
links of :mod:`.state`) clears the error and makes them again, unless a newer request under the
same name replaced them already. Jobs that do not follow the settings (a SAM image embedding, a
pass over an image set) are left out of ``input_jobs``: they keep running, and their results no
longer clear the error of a refused input.
"""
from __future__ import annotations

import html
import logging
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

import ipywidgets as widgets

from ..engine.errors import ClipSurgeryError
from ..engine.precision import using_precision
from ..figures import figure_bytes, save_figure, static_png_metadata
from ..figures.layout import Layout, apply_layout
from .static_view import ShownAtOnce
from .image_input import ImageInput
from .jobs import Job, JobBoard, LatestOnlyRunner  # noqa: F401  (LatestOnlyRunner: re-exported)
from .precision_setting import PrecisionSetting, precision_toggle  # noqa: F401  (precision_toggle: re-exported)

Result = TypeVar("Result")
log = logging.getLogger(__name__)

_SPINNER = ('<style>@keyframes csw-spin{to{transform:rotate(360deg)}}</style>'
            '<span class="csw-spinner" style="display:inline-block;width:0.8em;height:0.8em;'
            'margin-right:0.4em;border:2px solid #999;border-top-color:transparent;border-radius:50%;'
            'animation:csw-spin 0.8s linear infinite;vertical-align:-0.1em"></span>')


class ExplorerWidget(ShownAtOnce, ImageInput, PrecisionSetting, widgets.VBox):
    """Base class of the clipsurgery widgets: an ipywidgets VBox with shared plumbing.

    Python API shared by every widget:
        status: the status line as plain text.     error: the error message shown, or None.
        busy: True while background work runs.     wait(timeout): block until it is done.
        figure(): a static matplotlib Figure of the current view.
        save(path, dpi, format): write that figure (PNG/SVG/PDF/JPEG).
    Displaying the widget shows the live view at once, its status line reporting the progress of
    the first result. When the cell's code is done, a PNG of the view joins the output for viewers
    without a live kernel (nbconvert HTML, GitHub); to draw it the kernel waits for pending work
    (at most ``display_timeout`` seconds), so an executed notebook keeps the finished maps.
    """

    #: dpi of the PNG placed next to the live view in the output: 2x the 72 dpi it is shown at
    #: (figures.output.static_png_metadata gives that display size), so it stays sharp on 2x screens.
    static_dpi: int = 144
    #: at most this many seconds are spent (after the cell) waiting for pending work before drawing that PNG.
    display_timeout: float = float(os.environ.get("CLIPSURGERY_DISPLAY_TIMEOUT", "300"))
    #: names of the jobs computed from the settings, made stale by a refused input (None: every job).
    input_jobs: tuple[str, ...] | None = None
    #: names of the jobs that the control ``controls["stop"]`` (if the widget has one) stops (None: every
    #: job); that control is visible only while one of them is unfinished.
    stoppable_jobs: tuple[str, ...] | None = None

    def __init__(self, **kwargs: Any):
        self._lock = threading.RLock()  # guards every update of the view's state and figures
        self._jobs = JobBoard(type(self).__name__)
        self._status_text = ""
        self._error_text: str | None = None
        self._status_html = widgets.HTML(layout=widgets.Layout(min_height="1.5em"))
        self._error_html = widgets.HTML(layout=widgets.Layout(display="none"))
        self._status_html.add_class("csw-status")
        self._error_html.add_class("csw-error")
        # Requests not finished yet, by job name: (generation, how to make the request again).
        self._unfinished: dict[str, tuple[int, Callable[[], int]]] = {}
        self._paused: dict[str, Callable[[], int]] = {}  # made stale by a refused input, made again later
        self._requests = 0  # requests submitted so far
        self._refused_at: int | None = None  # ``_requests`` when the error of a refused input was shown
        super().__init__(**kwargs)
        self.add_class("clipsurgery-widget")

    # --- status line and error area ----------------------------------------------------------

    @property
    def status(self) -> str:
        """The status line as plain text."""
        return self._status_text

    @property
    def error(self) -> str | None:
        """The error message currently shown (plain text, traceback excluded), or None."""
        return self._error_text

    @property
    def busy(self) -> bool:
        """True while any background job is queued or running."""
        return self._jobs.busy

    def _set_status(self, text: str, busy: bool = False) -> None:
        self._status_text = text
        body = html.escape(text)
        self._status_html.value = (f'<div style="color:#555;font-size:0.9em">'
                                   f'{_SPINNER if busy else ""}{body}</div>')

    def _show_error(self, exc: BaseException, doing: str) -> None:
        """Show ``exc`` in plain words; the traceback is folded away under "Details"."""
        if isinstance(exc, ClipSurgeryError):
            message = str(exc)
        else:
            message = f"Something went wrong while {doing}: {type(exc).__name__}: {exc}"
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self._refused_at = None  # this error is not (or not only) a refused input's
        self._error_text = message
        self._error_html.value = (
            '<div style="border-left:4px solid #d9534f;background:#fdf2f2;padding:6px 10px;margin:4px 0">'
            f'<div style="color:#a94442"><b>Error:</b> {html.escape(message)}</div>'
            '<details style="margin-top:4px"><summary style="cursor:pointer;color:#777">Details</summary>'
            f'<pre style="font-size:0.8em;white-space:pre-wrap;max-height:20em;overflow:auto">'
            f'{html.escape(details)}</pre></details></div>')
        self._error_html.layout.display = None

    def _clear_error(self) -> None:
        self._refused_at = None
        if self._error_text is not None:
            self._error_text = None
            self._error_html.value = ""
            self._error_html.layout.display = "none"

    def _refuse_input(self, exc: BaseException, doing: str) -> None:
        """An input was refused: show why, and pause the unfinished jobs of :attr:`input_jobs`.

        Their results would be older than the refused input and would clear its error, so they are
        made stale (dropped when they arrive) and made again by the next accepted input (see the
        module's docstring).
        """
        with self._lock:
            names = [n for n in self._unfinished if self._follows_input(n)]
            for name in names:
                self._paused[name] = self._unfinished.pop(name)[1]
                self._jobs.cancel(name)
            self._show_stop()
            self._show_error(exc, doing)
            self._refused_at = self._requests
            if names:
                self._set_status("Paused: the last input was refused (see the error); the view shows the last "
                                 "finished result until an accepted change.")

    def _accept_input(self) -> None:
        """An input was accepted: the error of a refused one goes, and paused requests are made again."""
        with self._lock:
            if self._refused_at is not None:
                self._clear_error()
            paused, self._paused = self._paused, {}
            for again in paused.values():
                again()

    def _guarded(self, handler: Callable[..., Any], doing: str) -> Callable[..., Any]:
        """Wrap a UI callback so that an exception lands in the error area instead of the log."""
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - shown to the user, widget keeps working
                self._show_error(exc, doing)
                return None
        return run

    # --- background work ---------------------------------------------------------------------

    def submit(self, name: str, work: Callable[[Job], Result], apply: Callable[[Result], None], *,
               busy_text: str, doing: str, done_text: Callable[[Result, float], str] | None = None) -> int:
        """Run ``work(job)`` in the background as job ``name``, then ``apply(result)`` under the lock.

        Latest-only per name: a newer request under the same name replaces a queued one and makes
        a running one stale (its ``job.stopped`` is set and its result dropped); other names are
        unaffected. Errors from either step go to the error area and the previous view stays.
        The work runs in the widget's ``precision`` (engine calls inside it that get none).
        Returns the request's generation.
        """
        runner = self._jobs.runner(name)
        precision = self.precision  # as it was when the work was asked for
        with self._lock:
            self._requests += 1
            order = self._requests

        def again() -> int:
            return self.submit(name, work, apply, busy_text=busy_text, doing=doing, done_text=done_text)

        def run(generation: int) -> None:
            if not runner.is_current(generation):
                return
            handle = Job(name, generation, lambda text: self._progress(runner, generation, text))
            self._jobs.start(name, handle)
            start = time.perf_counter()
            try:
                with using_precision(precision):  # every engine call of this job, on this thread
                    result = work(handle)
            except Exception as exc:  # noqa: BLE001 - shown in the widget, which keeps working
                with self._lock:
                    if runner.is_current(generation):
                        self._finished(name, generation)
                        self._show_error(exc, doing)
                        self._set_status(f"Failed while {doing}.")
                return
            with self._lock:
                if not runner.is_current(generation) or handle.stopped.is_set():
                    return  # replaced, cancelled or made stale by a refused input: drop the result
                self._finished(name, generation)
                try:
                    apply(result)
                    if self._refused_at is None or (order > self._refused_at and self._follows_input(name)):
                        self._clear_error()  # a refused input's error stays until newer input is used
                    elapsed = time.perf_counter() - start
                    self._set_status(done_text(result, elapsed) if done_text else f"Done in {elapsed:.2f} s.")
                except Exception as exc:  # noqa: BLE001
                    self._show_error(exc, doing)
                    self._set_status(f"Failed while {doing}.")

        with self._lock:
            self._set_status(busy_text, busy=True)
            self._jobs.replace(name)
            self._paused.pop(name, None)  # this newer request replaces a paused one
            generation = runner.submit(run)
            self._unfinished[name] = (generation, again)
            self._show_stop()
            return generation

    def _finished(self, name: str, generation: int) -> None:
        if self._unfinished.get(name, (None,))[0] == generation:
            del self._unfinished[name]
            self._show_stop()

    def _show_stop(self) -> None:
        """Stop is offered only while there is something to stop: ``controls["stop"]`` is visible while a
        job of :attr:`stoppable_jobs` is unfinished and hidden (keeping its place, so that nothing
        jumps) otherwise."""
        stop = getattr(self, "_controls", {}).get("stop")
        if stop is None:
            return
        running = self.stoppable
        stop.layout.visibility = "visible" if running else "hidden"
        stop.disabled = not running

    @property
    def stoppable(self) -> bool:
        """True while a job of :attr:`stoppable_jobs` (any job when None) is unfinished."""
        with self._lock:
            return any(self.stoppable_jobs is None or name in self.stoppable_jobs for name in self._unfinished)

    def _follows_input(self, name: str) -> bool:
        return self.input_jobs is None or name in self.input_jobs

    def _progress(self, runner: LatestOnlyRunner, generation: int, text: str) -> None:
        with self._lock:
            if runner.is_current(generation):
                self._set_status(text, busy=True)

    def cancel(self, name: str | None = None) -> None:
        """Stop background job ``name`` (all jobs when None); what it finished stays, the view is kept."""
        with self._lock:
            for stopped in list(self._unfinished) + list(self._paused) if name is None else [name]:
                self._unfinished.pop(stopped, None)
                self._paused.pop(stopped, None)
            self._show_stop()
        self._jobs.cancel(name)

    def wait(self, timeout: float | None = None, name: str | None = None) -> bool:
        """Block until background work (job ``name``, or all) is finished; False if ``timeout`` passed."""
        return self._jobs.wait(timeout, name)

    # --- static output -----------------------------------------------------------------------

    def _render_figure(self) -> Any:
        """A matplotlib Figure of the current view (subclasses implement this)."""
        raise NotImplementedError

    def figure(self, layout: Layout = None):
        """A static matplotlib Figure of the current view, for papers and slides.

        layout: "column" (3.5 in wide), "page" (7 in), a width in inches or (width, height): sized,
        with fonts for that true size and a fitted height; None: the view's natural size.
        Waits for pending work first. Save it with :meth:`save`, or ``fig.savefig(...)``.
        """
        self.wait(self.display_timeout)
        with self._lock:
            return apply_layout(self._render_figure(), layout)

    def save(self, path: str | os.PathLike, dpi: int = 150, format: str | None = None,
             layout: Layout = None) -> Path:
        """Write the current view as a static figure; format from ``format`` or the suffix (png/svg/pdf/jpg).

        layout: as for :meth:`figure`. SVG/PDF keep images raster (at ``dpi``) and text and lines vector.
        """
        return save_figure(self.figure(), path, dpi=dpi, format=format, layout=layout)

    def _static_png(self) -> bytes | None:
        try:
            return figure_bytes(self.figure(), "png", dpi=self.static_dpi)
        except Exception:  # noqa: BLE001 - no static copy is better than a broken display
            log.debug("no static PNG for %s", type(self).__name__, exc_info=True)
            return None

    def _static_png_metadata(self, png: bytes) -> dict | None:
        """Display metadata of the static PNG: its size at 1x, so a 2x PNG stays sharp, not twice as big."""
        return static_png_metadata(png)

    def _static_copy(self) -> tuple[bytes | None, dict | None]:
        png = self._static_png()
        return png, (self._static_png_metadata(png) if png else None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self._status_text or 'ready'}>"
