"""Evaluation: run a model over a loader (optionally with test-time voting) and compute the figures."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from appt.training.metrics import classification_summary, confusion_matrix, write_confusion_csv
from appt.training.plots import plot_confusion
from appt.training.seg_metrics import PartSegMeter
from appt.training.tasks import ClassificationTask, PartSegmentationTask, vote_scale


@torch.no_grad()
def collect_outputs(
    model: nn.Module, loader: Any, task: ClassificationTask | PartSegmentationTask, accelerator: Any,
    vote: int = 0, seed: int = 0, progress: bool = False, desc: str = "eval",
) -> dict[str, np.ndarray]:
    """Predictions and targets of every sample of ``loader`` (gathered across processes).

    ``vote > 0``: the logits are the mean over ``vote`` passes on randomly scaled copies of the
    clouds (the field's test-time voting), drawn from a generator seeded with ``seed``.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    gathered: dict[str, list[np.ndarray]] = defaultdict(list)
    bar = tqdm(loader, desc=desc, leave=False, disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    for batch in bar:
        with accelerator.autocast():
            if vote > 0:
                logits = torch.stack(
                    [task.forward(model, batch, vote_scale(batch["points"], generator)).float() for _ in range(vote)]
                ).mean(0)
            else:
                logits = task.forward(model, batch)
        outputs = accelerator.gather_for_metrics(task.outputs(logits, batch))
        for k, v in outputs.items():
            gathered[k].append(v.cpu().numpy())
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in gathered.items()}


def summarize(task: ClassificationTask | PartSegmentationTask, outputs: dict[str, np.ndarray],
              classes: Sequence[str]) -> dict[str, Any]:
    """The figures of one evaluation; ``main`` is what picks the best epoch (OA or instance mIoU)."""
    if isinstance(task, PartSegmentationTask):
        meter = PartSegMeter(task.category_parts)
        meter.update(outputs["pred"], outputs["target"], outputs["category"])
        out = meter.compute()
        out["main"] = out["instance_miou"]
        return out
    cm = confusion_matrix(outputs["pred"], outputs["target"], len(classes))
    out = classification_summary(cm, classes)
    out["confusion"] = cm
    out["main"] = out["overall_acc"]
    return out


def write_report(summary: dict[str, Any], classes: Sequence[str], out_dir: str | os.PathLike, title: str) -> list[Path]:
    """``metrics.json`` and, for classification, ``confusion_matrix.csv`` / ``.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json"]
    cm = summary.get("confusion")
    public = {k: v for k, v in summary.items() if k != "confusion"}
    written[0].write_text(json.dumps(public, indent=2) + "\n")
    if cm is not None:
        write_confusion_csv(cm, classes, out_dir / "confusion_matrix.csv")
        plot_confusion(cm, classes, out_dir / "confusion_matrix.png", title=title)
        written += [out_dir / "confusion_matrix.csv", out_dir / "confusion_matrix.png"]
    return written


def format_figures(summary: dict[str, Any]) -> str:
    """One line with the headline figures, in percent."""
    if "instance_miou" in summary:
        return (f"instance mIoU {100 * summary['instance_miou']:.2f} %, class mIoU {100 * summary['class_miou']:.2f} %, "
                f"point accuracy {100 * summary['point_acc']:.2f} % ({summary['num_samples']} shapes)")
    return (f"overall accuracy {100 * summary['overall_acc']:.2f} %, mean class accuracy "
            f"{100 * summary['mean_class_acc']:.2f} % ({summary['num_samples']} shapes)")


def format_per_class(summary: dict[str, Any]) -> str:
    """One line per-class accuracy (classification) or per-category mIoU (part segmentation), in %."""
    label, table = ("per class", summary.get("per_class_acc")) if "per_class_acc" in summary else \
        ("per category mIoU", summary.get("per_category_miou", {}))
    return f"{label}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in table.items())
