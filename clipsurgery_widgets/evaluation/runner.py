"""``evaluate(...)``: run one evaluation task over a dataset, resumably, locally or through Ray.

Order of work: build the task and check the dataset layout (errors before any model loads), list
the items (deterministic; ``limit`` keeps the first N), open OUT (a resume with other settings is
refused), load the model only if items remain, run each remaining item and save its stats at once
(one .npz per item), then merge every item's stats and write results.json, per_class.csv and
report.md. A rerun after an interruption computes only the missing items and gives the same
numbers as an uninterrupted run (stats merge exactly).
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..engine.precision import check_precision, scoped_precision, using_precision
from .result import EvaluationResult
from .store import FORMAT_VERSION, ItemStore
from .tasks import ItemStats, Task, attempt_item, is_skip, make_task, skip_reason
from .workers import ModelSpec, TaskFactory

ENGINES = ("local", "ray")
Progress = Callable[[int, int, str], None]


def evaluate(task: str = "seg", dataset: str | None = None, root: str | Path | None = None,
             methods: str | Sequence[str] | None = None, model: Any = "ViT-B-16", out: str | Path | None = None,
             limit: int | None = None, engine: str = "local", progress: bool | Progress = True, *,
             pretrained: str | None = "openai", checkpoint: str | Path | None = None, device: str | None = None,
             trust_checkpoint: bool = False, workers: int = 2, precision: str | None = None,
             **settings: Any) -> EvaluationResult:
    """Evaluate methods on a dataset and return (and, with ``out``, write) the numbers.

    Args:
        task: "seg" (mIoU), or another registered task (see ``tasks.TASKS``).
        dataset, root: dataset name (voc21, voc20, context60, context59, coco_stuff164k,
            coco_object, cityscapes, ade20k, generic) and the folder users already have.
        methods: method names, a list or a comma-separated string ("raw,sclip,naclip"); None = the
            task's own default (seg and explain: sclip; multilabel: cosine and feature_surgery; ...).
        model: a model name ("ViT-B-16"; loaded only if items remain) or a loaded model.
        out: results folder (items/, run.json, results.json, per_class.csv, report.md); a rerun
            with the same folder resumes. None: nothing is written, no resume.
        limit: evaluate only the first N items (deterministic order).
        engine: "local" (this process) or "ray" (Ray Data, ``workers`` actors, one model each).
        progress: True for a tqdm bar (rate, ETA), False for none, or a callable
            ``(done, total, item_id)`` called after each item.
        pretrained, checkpoint, device, trust_checkpoint: how to load ``model`` when it is a name
            (see load_model).
        workers: Ray actors (engine="ray"), each with its own model.
        precision: "auto", "fp32", "bf16" or "fp16" for every engine call (None: an enclosing
            ``using_precision`` block, else fp32); recorded with the results, so a resume never mixes them.
        **settings: task settings; for "seg": split, classes, templates, short_side, crop, stride,
            logit_scale, prob_thd, area_thd (None = off), pamr_steps (or pamr).

    Raises:
        DatasetLayoutError: wrong or incomplete dataset folder (before the model loads).
        ResumeMismatchError: ``out`` holds a run with other settings.
    """
    started = time.perf_counter()
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; use 'local' or 'ray'.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} is not valid; pass a positive number of items, or None for all.")
    task_settings = {"dataset": dataset, "root": root, **settings}
    if methods is not None:
        task_settings["methods"] = methods
    job = make_task(task, **task_settings)
    job.check()
    items = job.items()[:limit] if limit else job.items()
    spec = ModelSpec.from_argument(model, pretrained, checkpoint, device, trust_checkpoint)
    store = ItemStore(out) if out is not None else None

    precision = check_precision(precision) if precision is not None else (scoped_precision() or "fp32")
    manifest = {"format": FORMAT_VERSION, "task": job.name, "settings": job.settings(), "model": spec.identity()}
    if precision != "fp32":  # fp32 runs keep the manifest of earlier versions, so they still resume
        manifest["precision"] = precision
    if store is not None:
        store.open(manifest)
    done = (store.done() & set(items)) if store is not None else set()
    pending = [item for item in items if item not in done]
    timings = {"model_seconds": 0.0, "prepare_seconds": 0.0, "items_seconds": 0.0, "items_computed": len(pending)}
    computed: dict[str, ItemStats] = {}
    if pending:
        tick = time.perf_counter()
        bar = _Progress(progress, total=len(items), initial=len(done), desc=f"{job.name} {dataset or ''}".strip())
        try:
            if engine == "local":
                stream = _run_local(job, spec, pending, timings)
            else:
                stream = _run_ray(job.name, task_settings, spec, pending, workers, precision)
            for item_id, stats in _in_precision(stream, precision):
                if store is not None:
                    store.write(item_id, stats)
                else:
                    computed[item_id] = stats
                if is_skip(stats):
                    bar.note(f"skipped {item_id}: {skip_reason(stats)}")
                bar.step(item_id)
        finally:
            bar.close()
        timings["items_seconds"] = time.perf_counter() - tick - timings["model_seconds"] - timings["prepare_seconds"]
        if store is not None and spec.loaded is not None:
            store.open({**manifest, "model": spec.identity()})  # record the fingerprint now known
    all_stats = {item: computed[item] if item in computed else store.read(item) for item in items}
    evaluated = {item: s for item, s in all_stats.items() if not is_skip(s)}
    skipped = [{"id": item, "reason": skip_reason(s)} for item, s in all_stats.items() if is_skip(s)]
    if skipped:
        warnings.warn(f"{len(skipped)} of {len(items)} items were skipped and not counted (first: "
                      f"{skipped[0]['id']}: {skipped[0]['reason']}); see 'skipped' in the results.", stacklevel=2)
    numbers = job.merge(list(evaluated.values())) if evaluated else {}
    timings["total_seconds"] = time.perf_counter() - started
    result = EvaluationResult(task=job.name, dataset=dataset, methods=numbers, settings=job.settings(),
                              model=spec.identity(), items=len(items), evaluated=len(evaluated), skipped=skipped,
                              out=Path(out) if out is not None else None, timings=timings, extras=job.extras(),
                              published=_published(job), item_stats=evaluated, task_object=job)
    if out is not None:
        from .report import write_outputs

        write_outputs(result, Path(out))
    return result


def _run_local(job: Task, spec: ModelSpec, pending: list[str], timings: dict) -> Iterable[tuple[str, ItemStats]]:
    tick = time.perf_counter()
    loaded = spec.load()
    timings["model_seconds"] = time.perf_counter() - tick
    tick = time.perf_counter()
    job.prepare(loaded)
    timings["prepare_seconds"] = time.perf_counter() - tick
    for item_id in pending:
        yield item_id, attempt_item(job, item_id)


def _in_precision(stream: Iterable[tuple[str, ItemStats]], precision: str) -> Iterable[tuple[str, ItemStats]]:
    """Each item of a lazy stream computed inside ``using_precision(precision)`` (this thread only)."""
    iterator = iter(stream)
    while True:
        with using_precision(precision):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def _run_ray(task_name: str, task_settings: dict, spec: ModelSpec, pending: list[str],
             workers: int, precision: str = "fp32") -> Iterable[tuple[str, ItemStats]]:
    try:
        from . import ray_engine
    except ImportError as exc:
        raise ImportError(f"engine='ray' needs Ray: pip install 'clipsurgery-widgets[distributed]' ({exc}).") from None
    factory = TaskFactory(task_name, task_settings, spec.portable(), precision)
    streaming = getattr(ray_engine, "iter_items", None)  # (id, stats) as items finish: saved at once
    if streaming is not None:
        yield from streaming(factory, pending, workers)
        return
    output = ray_engine.run_items(factory, pending, workers)
    if isinstance(output, dict):
        output = output.items()
    for position, entry in enumerate(output):
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
            yield entry
        else:  # a plain list of stats in the order of the items given
            yield pending[position], entry


def _published(job: Task) -> dict:
    lookup = getattr(job, "published", None)
    return lookup() if callable(lookup) else {}


class _Progress:
    """tqdm bar (tqdm.auto: a widget in notebooks) or a user callback (done, total, item_id)."""

    def __init__(self, progress: bool | Progress, total: int, initial: int, desc: str):
        self.done, self.total = initial, total
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="item", dynamic_ncols=True, file=sys.stderr)

    def step(self, item_id: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(self.done, self.total, item_id)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
