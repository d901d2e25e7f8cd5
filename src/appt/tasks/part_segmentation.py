"""Part segmentation: ``points (B, N, C), category (B,) -> logits (B, N, P)``; targets ``seg (B, N)``.

Predictions are restricted to the parts of the shape's own category (the field's protocol, see
:mod:`appt.evaluation.seg_metrics`, whose ``allowed_parts`` is the one table of which parts those
are, used for training figures, evaluation, ``appt predict`` and the metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from appt.errors import ConfigError
from appt.evaluation.seg_metrics import allowed_parts
from appt.tasks.base import Prediction, Task, register_task


def category_parts_table(names: Sequence[str], table: Mapping[str, Any] | None = None) -> dict[str, list[int]]:
    """Part ids of each category in ``names`` (ShapeNetPart's table unless one is given)."""
    from appt.data.shapenetpart import PART_RANGES

    table = table or PART_RANGES
    missing = [c for c in names if c not in table]
    if missing:
        raise ConfigError(f"part segmentation: no part table for categories {', '.join(missing)}")
    return {c: list(table[c]) for c in names}


@register_task
class PartSegmentationTask(Task):
    """``classes``: the object categories; their part ids come from :func:`category_parts_table`.
    The best epoch is the one of highest instance mIoU."""

    name = "part_segmentation"
    best_key = "instance_miou"
    best_label = "test instance mIoU"
    metric_name = "instance mIoU"

    def __init__(self, classes: Sequence[str] = ()) -> None:
        super().__init__(classes)
        self.category_parts = category_parts_table(self.classes)
        self.allowed = torch.from_numpy(allowed_parts(self.category_parts))
        self._allowed_on: dict[torch.device, Tensor] = {}  # one copy per device, not one per step

    def model_class(self, seg_model: str = "appt") -> type:
        if seg_model == "authors":
            from appt.models.authors_segmentation import AuthorsPartSegmentation

            return AuthorsPartSegmentation
        from appt.models import APPTForPartSegmentation

        return APPTForPartSegmentation

    def data_config(self, in_channels: int) -> dict[str, int]:
        return {"num_classes": self.allowed.shape[1], "num_categories": len(self.classes), "in_channels": in_channels}

    def authors_loader(self, seg_model: str | None, source: str) -> Any:
        if seg_model != "authors":
            raise ConfigError(f"{source}: the authors' segmentation weights need model.seg_model: authors (the paper preset)")
        from appt.models.authors_seg_checkpoint import load_authors_seg_checkpoint

        return load_authors_seg_checkpoint

    def allowed_on(self, device: torch.device) -> Tensor:
        """``allowed`` ``(categories, parts)`` on ``device``, copied there once."""
        if device not in self._allowed_on:
            self._allowed_on[device] = self.allowed.to(device)
        return self._allowed_on[device]

    def part_ids(self, logits: Tensor, category: Tensor) -> Tensor:
        """``(B, N, P), (B,) -> (B, N)`` part ids, argmax over the category's parts only."""
        allowed = self.allowed_on(logits.device)[category][:, None, :]
        return logits.masked_fill(~allowed, float("-inf")).argmax(-1)

    def forward(self, model: nn.Module, batch: dict[str, Any], points: Tensor | None = None) -> Tensor:
        return model(batch["points"] if points is None else points, batch["category"])

    def loss(self, logits: Tensor, batch: dict[str, Any], smoothing: float) -> Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), batch["seg"].flatten(), label_smoothing=smoothing)

    def correct(self, logits: Tensor, batch: dict[str, Any]) -> tuple[Tensor, int]:
        return (self.part_ids(logits, batch["category"]) == batch["seg"]).sum(), batch["seg"].numel()

    def outputs(self, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"pred": self.part_ids(logits, batch["category"]), "target": batch["seg"],
                "category": batch["category"]}

    def scores(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        from appt.evaluation.seg_metrics import PartSegMeter

        meter = PartSegMeter(self.category_parts)
        meter.update(outputs["pred"], outputs["target"], outputs["category"])
        return meter.compute()

    def format_figures(self, summary: dict[str, Any]) -> str:
        return (f"instance mIoU {100 * summary['instance_miou']:.2f} %, class mIoU {100 * summary['class_miou']:.2f} %, "
                f"point accuracy {100 * summary['point_acc']:.2f} % ({summary['num_samples']} shapes)")

    def format_per_class(self, summary: dict[str, Any]) -> str:
        return "per category mIoU: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in summary["per_category_miou"].items())

    @torch.no_grad()
    def write_figures(self, summary: dict[str, Any], out_dir: Path, title: str, model: nn.Module,
                      dataset: Any, count: int = 4) -> list[Path]:
        """``parts.png``: the first ``count`` shapes of ``dataset`` coloured by predicted and by true parts."""
        from appt.data import collate
        from appt.evaluation.plots import render_part_comparison

        batch = collate([dataset[i] for i in range(min(count, len(dataset)))])
        device = next(model.parameters()).device
        on_device = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        model.eval()
        pred = self.part_ids(self.forward(model, on_device), on_device["category"]).cpu().numpy()
        shapes = [(Path(name).stem, pts.numpy(), p, true.numpy())
                  for name, pts, p, true in zip(batch["path"], batch["points"], pred, batch["seg"])]
        render_part_comparison(shapes, out_dir / "parts.png")
        return [out_dir / "parts.png"]

    def predict_category(self, name: str | None) -> int | None:
        if name not in self.classes:
            raise ConfigError(f"--category: give one of {', '.join(self.classes)} for part segmentation")
        return self.classes.index(name)

    def predictions(self, model: nn.Module, points: Tensor, paths: Sequence[Any], top_k: int,
                    category: int | None = None) -> list[Prediction]:
        """The part of every point, among the parts of ``category``, and its mean probability."""
        cats = torch.full((len(points),), category, dtype=torch.long, device=points.device)
        logits = model(points, cats).float().masked_fill(~self.allowed_on(points.device)[category], float("-inf"))
        results = []
        for f, p in zip(paths, logits.softmax(-1).cpu()):
            conf, part = p.max(-1)
            results.append(Prediction(str(f), self.classes[category], float(conf.mean()), parts=part.tolist()))
        return results
