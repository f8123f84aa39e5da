"""The Task contract every evaluation task follows, so one runner (local or Ray) drives them all.

A task is built from plain keyword settings (``make_task(name, **settings)``), so a Ray worker can
rebuild it; the runner passes ``dataset=``, ``root=`` and ``methods=`` plus the user's settings.

Life cycle, per process:
    task = make_task(name, **settings)
    task.check()                     # layout errors, before any model loads
    ids = task.items()               # deterministic order
    task.prepare(model)              # once per process/worker (class features, caches)
    stats = attempt_item(task, id)   # per item; never call run_item directly (skips!)
    numbers = task.merge([stats, ...])

Stats of one item: ``{method: {stat name: np.ndarray}}``, small, and exactly mergeable
(confusion counts add; ranking metrics keep per-item scores and targets). A skipped item (no mask,
labels outside the class list, unreadable file) is ``{SKIP_KEY: {"reason": np.array(text)}}``;
``is_skip(stats)`` / ``skip_reason(stats)`` read it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SKIP_KEY = "__skipped__"
ItemStats = dict[str, dict[str, np.ndarray]]


class SkipItem(Exception):
    """Raised by run_item for an item that cannot be evaluated; the reason is reported, never counted."""


class Task:
    """Base class of evaluation tasks; subclasses set ``name`` and implement the five methods."""

    name: str = "task"

    def check(self) -> None:
        """Raise DatasetLayoutError (or another ValueError) for unusable inputs. Runs before the model loads."""
        self.items()

    def items(self) -> list[str]:
        """Item ids in a deterministic order (the runner applies --limit to this list)."""
        raise NotImplementedError

    def prepare(self, model: Any) -> None:
        """Per-process setup with the loaded model (a LoadedModel); called once per worker."""
        raise NotImplementedError

    def run_item(self, item_id: str) -> ItemStats:
        """Stats of one item: method -> stat name -> array. Raise SkipItem(reason) to skip it."""
        raise NotImplementedError

    def merge(self, stats: list[ItemStats]) -> dict[str, dict]:
        """Stats of the evaluated (not skipped) items -> method -> JSON-able numbers (fractions in [0, 1])."""
        raise NotImplementedError

    def settings(self) -> dict:
        """JSON-able settings recorded with the results; a resume with other settings is refused."""
        raise NotImplementedError

    def extras(self) -> dict:
        """Extra JSON-able fields for results.json (e.g. class names); optional."""
        return {}


def attempt_item(task: Task, item_id: str) -> ItemStats:
    """``task.run_item(item_id)``, or the skip record when it raises SkipItem."""
    try:
        return task.run_item(item_id)
    except SkipItem as exc:
        return skip_record(str(exc))


def skip_record(reason: str) -> ItemStats:
    return {SKIP_KEY: {"reason": np.array(reason)}}


def is_skip(stats: ItemStats) -> bool:
    return SKIP_KEY in stats


def skip_reason(stats: ItemStats) -> str:
    return str(stats[SKIP_KEY]["reason"])
