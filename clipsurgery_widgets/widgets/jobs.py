"""Named background jobs for widgets: one worker thread per name, only the newest request matters.

A widget's slow steps (explaining an image, computing a SAM embedding, a pass over an image set)
each get a name. Requests under one name replace each other (latest-only); different names run
side by side, so a slow embedding never holds up a quick map update. Each job receives a
:class:`Job` handle: ``job.stopped`` is set when the job is cancelled or replaced (long loops
check it and return early), and ``job.progress(text)`` updates the widget's status line.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Job:
    """The handle a running job gets: ``stopped`` (an Event) and ``progress(text)``."""

    def __init__(self, name: str, generation: int, progress: Callable[[str], None]):
        self.name = name
        self.generation = generation
        self.stopped = threading.Event()
        self._progress = progress

    def progress(self, text: str) -> None:
        """Show ``text`` in the widget's status line; ignored once the job is stopped."""
        if not self.stopped.is_set():
            self._progress(text)


class LatestOnlyRunner:
    """Runs jobs one at a time in a daemon thread; only the newest request matters.

    Each :meth:`submit` gets a generation number. A job not yet started is dropped when a newer one
    arrives; a running job can ask :meth:`is_current` and its caller discards stale results.
    The thread exits when idle and is restarted by the next submission.
    """

    def __init__(self, name: str = "clipsurgery-widget"):
        self._name = name
        self._cond = threading.Condition()
        self._generation = 0
        self._pending: tuple[int, Callable[[int], None]] | None = None
        self._running = False
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[int], None]) -> int:
        """Queue ``job(generation)``, replacing any job that has not started. Returns its generation."""
        with self._cond:
            self._generation += 1
            self._pending = (self._generation, job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self._generation

    def cancel(self) -> None:
        """Drop a queued job and make a running one stale (its result will be discarded)."""
        with self._cond:
            self._generation += 1
            self._pending = None
            self._cond.notify_all()

    def is_current(self, generation: int) -> bool:
        return generation == self._generation

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._pending is not None or self._running

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running; False if ``timeout`` seconds passed first."""
        if threading.current_thread() is self._thread:
            return not self._pending  # called from inside a job: waiting would deadlock
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._running, timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._pending is None:
                    self._thread = None
                    self._cond.notify_all()
                    return
                generation, job = self._pending
                self._pending, self._running = None, True
            try:
                job(generation)
            except Exception:  # jobs report their own errors; never let the thread die silently
                log.exception("widget background job failed")
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()


class JobBoard:
    """The named jobs of one widget: a :class:`LatestOnlyRunner` per name and the running handles."""

    def __init__(self, owner: str):
        self._owner = owner
        self._lock = threading.Lock()
        self._runners: dict[str, LatestOnlyRunner] = {}
        self._handles: dict[str, Job] = {}

    def runner(self, name: str) -> LatestOnlyRunner:
        with self._lock:
            if name not in self._runners:
                self._runners[name] = LatestOnlyRunner(f"{self._owner}-{name}")
            return self._runners[name]

    def start(self, name: str, handle: Job) -> None:
        """Record ``handle`` as the running job of ``name``; the one it replaces is told to stop."""
        with self._lock:
            previous = self._handles.get(name)
            self._handles[name] = handle
        if previous is not None:
            previous.stopped.set()

    def replace(self, name: str) -> None:
        """A newer request for ``name`` arrived: tell the running job to stop (its result is dropped anyway)."""
        with self._lock:
            handle = self._handles.get(name)
        if handle is not None:
            handle.stopped.set()

    def cancel(self, name: str | None = None) -> None:
        """Stop the job ``name`` (every job when None): queued work is dropped, running work told to stop."""
        with self._lock:
            names = list(self._runners) if name is None else [name]
            runners = [self._runners[n] for n in names if n in self._runners]
            handles = [self._handles[n] for n in names if n in self._handles]
        for runner in runners:
            runner.cancel()
        for handle in handles:
            handle.stopped.set()

    @property
    def busy(self) -> bool:
        with self._lock:
            runners = list(self._runners.values())
        return any(runner.busy for runner in runners)

    def is_busy(self, name: str) -> bool:
        with self._lock:
            runner = self._runners.get(name)
        return runner is not None and runner.busy

    def wait(self, timeout: float | None = None, name: str | None = None) -> bool:
        """Block until the job ``name`` (every job when None) is idle; False on time-out."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # a job may submit another one (even under a new name), so loop until all are idle at once
            for runner in self._named(name):
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not runner.wait(left):
                    return False
            if not any(runner.busy for runner in self._named(name)):  # the runners as they are now
                return True

    def _named(self, name: str | None) -> list[LatestOnlyRunner]:
        with self._lock:
            return [r for n, r in self._runners.items() if name is None or n == name]
