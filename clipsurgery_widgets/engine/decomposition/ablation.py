"""Mean ablation of decomposition terms and its effect on zero-shot accuracy
(docs/algorithms.md#text-based-decomposition).

Replacing a term (a head, a whole attention layer, an MLP or the embedding) by its mean over an
image set removes what it says about each particular image while keeping its average offset.
The paper's finding to check: only the last few attention layers change accuracy much.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..errors import ClipSurgeryError, ImageInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DecompositionInputError(ClipSurgeryError, ValueError):
    """A layer, head or ablation that the model does not have, or a request the data cannot answer."""


@dataclass(frozen=True)
class Ablation:
    """Which terms to replace by their mean. Layers and heads are 0-based.

    heads: (layer, head) pairs.   attn_layers: whole attention layers.
    mlps: MLP of block l.         embedding: the class-token embedding term e.
    """

    heads: frozenset[tuple[int, int]] = field(default_factory=frozenset)
    attn_layers: frozenset[int] = field(default_factory=frozenset)
    mlps: frozenset[int] = field(default_factory=frozenset)
    embedding: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", frozenset((int(l), int(h)) for l, h in self.heads))
        object.__setattr__(self, "attn_layers", frozenset(int(l) for l in self.attn_layers))
        object.__setattr__(self, "mlps", frozenset(int(l) for l in self.mlps))

    @classmethod
    def everything(cls, num_layers: int, num_heads: int) -> "Ablation":
        """Every term ablated (every image then gets the mean embedding)."""
        return cls(attn_layers=frozenset(range(num_layers)), mlps=frozenset(range(num_layers)), embedding=True,
                   heads=frozenset((l, h) for l in range(num_layers) for h in range(num_heads)))

    def toggled(self, heads: Iterable[tuple[int, int]] = (), attn_layers: Iterable[int] = (),
                mlps: Iterable[int] = (), embedding: bool = False) -> "Ablation":
        """This ablation with the given terms switched: ablated ones restored, the others ablated."""
        return Ablation(heads=self.heads ^ {(int(l), int(h)) for l, h in heads},
                        attn_layers=self.attn_layers ^ {int(l) for l in attn_layers},
                        mlps=self.mlps ^ {int(l) for l in mlps}, embedding=self.embedding != bool(embedding))

    @property
    def empty(self) -> bool:
        return not (self.heads or self.attn_layers or self.mlps or self.embedding)

    def check(self, num_layers: int, num_heads: int) -> None:
        """Raise DecompositionInputError (a ValueError) naming any layer or head the model does not have."""
        bad = [f"head {p}" for p in sorted(self.heads) if not (0 <= p[0] < num_layers and 0 <= p[1] < num_heads)]
        bad += [f"attention layer {l}" for l in sorted(self.attn_layers) if not 0 <= l < num_layers]
        bad += [f"MLP {l}" for l in sorted(self.mlps) if not 0 <= l < num_layers]
        if bad:
            raise DecompositionInputError(f"Cannot ablate {', '.join(bad)}: this model has layers "
                                          f"0..{num_layers - 1} with heads 0..{num_heads - 1} each.")


@dataclass(frozen=True)
class MeanTerms:
    """Means over an image set. attn: [L, H, D] per head; mlp: [L + 1, D] (index 0 = embedding)."""

    attn: torch.Tensor
    mlp: torch.Tensor


@dataclass(frozen=True)
class AblationResult:
    """Zero-shot accuracy of K labelled images before and after an ablation.

    predictions_before / predictions_after: int64 [K] class indices; targets: int64 [K].
    """

    ablation: Ablation
    accuracy_before: float
    accuracy_after: float
    predictions_before: np.ndarray
    predictions_after: np.ndarray
    targets: np.ndarray


def mean_terms(terms: Any) -> MeanTerms:
    """Per-head and MLP means over an image set (ImageSetTerms or a Decomposition)."""
    attn = terms.head_terms()
    return MeanTerms(attn=attn.mean(0), mlp=terms.mlp.mean(0))


def ablated_embeddings(terms: Any, means: MeanTerms, ablation: Ablation) -> torch.Tensor:
    """[K, D] sum of all terms with the ablated ones replaced by their means (not re-normalised).

    terms: anything with ``head_terms()`` -> [K, L, H, D] and ``mlp`` [K, L + 1, D].
    """
    attn = terms.head_terms().clone()
    mlp = terms.mlp.clone()
    layers, heads = attn.shape[1], attn.shape[2]
    ablation.check(layers, heads)
    mean_attn, mean_mlp = means.attn.to(attn), means.mlp.to(mlp)
    if mean_attn.shape != attn.shape[1:] or mean_mlp.shape != mlp.shape[1:]:
        raise ValueError("The means were computed for another model or layout: recompute them with mean_terms() "
                         "on terms from this model.")
    for layer, head in ablation.heads:
        attn[:, layer, head] = mean_attn[layer, head]
    for layer in ablation.attn_layers:
        attn[:, layer] = mean_attn[layer]
    for layer in ablation.mlps:
        mlp[:, layer + 1] = mean_mlp[layer + 1]
    if ablation.embedding:
        mlp[:, 0] = mean_mlp[0]
    return attn.sum(dim=(1, 2)) + mlp.sum(1)


def zero_shot_logits(embeddings: torch.Tensor, label_features: torch.Tensor) -> torch.Tensor:
    """[K, T] cosine similarity of each (re-normalised) embedding with each label."""
    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return emb @ label_features.to(emb).T


def zero_shot_probs(embeddings: torch.Tensor, label_features: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """[K, T] softmax over labels of ``scale`` * cosine (CLIP's zero-shot probabilities)."""
    return torch.softmax(scale * zero_shot_logits(embeddings, label_features), dim=-1)


def zero_shot_accuracy(embeddings: torch.Tensor, label_features: torch.Tensor, targets: Sequence[int]) -> float:
    """Fraction of images whose best label is their target."""
    predicted = zero_shot_logits(embeddings, label_features).argmax(-1).cpu()
    return float((predicted == torch.as_tensor(np.asarray(targets))).float().mean())


def evaluate_ablation(terms: Any, label_features: torch.Tensor, targets: Sequence[int], ablation: Ablation,
                      means: MeanTerms | None = None) -> AblationResult:
    """Zero-shot accuracy before and after ``ablation``; means default to those of ``terms`` itself."""
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (terms.mlp.shape[0],):
        raise ValueError(f"{targets.size} targets for {terms.mlp.shape[0]} images: pass one class index per image.")
    means = mean_terms(terms) if means is None else means
    before = terms.head_terms().sum(dim=(1, 2)) + terms.mlp.sum(1)
    after = ablated_embeddings(terms, means, ablation)
    pred_before = zero_shot_logits(before, label_features).argmax(-1).cpu().numpy()
    pred_after = zero_shot_logits(after, label_features).argmax(-1).cpu().numpy()
    return AblationResult(ablation=ablation, accuracy_before=float((pred_before == targets).mean()),
                          accuracy_after=float((pred_after == targets).mean()),
                          predictions_before=pred_before, predictions_after=pred_after, targets=targets)


@dataclass(frozen=True)
class LabelledImages:
    """An image-folder dataset: ``root/<class name>/<image>``. targets index ``classes``."""

    paths: tuple[Path, ...]
    targets: np.ndarray
    classes: tuple[str, ...]


def labelled_folder(root: str | os.PathLike, max_per_class: int | None = None) -> LabelledImages:
    """Read a folder of class sub-folders (names with '_' read as spaces: 'golden_retriever')."""
    root = Path(root)
    if not root.is_dir():
        raise ImageInputError(f"{str(root)!r} is not a folder: pass a folder holding one sub-folder of images per "
                              f"class, e.g. images/cat/1.jpg, images/dog/2.jpg.")
    paths, targets, classes = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_per_class]
        if files:
            classes.append(folder.name.replace("_", " "))
            paths += files
            targets += [len(classes) - 1] * len(files)
    if len(classes) < 2:
        raise ImageInputError(f"{str(root)!r} has {len(classes)} class folder(s) with images; zero-shot accuracy "
                              f"needs at least two (root/<class>/<image>.jpg).")
    return LabelledImages(paths=tuple(paths), targets=np.asarray(targets, dtype=np.int64), classes=tuple(classes))


def folder_ablation(explainer: Any, root: str | os.PathLike, ablations: Ablation | Iterable[Ablation],
                    templates: Sequence[str] | None = None, cache_dir: str | os.PathLike | bool | None = None,
                    max_per_class: int | None = None, progress: bool = True) -> list[AblationResult]:
    """Zero-shot accuracy of a labelled image folder before and after each ablation.

    The folder's own images give the means. templates: prompt templates for the class names
    (default: the 85 of docs/algorithms.md#text-features). Per-image terms are saved and resumed (see decompose_images).
    """
    from ..text.encoding import TEMPLATES
    from .dataset_pass import decompose_images

    data = labelled_folder(root, max_per_class)
    terms = decompose_images(explainer, data.paths, cache_dir=cache_dir, progress=progress)
    labels = explainer.label_features(list(data.classes), TEMPLATES if templates is None else templates)
    means = mean_terms(terms)
    ablations = [ablations] if isinstance(ablations, Ablation) else list(ablations)
    return [evaluate_ablation(terms, labels, data.targets, a, means) for a in ablations]
