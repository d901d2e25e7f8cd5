"""The task protocol and its registry.

A task knows how to call the model on a batch, the loss, how to count correct predictions for the
progress bar, which tensors to collect for the final metrics, the figures of an evaluation (and
the one of them that picks the best epoch), the report lines, and the result of predicting files.
Batches are the collated samples of :mod:`appt.data` (``points (B, N, C)`` plus the targets).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from torch import Tensor, nn

from appt.errors import ConfigError

TASKS: dict[str, type[Task]] = {}  # name -> task class, filled by @register_task at import


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` the task of ``task: <cls.name>`` in run configs."""
    TASKS[cls.name] = cls
    return cls


def get_task(name: str, classes: Sequence[str] = ()) -> Task:
    """The task called ``name`` for a dataset with these class names (object categories for part
    segmentation); an unknown name -> ConfigError naming the known ones."""
    if name not in TASKS:
        raise ConfigError(f"task={name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name](classes)


@dataclass
class Prediction:
    """One file's result. Part segmentation fills ``parts`` (per-point part ids)."""

    path: str
    label: str
    confidence: float
    top: list[tuple[str, float]] = field(default_factory=list)
    parts: list[int] | None = None


class Task(ABC):
    """One task: ``name`` in configs; ``best_key`` the figure of :meth:`summarize` that picks the
    best epoch (copied to ``main``), ``best_label`` its name in the end-of-run lines and
    ``metric_name`` in reports; ``category_parts`` (tasks over object parts only): category name ->
    its part ids."""

    name: ClassVar[str]
    best_key: ClassVar[str]
    best_label: ClassVar[str]
    metric_name: ClassVar[str]
    category_parts: dict[str, list[int]] | None = None

    def __init__(self, classes: Sequence[str] = ()) -> None:
        self.classes = list(classes)

    # building ---------------------------------------------------------------------------------

    @abstractmethod
    def model_class(self, seg_model: str = "appt") -> type:
        """The model class to build (imported here, so ``import appt.tasks`` stays light)."""

    @abstractmethod
    def data_config(self, in_channels: int) -> dict[str, int]:
        """The ``APPTConfig`` fields the data decides (class count, input channels, ...)."""

    def authors_loader(self, seg_model: str | None, source: str) -> Any:
        """``load(model, path)`` for the authors' checkpoint of this task (``appt convert``)."""
        raise ConfigError(f"{source}: no authors' checkpoints for task {self.name}")

    def prepare_training(self, train: Any, dataset: Any, device: Any) -> None:
        """Hook before training (``train``: the config's train section; ``dataset``: the train split)."""

    # training and evaluation ------------------------------------------------------------------

    @abstractmethod
    def forward(self, model: nn.Module, batch: dict[str, Any], points: Tensor | None = None) -> Tensor:
        """The logits of ``batch`` (or of ``points`` in its place, e.g. a voting copy)."""

    @abstractmethod
    def loss(self, logits: Tensor, batch: dict[str, Any], smoothing: float) -> Tensor:
        """The training loss (0-d)."""

    @abstractmethod
    def correct(self, logits: Tensor, batch: dict[str, Any]) -> tuple[Tensor, int]:
        """(number right as a 0-d tensor, number judged), for the progress bar."""

    @abstractmethod
    def outputs(self, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Per-sample tensors to gather across processes for :meth:`summarize`."""

    @abstractmethod
    def scores(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """The figures of one evaluation from the gathered :meth:`outputs`."""

    def summarize(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """:meth:`scores` plus ``main``, the figure that picks the best epoch."""
        out = self.scores(outputs)
        out["main"] = out[self.best_key]
        return out

    @abstractmethod
    def format_figures(self, summary: dict[str, Any]) -> str:
        """One line with the headline figures, in percent."""

    @abstractmethod
    def format_per_class(self, summary: dict[str, Any]) -> str:
        """One line of per-class (or per-category) figures, in percent."""

    def write_figures(self, summary: dict[str, Any], out_dir: Path, title: str, model: nn.Module,
                      dataset: Any) -> list[Path]:
        """Files beside ``metrics.json`` in an evaluation folder (confusion matrix, renders)."""
        return []

    # prediction -------------------------------------------------------------------------------

    def predict_category(self, name: str | None) -> int | None:
        """The category index ``appt predict --category`` names, for tasks that need one."""
        return None

    @abstractmethod
    def predictions(self, model: nn.Module, points: Tensor, paths: Sequence[Any], top_k: int,
                    category: int | None = None) -> list[Prediction]:
        """One :class:`Prediction` per cloud of ``points (B, N, C)`` (on the model's device)."""
