"""What differs between classification and part segmentation, so the engine has one loop.

A task knows how to call the model on a batch, the loss, how to count correct predictions for the
progress bar, and which tensors to collect for the final metrics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class ClassificationTask:
    """``points (B, N, C) -> logits (B, K)``; targets ``label (B,)``."""

    name = "classification"
    target_key = "label"
    class_weights: Tensor | None = None  # (K,) loss weight per class (train.balanced), else uniform

    def forward(self, model: nn.Module, batch: dict[str, Any], points: Tensor | None = None) -> Tensor:
        return model(batch["points"] if points is None else points)

    def loss(self, logits: Tensor, batch: dict[str, Any], smoothing: float) -> Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), batch["label"], weight=weight, label_smoothing=smoothing)

    def correct(self, logits: Tensor, batch: dict[str, Any]) -> tuple[Tensor, int]:
        """(number right as a 0-d tensor, number judged)."""
        return (logits.argmax(-1) == batch["label"]).sum(), batch["label"].numel()

    def outputs(self, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Per-sample tensors to gather across processes for the metrics."""
        return {"pred": logits.argmax(-1), "target": batch["label"]}


class PartSegmentationTask:
    """``points (B, N, C), category (B,) -> logits (B, N, P)``; targets ``seg (B, N)``.

    ``category_parts``: category name -> its part ids; predictions are restricted to the parts of
    the shape's own category (the field's protocol, see :mod:`appt.training.seg_metrics`).
    """

    name = "part_segmentation"
    target_key = "seg"

    def __init__(self, category_parts: dict[str, list[int]]) -> None:
        self.category_parts = dict(category_parts)
        num_parts = 1 + max(p for parts in self.category_parts.values() for p in parts)
        self.allowed = torch.zeros(len(self.category_parts), num_parts, dtype=torch.bool)
        for c, parts in enumerate(self.category_parts.values()):
            self.allowed[c, list(parts)] = True
        self._allowed_on: dict[torch.device, Tensor] = {}  # one copy per device, not one per step

    def allowed_on(self, device: torch.device) -> Tensor:
        """``allowed`` ``(categories, parts)`` on ``device``, copied there once."""
        if device not in self._allowed_on:
            self._allowed_on[device] = self.allowed.to(device)
        return self._allowed_on[device]

    def forward(self, model: nn.Module, batch: dict[str, Any], points: Tensor | None = None) -> Tensor:
        return model(batch["points"] if points is None else points, batch["category"])

    def loss(self, logits: Tensor, batch: dict[str, Any], smoothing: float) -> Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), batch["seg"].flatten(), label_smoothing=smoothing)

    def predict(self, logits: Tensor, category: Tensor) -> Tensor:
        """``(B, N, P), (B,) -> (B, N)`` part ids, argmax over the category's parts only."""
        allowed = self.allowed_on(logits.device)[category][:, None, :]
        return logits.masked_fill(~allowed, float("-inf")).argmax(-1)

    def correct(self, logits: Tensor, batch: dict[str, Any]) -> tuple[Tensor, int]:
        return (self.predict(logits, batch["category"]) == batch["seg"]).sum(), batch["seg"].numel()

    def outputs(self, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"pred": self.predict(logits, batch["category"]), "target": batch["seg"],
                "category": batch["category"]}


def balanced_class_weights(labels: Any, num_classes: int) -> Tensor:
    """``(K,)`` weights ``n / (K * n_k)`` from the train labels, so every class weighs the same in the
    loss however rare (a class absent from train gets weight 0)."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def get_task(name: str, category_parts: dict[str, list[int]] | None = None) -> ClassificationTask | PartSegmentationTask:
    """The task of a config; part segmentation needs the category -> parts table."""
    if name == "part_segmentation":
        return PartSegmentationTask(category_parts or {})
    return ClassificationTask()


def vote_scale(points: Tensor, generator: torch.Generator) -> Tensor:
    """The field's test-time-voting augmentation: anisotropic xyz scaling in [0.85, 1.15]
    (``(B, N, C) -> (B, N, C)``; extra channels such as normals or height are left alone)."""
    b = points.shape[0]
    scale = torch.empty(b, 1, 3).uniform_(0.85, 1.15, generator=generator).to(points)
    out = points.clone()
    out[..., :3] = out[..., :3] * scale
    return out
