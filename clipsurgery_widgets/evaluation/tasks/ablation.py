"""Zero-shot accuracy under mean ablation, in the evaluation runner
(docs/algorithms.md#text-based-decomposition).

Items are the images of a labelled folder (``root/<class name>/<image>``, as ``labelled_folder``
reads it). Each image's per-head decomposition terms come from ``decompose_images`` (so they are
cached and shared with the decomposition widgets) and are kept projected on the class features:
attn [L, H, C] and mlp [L + 1, C]. Projection is linear, so the mean of the projections is the
projection of the mean, and the projected sum is the embedding's score per class up to its
(positive) norm: the argmax, hence the accuracy, is what ``evaluate_ablation`` gives on the full
terms. The merge then needs no model, and per-image stats stay small when C is small.

Rows ("methods") are ablations: "none", "mlps" (every MLP), "attention_early" (every attention
layer but the last four), "attention_last4", "all_but_last4" (every term but the last four
attention layers), "attention:<l>" and "head:<l>.<h>" (0-based).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ...engine.decomposition import (Ablation, decompose_images, evaluate_ablation, labelled_folder)
from ...engine.decomposition.ablation import mean_terms
from ...engine.decomposition.terms import vision_tower
from ...engine.errors import ImageInputError
from ...engine.text.encoding import TEMPLATES
from ..datasets import DatasetLayoutError
from .base import SkipItem, Task
from .common import check_unused, explainer_for, given_methods, read_rgb, stack_items

DEFAULT_ABLATIONS = ("none", "mlps", "attention_early", "attention_last4")
NAMED = ("none", "mlps", "attention_early", "attention_last4", "all_but_last4")


@dataclass(frozen=True)
class ProjectedTerms:
    """Terms projected on C class features: attn [K, L, H, C], mlp [K, L + 1, C] (duck-types ImageSetTerms)."""

    attn: torch.Tensor
    mlp: torch.Tensor

    def head_terms(self) -> torch.Tensor:
        return self.attn


def parse_ablation(name: str, layers: int, heads: int) -> Ablation:
    """An ablation by name (see the module docstring) for a model of ``layers`` x ``heads``."""
    last = range(max(0, layers - 4), layers)
    early = range(0, max(0, layers - 4))
    if name == "none":
        return Ablation()
    if name == "mlps":
        return Ablation(mlps=frozenset(range(layers)))
    if name == "attention_early":
        return Ablation(attn_layers=frozenset(early))
    if name == "attention_last4":
        return Ablation(attn_layers=frozenset(last))
    if name == "all_but_last4":
        return Ablation(attn_layers=frozenset(early), mlps=frozenset(range(layers)), embedding=True)
    kind, _, value = name.partition(":")
    try:
        if kind == "attention":
            ablation = Ablation(attn_layers=frozenset({int(value)}))
        elif kind == "head":
            layer, head = value.split(".")
            ablation = Ablation(heads=frozenset({(int(layer), int(head))}))
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"Unknown ablation {name!r}: use {', '.join(NAMED)}, 'attention:<layer>' or "
                         f"'head:<layer>.<head>'.") from None
    ablation.check(layers, heads)
    return ablation


class AblationTask(Task):
    """Zero-shot accuracy of a labelled image folder with terms mean-ablated.

    Args:
        root: folder of class sub-folders; max_per_class: keep the first N images of each class.
        methods (or ablations): ablation names, default none, mlps, attention_early, attention_last4
            .
        size: model input size (default the model's own); templates: prompts for the class names.
        cache_dir: where decompose_images keeps per-image terms (None: the user cache; False: none).
    """

    name = "ablation"

    def __init__(self, root: Any = None, dataset: str | None = None, methods: Sequence[str] | str | None = None,
                 ablations: Sequence[str] | str | None = None, max_per_class: int | None = None,
                 size: int | Sequence[int] | None = None, templates: Sequence[str] | None = None,
                 cache_dir: Any = None, **unused: Any):
        check_unused(self.name, unused)
        if dataset not in (None, "folder"):
            raise ValueError(f"The ablation task reads a labelled image folder; dataset must be 'folder', not {dataset!r}.")
        if root is None:
            raise DatasetLayoutError("folder: no image folder given; pass root= (--root DIR with DIR/<class>/<image>)")
        chosen = given_methods(ablations) if ablations is not None else given_methods(methods)
        self.ablations = list(dict.fromkeys(chosen or DEFAULT_ABLATIONS))
        for name in self.ablations:
            parse_ablation(name, 64, 64)  # a bad name fails now; layer ranges are checked in prepare
        self.root, self.max_per_class = Path(root).expanduser(), max_per_class
        self.size, self.cache_dir = size, cache_dir
        self.templates = list(templates) if templates is not None else None
        self._data = None
        self._explainer = None

    @property
    def methods(self) -> list[str]:
        return self.ablations

    def check(self) -> None:
        self._folder()

    def items(self) -> list[str]:
        data = self._folder()
        return [p.relative_to(self.root).as_posix() for p in data.paths]

    @property
    def class_names(self) -> list[str]:
        return list(self._folder().classes)

    def prepare(self, model: Any) -> None:
        self._explainer = explainer_for(model)
        visual = vision_tower(self._explainer)  # ViT only: refused here with the reason
        layers, heads = len(visual.transformer.resblocks), int(visual.transformer.resblocks[0].attn.num_heads)
        for name in self.ablations:
            parse_ablation(name, layers, heads)
        self._features = self._explainer.label_features(self.class_names, self.templates or TEMPLATES)  # [C, D]

    def run_item(self, item_id: str) -> dict[str, dict[str, np.ndarray]]:
        if self._explainer is None:
            raise RuntimeError("Call prepare(model) before run_item().")
        data = self._folder()
        index = self._index[item_id]
        rgb = read_rgb(data.paths[index])
        try:
            terms = decompose_images(self._explainer, [rgb], size=self.size, cache_dir=self.cache_dir,
                                     progress=False, lock=self._explainer.model_lock)
        except ImageInputError as exc:
            raise SkipItem(f"{item_id}: {exc}") from None
        features = self._features.to(terms.attn)
        row = {"attn": (terms.attn[0] @ features.T).numpy(), "mlp": (terms.mlp[0] @ features.T).numpy(),
               "target": np.int64(data.targets[index])}
        return {self.ablations[0]: row}  # one row serves every ablation (they differ only in the merge)

    def merge(self, stats: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict]:
        rows = [s[self.ablations[0]] for s in stats]
        terms = ProjectedTerms(attn=torch.from_numpy(stack_items(rows, "attn")),
                               mlp=torch.from_numpy(stack_items(rows, "mlp")))
        targets = stack_items(rows, "target")
        classes = terms.mlp.shape[-1]
        identity = torch.eye(classes, dtype=terms.mlp.dtype)  # the terms are already scores per class
        means = mean_terms(terms)
        layers, heads = terms.attn.shape[1], terms.attn.shape[2]
        out = {}
        for name in self.ablations:
            result = evaluate_ablation(terms, identity, targets, parse_ablation(name, layers, heads), means)
            out[name] = {"accuracy": result.accuracy_after, "accuracy_before": result.accuracy_before,
                         "changed": int((result.predictions_after != result.predictions_before).sum()),
                         "images": len(rows)}
        return out

    def settings(self) -> dict:
        size = list(self.size) if isinstance(self.size, (tuple, list)) else self.size
        return {"task": self.name, "root": str(self.root.resolve()), "ablations": self.ablations,
                "max_per_class": self.max_per_class, "size": size, "templates": self.templates,
                "classes": self.class_names}

    def extras(self) -> dict:
        return {"class_names": self.class_names}

    def _folder(self):
        if self._data is None:
            try:
                self._data = labelled_folder(self.root, self.max_per_class)
            except ImageInputError as exc:
                raise DatasetLayoutError(f"folder: {exc}") from None
            self._index = {p.relative_to(self.root).as_posix(): i for i, p in enumerate(self._data.paths)}
        return self._data
