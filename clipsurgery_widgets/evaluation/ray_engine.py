"""The distributed engine: a task's per-item function through Ray Data, one model per actor.

Every item is computed alone (batch size 1) by the same ``Task.run_item`` a single process runs, so
the per-item statistics, and the numbers merged from them, equal the local run's. Stats travel as
pickled bytes (one row per item) and come back as the items finish; :func:`run_items` puts them in
the order of ``items``.

Ray is an optional extra (``pip install clipsurgery-widgets[distributed]``). Without a running Ray
instance, one is started on this machine (``ray.init(num_cpus=..., include_dashboard=False)``) and
shut down afterwards; an instance the caller started (e.g. ``ray.init(address="auto")`` on a
cluster) is used and left running. Actors ask for a fraction of a CPU so that the pool and Ray
Data's own read task fit together: on two CPUs, two actors at one CPU each would wait forever.
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Callable, Iterator, Sequence

from ..engine.errors import ClipSurgeryError


class RayUnavailableError(ClipSurgeryError, ImportError):
    """Ray (the optional ``distributed`` extra) is not installed."""


class _ItemWorker:
    """A Ray Data actor: builds its task (and model) once, then runs one item per call."""

    def __init__(self, factory: Callable[[], Any], threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.task = factory()
        self.precision = getattr(factory, "precision", None)

    def __call__(self, batch: dict) -> dict:
        # A skipped item travels as its skip record, as in a local run.
        from .tasks.base import attempt_item

        from ..engine.precision import using_precision

        ids = [str(i) for i in batch["item"]]
        with using_precision(self.precision):
            stats = [pickle.dumps(attempt_item(self.task, i), protocol=pickle.HIGHEST_PROTOCOL) for i in ids]
        return {"item": ids, "stats": stats}


def iter_items(task_factory: Callable[[], Any], items: Sequence[str], num_workers: int = 2,
               cpus_per_worker: float | None = None, threads: int | None = None) -> Iterator[tuple[str, dict]]:
    """Yield (item id, stats) as the workers finish them (any order).

    Args:
        task_factory: picklable callable returning a prepared task (``workers.TaskFactory``).
        items: item ids of the task.
        num_workers: actors, each with its own model.
        cpus_per_worker: CPUs per actor; default min(1, cluster CPUs / (num_workers + 1)).
        threads: torch threads per actor. Default: on a one-machine Ray instance, this process's
            own count (torch splits float sums across threads, so another count changes the last
            bits of a score and, at a near-tie, a pixel's class: equal counts give a local run's
            numbers exactly); on a cluster, Ray's default.
    """
    items = [str(i) for i in items]
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, not {num_workers}.")
    if not items:
        return
    ray = _import_ray()
    started = _ensure_ray(ray, num_workers)
    try:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the runner shows its own progress
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-run execution-plan lines
        cpus = cpus_per_worker or min(1.0, float(ray.cluster_resources().get("CPU", 1)) / (num_workers + 1))
        if threads is None and sum(1 for node in ray.nodes() if node.get("Alive")) == 1:
            import torch

            threads = torch.get_num_threads()
        dataset = ray.data.from_items([{"item": i} for i in items], override_num_blocks=min(len(items), 4 * num_workers))
        results = dataset.map_batches(_ItemWorker, fn_constructor_kwargs={"factory": task_factory, "threads": threads}, batch_size=1,
                                      compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=cpus,
                                      batch_format="numpy")
        for row in results.iter_rows():
            yield str(row["item"]), pickle.loads(row["stats"])
    finally:
        if started:
            ray.shutdown()


def run_items(task_factory: Callable[[], Any], items: Sequence[str], num_workers: int = 2,
              cpus_per_worker: float | None = None, threads: int | None = None) -> list[dict]:
    """Stats of every item through Ray, in the order of ``items`` (the same as a local run's)."""
    items = [str(i) for i in items]
    found = dict(iter_items(task_factory, items, num_workers, cpus_per_worker, threads))
    missing = [i for i in items if i not in found]
    if missing:
        raise RuntimeError(f"Ray returned no result for {len(missing)} item(s), first {missing[0]!r}.")
    return [found[i] for i in items]


def _import_ray() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reporting from a local instance
    try:
        import ray
        import ray.data  # noqa: F401  (the "data" part of the extra)
    except ImportError as exc:
        raise RayUnavailableError(
            f"--engine ray needs Ray Data ({exc}): pip install 'clipsurgery-widgets[distributed]' "
            f"(or pip install 'ray[data]'), or run with the local engine.") from None
    return ray


def _ensure_ray(ray: Any, num_workers: int) -> bool:
    """Start a local instance when none runs; True when this call started it (and must shut it down).

    It gets max(2, num_workers) CPUs (``$CLIPSURGERY_RAY_CPUS`` overrides), whatever the machine has:
    the actors' fractional requests then fit, and Ray does not oversubscribe a small machine.
    """
    if ray.is_initialized():
        return False
    cpus = int(os.environ.get("CLIPSURGERY_RAY_CPUS", "0")) or max(2, num_workers)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True
