"""EvaluationResult: the numbers of one evaluation run, with a comparison table across methods."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Scalar metrics shown in comparison tables, in this order when present (fractions in [0, 1]).
TABLE_METRICS = ("miou", "pixel_accuracy", "map", "msc", "accuracy")


@dataclass(eq=False)
class EvaluationResult:
    """What ``evaluate`` returns.

    Attributes:
        task, dataset: what was evaluated.
        methods: method -> numbers (for "seg": miou, per_class_iou, pixel_accuracy, images, ...).
        settings: the task's settings (per-method segment() keywords for "seg").
        model: name, pretrained tag, checkpoint and fingerprint of the weights.
        items, evaluated: items in the run and items counted; skipped: [{"id", "reason"}].
        out: the results folder, or None.
        timings: seconds spent loading the model, preparing, on items, in total.
        extras: task extras (for "seg": class_names, ignore_index).
        published: method -> metric -> [{"value", "source"}], the papers' numbers (percent).
        item_stats: item id -> its stats (evaluated items only).
    """

    task: str
    dataset: str | None
    methods: dict[str, dict]
    settings: dict
    model: dict
    items: int
    evaluated: int
    skipped: list[dict]
    out: Path | None = None
    timings: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    published: dict = field(default_factory=dict)
    item_stats: dict = field(default_factory=dict, repr=False)
    task_object: Any = field(default=None, repr=False)

    def metric_names(self) -> list[str]:
        present = {key for numbers in self.methods.values() for key, value in numbers.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        return [m for m in TABLE_METRICS if m in present]

    def table(self) -> list[dict]:
        """One row per method: {"method", <metric>: fraction or None, "images"}."""
        rows = []
        for method, numbers in self.methods.items():
            row = {"method": method}
            row.update({metric: numbers.get(metric) for metric in self.metric_names()})
            row["images"] = numbers.get("images", self.evaluated)
            rows.append(row)
        return rows

    def per_class(self) -> dict[str, list]:
        """method -> per-class IoU list (None where the union is empty); empty for tasks without classes."""
        return {m: n["per_class_iou"] for m, n in self.methods.items() if "per_class_iou" in n}

    def item_scores(self, method: str) -> dict[str, float | None]:
        """item id -> that item's own mIoU under ``method`` (seg only), e.g. to find the best and worst images."""
        score = getattr(self.task_object, "item_iou", None)
        if score is None:
            raise ValueError(f"Per-item scores are available for segmentation runs, not {self.task!r}.")
        return {item: score(stats, method) for item, stats in self.item_stats.items()}

    def to_markdown(self) -> str:
        from .report import markdown_report

        return markdown_report(self)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        cells = ", ".join(
            f"{row['method']}: " + " ".join(f"{m}={_percent(row[m])}" for m in self.metric_names())
            for row in self.table())
        return f"EvaluationResult({self.task} on {self.dataset}, {self.evaluated}/{self.items} items; {cells})"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
