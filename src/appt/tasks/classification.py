"""Shape classification: ``points (B, N, C) -> logits (B, K)``; targets ``label (B,)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from appt.tasks.base import Prediction, Task, register_task


def balanced_class_weights(labels: Any, num_classes: int) -> Tensor:
    """``(K,)`` weights ``n / (K * n_k)`` from the train labels, so every class weighs the same in the
    loss however rare (a class absent from train gets weight 0)."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


@register_task
class ClassificationTask(Task):
    """The best epoch is the one of highest overall accuracy; ``train.balanced`` weighs the loss by
    :func:`balanced_class_weights`."""

    name = "classification"
    best_key = "overall_acc"
    best_label = "test accuracy"
    metric_name = "overall accuracy"
    class_weights: Tensor | None = None  # (K,) loss weight per class (train.balanced), else uniform

    def model_class(self, seg_model: str = "appt") -> type:
        from appt.models import APPTForClassification

        return APPTForClassification

    def data_config(self, in_channels: int) -> dict[str, int]:
        return {"num_classes": len(self.classes), "in_channels": in_channels}

    def authors_loader(self, seg_model: str | None, source: str) -> Any:
        from appt.models.authors_checkpoint import load_authors_checkpoint

        return load_authors_checkpoint

    def prepare_training(self, train: Any, dataset: Any, device: Any) -> None:
        if train.balanced:  # rare classes weigh as much as common ones
            self.class_weights = balanced_class_weights(dataset.labels, len(self.classes)).to(device)  # once

    def forward(self, model: nn.Module, batch: dict[str, Any], points: Tensor | None = None) -> Tensor:
        return model(batch["points"] if points is None else points)

    def loss(self, logits: Tensor, batch: dict[str, Any], smoothing: float) -> Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), batch["label"], weight=weight, label_smoothing=smoothing)

    def correct(self, logits: Tensor, batch: dict[str, Any]) -> tuple[Tensor, int]:
        return (logits.argmax(-1) == batch["label"]).sum(), batch["label"].numel()

    def outputs(self, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"pred": logits.argmax(-1), "target": batch["label"]}

    def scores(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        from appt.evaluation.metrics import classification_summary, confusion_matrix

        cm = confusion_matrix(outputs["pred"], outputs["target"], len(self.classes))
        out = classification_summary(cm, self.classes)
        out["confusion"] = cm
        return out

    def format_figures(self, summary: dict[str, Any]) -> str:
        return (f"overall accuracy {100 * summary['overall_acc']:.2f} %, mean class accuracy "
                f"{100 * summary['mean_class_acc']:.2f} % ({summary['num_samples']} shapes)")

    def format_per_class(self, summary: dict[str, Any]) -> str:
        return "per class: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in summary["per_class_acc"].items())

    def write_figures(self, summary: dict[str, Any], out_dir: Path, title: str, model: nn.Module,
                      dataset: Any) -> list[Path]:
        """``confusion_matrix.csv`` and ``.png``."""
        from appt.evaluation.metrics import write_confusion_csv
        from appt.evaluation.plots import plot_confusion

        cm = summary["confusion"]
        write_confusion_csv(cm, self.classes, out_dir / "confusion_matrix.csv")
        plot_confusion(cm, self.classes, out_dir / "confusion_matrix.png", title=title)
        return [out_dir / "confusion_matrix.csv", out_dir / "confusion_matrix.png"]

    def predictions(self, model: nn.Module, points: Tensor, paths: Sequence[Any], top_k: int,
                    category: int | None = None) -> list[Prediction]:
        """The ``top_k`` classes of each cloud with their probabilities."""
        probs = model(points).float().softmax(-1).cpu()
        values, idx = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        results = []
        for f, v, i in zip(paths, values, idx):
            top = [(self.classes[int(j)], float(p)) for p, j in zip(v, i)]
            results.append(Prediction(str(f), top[0][0], top[0][1], top))
        return results
