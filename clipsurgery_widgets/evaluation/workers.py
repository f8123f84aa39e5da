"""Models and tasks as plain, picklable recipes, so any process (a Ray actor too) can rebuild them.

``ModelSpec`` names a model (name, pretrained tag, checkpoint, device) or holds a loaded one;
``TaskFactory()`` builds the task from its settings, loads the model and calls ``prepare`` once:
it is what ``ray_engine.run_items(task_factory, items, num_workers)`` calls once per actor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .tasks import Task, make_task


@dataclass
class ModelSpec:
    """How to obtain the model: ``name`` (+ pretrained / checkpoint / device) or an already ``loaded`` one."""

    name: str | None = None
    pretrained: str | None = "openai"
    checkpoint: str | None = None
    device: str | None = None
    trust_checkpoint: bool = False
    loaded: Any = field(default=None, repr=False)

    @classmethod
    def from_argument(cls, model: Any, pretrained: str | None = "openai", checkpoint: Any = None,
                      device: str | None = None, trust_checkpoint: bool = False) -> "ModelSpec":
        """A model name (str) or a LoadedModel / open_clip CLIP object -> spec."""
        if isinstance(model, str):
            pretrained = None if model.startswith("tiny-random-") or (pretrained or "").lower() in ("", "none") \
                else pretrained
            return cls(name=model, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None,
                       device=device, trust_checkpoint=trust_checkpoint)
        if model is None:
            raise ValueError("No model given; pass model='ViT-B-16' (a name) or a model from load_model(...).")
        from ..engine.loading import load_model

        loaded = model if hasattr(model, "fingerprint") else load_model(model)
        return cls(name=loaded.name, pretrained=loaded.pretrained, loaded=loaded)

    def identity(self) -> dict:
        """What identifies the weights, for the manifest (fingerprint once known)."""
        fingerprint = getattr(self.loaded, "fingerprint", None)
        return {"name": self.name, "pretrained": self.pretrained, "checkpoint": self.checkpoint,
                **({"fingerprint": fingerprint} if fingerprint else {})}

    def load(self) -> Any:
        """The LoadedModel (loaded once, then kept)."""
        if self.loaded is None:
            from ..engine.loading import load_model

            self.loaded = load_model(self.name, pretrained=self.pretrained, device=self.device,
                                     checkpoint=self.checkpoint, trust_checkpoint=self.trust_checkpoint)
        return self.loaded

    def portable(self) -> "ModelSpec":
        """A copy cheap to send to another process: tiny models and named weights travel by name."""
        if self.loaded is not None and str(self.name).startswith("tiny-random-"):
            return ModelSpec(name=self.name, pretrained=None, device="cpu")
        if self.loaded is not None and self.name not in (None, "custom") and self.pretrained and self.checkpoint is None \
                and not str(self.pretrained).startswith(("/", ".")):
            return ModelSpec(name=self.name, pretrained=self.pretrained, device=self.device)
        return self


@dataclass
class TaskFactory:
    """Callable building a prepared task in the current process: make_task, load the model, prepare."""

    task_name: str
    task_settings: dict
    model: ModelSpec
    precision: str = "fp32"  # every engine call of the worker's items runs in it

    def __call__(self) -> Task:
        task = make_task(self.task_name, **self.task_settings)
        task.prepare(self.model.load())
        return task
