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

    def forward(self, model: nn.Module, batch: dict[str, Any], points: Tensor | None = None) -> Tensor:
        return model(batch["points"] if points is None else points)

    def loss(self, logits: Tensor, batch: dict[str, Any], smoothing: float) -> Tensor:
        return F.cross_entropy(logits.float(), batch["label"], label_smoothing=smoothing)

    def correct(self, logits: Tensor, batch: dict[str, Any]) -> tuple[Tensor, int]:
        """(number right as a 0-d tensor, number judged)."""
        return (logits.argmax(-1) == batch["label"]).sum(), batch["label"].numel()

    def outputs(self, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Per-sample tensors to gather across processes for the metrics."""
        return {"pred": logits.argmax(-1), "target": batch["label"]}


class PartSegmentationTask:
    """``points (B, N, C), category (B,) -> logits (B, N, P)``; targets ``seg (B, N)``."""

    name = "part_segmentation"
    target_key = "seg"

    def forward(self, model: nn.Module, batch: dict[str, Any], points: Tensor | None = None) -> Tensor:
        return model(batch["points"] if points is None else points, batch["category"])

    def loss(self, logits: Tensor, batch: dict[str, Any], smoothing: float) -> Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), batch["seg"].flatten(), label_smoothing=smoothing)

    def correct(self, logits: Tensor, batch: dict[str, Any]) -> tuple[Tensor, int]:
        return (logits.argmax(-1) == batch["seg"]).sum(), batch["seg"].numel()

    def outputs(self, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"pred": logits.argmax(-1), "target": batch["seg"], "category": batch["category"]}


def get_task(name: str) -> ClassificationTask | PartSegmentationTask:
    return PartSegmentationTask() if name == "part_segmentation" else ClassificationTask()


def vote_scale(points: Tensor, generator: torch.Generator) -> Tensor:
    """The field's test-time-voting augmentation: anisotropic xyz scaling in [0.85, 1.15]
    (``(B, N, C) -> (B, N, C)``; extra channels such as normals or height are left alone)."""
    b = points.shape[0]
    scale = torch.empty(b, 1, 3).uniform_(0.85, 1.15, generator=generator).to(points)
    out = points.clone()
    out[..., :3] = out[..., :3] * scale
    return out
