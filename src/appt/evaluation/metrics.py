"""Accuracy figures, the confusion matrix, and the run's metrics log.

Overall accuracy (OA) is the fraction of test shapes classified right; mean class accuracy (mAcc)
averages the per-class recalls, so it is not dominated by the big classes (ModelNet10's chairs
outnumber its bathtubs 8 to 1). Part-segmentation scores live in :mod:`appt.evaluation.seg_metrics`.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N,), (N,) -> (C, C)`` int64 counts; row = true class, column = predicted class."""
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    target = np.asarray(target, dtype=np.int64).reshape(-1)
    flat = target * num_classes + pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_summary(cm: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """OA, mAcc (over classes present in the test set) and per-class accuracy from a confusion matrix."""
    total = int(cm.sum())
    support = cm.sum(1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(len(cm)), where=support > 0)
    present = support > 0
    return {
        "overall_acc": float(np.trace(cm) / total) if total else 0.0,
        "mean_class_acc": float(recall[present].mean()) if present.any() else 0.0,
        "per_class_acc": {c: float(r) for c, r, p in zip(classes, recall, present) if p},
        "num_samples": total,
    }


def write_confusion_csv(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike) -> None:
    """Confusion matrix as CSV: header ``true\\pred, <classes>``, one row per true class."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *classes])
        for name, row in zip(classes, cm):
            w.writerow([name, *(int(v) for v in row)])


def read_confusion_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Inverse of :func:`write_confusion_csv`."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    classes = rows[0][1:]
    return classes, np.array([[int(v) for v in r[1:]] for r in rows[1:]], dtype=np.int64)


class MetricsLog:
    """Append-only JSON-lines log (one object per event), mirrored to TensorBoard when installed.

    Opened in append mode so that a resumed run continues the same file.
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(self, event: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "step": step, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{event}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
