"""Evaluation: the papers' tables on a user's own data, resumable, locally or with Ray.

    from clipsurgery_widgets.evaluation import evaluate
    result = evaluate("seg", dataset="voc21", root="~/data/VOCdevkit", methods="raw,sclip,naclip",
                      model="ViT-B-16", out="results/voc21")
    print(result.to_markdown())

Datasets (``datasets``), metrics (``metrics``), tasks (``tasks``: a registry built by
``make_task``) and the runner (``runner.evaluate``). The definitions follow
docs/algorithms.md#evaluation-protocol. This package imports the engine, never widgets or figures.
"""
from __future__ import annotations

from .datasets import (DATASETS, DatasetLayoutError, MaskError, Sample, SegDataset, get_dataset)
from .result import EvaluationResult
from .runner import evaluate
from .store import ResumeMismatchError
from .tasks import TASKS, SkipItem, Task, make_task

__all__ = ["evaluate", "EvaluationResult", "get_dataset", "DATASETS", "SegDataset", "Sample", "DatasetLayoutError",
           "MaskError", "ResumeMismatchError", "make_task", "TASKS", "Task", "SkipItem"]
