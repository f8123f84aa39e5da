"""Output files of a run: OUT/results.json, OUT/per_class.csv and OUT/report.md.

results.json holds everything (numbers as fractions in [0, 1]); per_class.csv one row per class
and one IoU column per method; report.md the comparison table and, where the papers published a
number for the same method and dataset, that number beside the measured one with the difference
(in percentage points).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .result import EvaluationResult
from .store import write_atomic

_LABELS = {"miou": "mIoU", "pixel_accuracy": "pixel acc.", "map": "mAP", "msc": "mSC", "accuracy": "accuracy"}


def results_dict(result: EvaluationResult) -> dict:
    """Everything of a run as JSON-able data."""
    return {
        "task": result.task, "dataset": result.dataset, "methods": result.methods,
        "items": {"total": result.items, "evaluated": result.evaluated, "skipped": len(result.skipped)},
        "skipped": result.skipped, "model": result.model, "settings": result.settings,
        "published": result.published, "timings": result.timings, **result.extras,
    }


def write_outputs(result: EvaluationResult, out: Path) -> None:
    """Write results.json, per_class.csv (tasks with per-class numbers) and report.md into ``out``."""
    write_atomic(out / "results.json", json.dumps(results_dict(result), indent=2, default=_plain).encode("utf-8"))
    per_class = per_class_csv(result)
    if per_class:
        write_atomic(out / "per_class.csv", per_class.encode("utf-8"))
    write_atomic(out / "report.md", markdown_report(result).encode("utf-8"))


def per_class_csv(result: EvaluationResult) -> str:
    """CSV text: class_index, class_name, then one IoU column per method (empty = no pixels); '' if none."""
    per_class = result.per_class()
    if not per_class:
        return ""
    names = result.extras.get("class_names") or []
    size = max(len(v) for v in per_class.values())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class_index", "class_name", *per_class])
    for index in range(size):
        values = [per_class[m][index] if index < len(per_class[m]) else None for m in per_class]
        writer.writerow([index, names[index] if index < len(names) else "",
                         *["" if v is None else f"{v:.6f}" for v in values]])
    return buffer.getvalue()


def markdown_report(result: EvaluationResult) -> str:
    """The comparison table, then measured versus published numbers, then what was skipped."""
    metrics = result.metric_names()
    model = result.model
    weights = model.get("checkpoint") or model.get("pretrained") or "no pretrained weights"
    lines = [f"# {result.task} evaluation" + (f" on {result.dataset}" if result.dataset else ""), "",
             f"Model: {model.get('name')} ({weights}"
             f"{', fingerprint ' + model['fingerprint'] if model.get('fingerprint') else ''}). "
             f"Items: {result.evaluated} evaluated, {len(result.skipped)} skipped, {result.items} in total. "
             f"Numbers in percent.", "",
             "| method | " + " | ".join(_LABELS.get(m, m) for m in metrics) + " | images |",
             "|---|" + "---:|" * (len(metrics) + 1)]
    for row in result.table():
        lines.append(f"| {row['method']} | " + " | ".join(_percent(row[m]) for m in metrics) + f" | {row['images']} |")
    published = _published_rows(result)
    if published:
        lines += ["", "## Published numbers", "",
                  "| method | metric | measured | published | difference | source |", "|---|---|---:|---:|---:|---|"]
        lines += published
        overrides = result.extras.get("overrides")
        if overrides:
            shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
            lines += ["", f"Settings differ from the published configs ({shown}), so the comparison is indicative."]
        if result.evaluated < _full_size(result):
            lines += ["", "Only part of the dataset was evaluated (--limit or skipped items); published numbers "
                          "cover the whole validation split."]
    if result.skipped:
        lines += ["", f"## Skipped items ({len(result.skipped)})", ""]
        lines += [f"- {s['id']}: {s['reason']}" for s in result.skipped[:50]]
        if len(result.skipped) > 50:
            lines.append(f"- ... and {len(result.skipped) - 50} more (see results.json)")
    return "\n".join(lines) + "\n"


def _published_rows(result: EvaluationResult) -> list[str]:
    rows = []
    for method, metrics in result.published.items():
        for metric, entries in metrics.items():
            measured = result.methods.get(method, {}).get(metric)
            for entry in entries:
                diff = "-" if measured is None else f"{100 * measured - entry['value']:+.2f}"
                rows.append(f"| {method} | {_LABELS.get(metric, metric)} | {_percent(measured)} | "
                            f"{entry['value']:.2f} | {diff} | {entry['source']} |")
    return rows


_SPLIT_SIZES = {"voc21": 1449, "voc20": 1449, "context60": 5104, "context59": 5104, "coco_stuff164k": 5000,
                "coco_object": 5000, "cityscapes": 500, "ade20k": 2000}


def _full_size(result: EvaluationResult) -> int:
    return _SPLIT_SIZES.get(result.dataset or "", result.items)


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays, tuples and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
