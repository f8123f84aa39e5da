"""Evaluation tasks and their registry: ``make_task(name, **settings)`` builds one from plain settings.

Each task module registers itself with one line in ``TASKS`` below (name -> "module:Class"),
imported lazily so a task's dependencies load only when it runs.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any

from .base import (SKIP_KEY, ItemStats, SkipItem, Task, attempt_item, is_skip, skip_reason)

TASKS: dict[str, str] = {
    "seg": "seg:SegTask",
    "explain": "explain:ExplainTask",
    "multilabel": "multilabel:MultiLabelTask",
    "imagenet_seg": "imagenet_seg:ImageNetSegTask",
    "ablation": "ablation:AblationTask",
}


def make_task(name: str, **settings: Any) -> Task:
    """Build task ``name`` from keyword settings (the runner passes dataset=, root=, methods= and the rest)."""
    if name not in TASKS:
        close = difflib.get_close_matches(str(name), TASKS, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown evaluation task {name!r}.{hint} Choose one of {', '.join(TASKS)}.")
    module_name, _, class_name = TASKS[name].partition(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)(**settings)


__all__ = ["make_task", "TASKS", "Task", "SkipItem", "attempt_item", "is_skip", "skip_reason", "SKIP_KEY",
           "ItemStats"]
