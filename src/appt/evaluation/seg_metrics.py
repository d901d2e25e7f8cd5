"""Part-segmentation scores: per-shape part IoU, instance mIoU, class mIoU, per-category IoU.

The field's protocol (PointNet/PointNet++ ShapeNetPart evaluation): a shape is scored only on the
parts of its own category; predictions are restricted to those parts (argmax over the category's
logits); a part absent from both prediction and truth counts IoU 1 (nothing to get wrong). Instance
mIoU averages the shape IoUs over all shapes; class mIoU first averages within each category, so
small categories weigh as much as big ones.

Numpy only (torch is imported with the allowed-parts mask when logits are restricted); torch
tensors are accepted (detached and moved to the CPU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from appt.errors import ConfigError, DataError

CategoryParts = Mapping[str, Sequence[int]]


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on a GPU or requiring grad
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def part_ious(pred: Any, target: Any, parts: Sequence[int]) -> np.ndarray:
    """IoU of each part of ``parts``: ``pred (N,), target (N,)`` part ids -> ``(len(parts),)``.

    A part absent from both ``pred`` and ``target`` scores 1.
    """
    pred, target = _numpy(pred).reshape(-1), _numpy(target).reshape(-1)
    if pred.shape != target.shape:
        raise DataError("part segmentation", f"pred has {pred.size} points, target has {target.size}")
    ids = np.asarray(parts).reshape(1, -1)
    in_pred, in_target = pred[:, None] == ids, target[:, None] == ids
    inter = (in_pred & in_target).sum(axis=0)
    union = (in_pred | in_target).sum(axis=0)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def part_iou(pred: Any, target: Any, parts: Sequence[int]) -> float:
    """Shape IoU: the mean over ``parts`` of :func:`part_ious` (``pred``, ``target``: ``(N,)``)."""
    return float(part_ious(pred, target, parts).mean())


def allowed_parts(category_parts: Mapping[str, Sequence[int]], num_parts: int | None = None) -> np.ndarray:
    """``(categories, num_parts)`` bool: row ``c`` marks the part ids of category ``c`` (in the
    table's order); ``num_parts`` defaults to one past the highest part id."""
    if num_parts is None:
        num_parts = 1 + max((p for parts in category_parts.values() for p in parts), default=-1)
    allowed = np.zeros((len(category_parts), num_parts), dtype=bool)
    for c, parts in enumerate(category_parts.values()):
        allowed[c, list(parts)] = True
    return allowed


def restrict_to_parts(logits: Any, parts: Sequence[int]) -> np.ndarray:
    """Part ids predicted within a category: ``logits (N, P_total)`` -> ``(N,)`` argmax over ``parts``
    (the mask of :func:`allowed_parts`, as training and predict use)."""
    logits = _numpy(logits)
    allowed = allowed_parts({"category": parts}, logits.shape[-1])[0]
    return np.where(allowed, logits, -np.inf).argmax(axis=-1)


class PartSegMeter:
    """Accumulates shape IoUs over a test set; ``compute()`` gives the field's summary.

    ``category_parts``: category name -> its part ids (ordered; a category's id is its position),
    e.g. ShapeNetPart's 16 categories / 50 parts.
    """

    def __init__(self, category_parts: CategoryParts) -> None:
        if not category_parts:
            raise ConfigError("part segmentation: category_parts is empty")
        self.names = list(category_parts)
        self.parts = [np.asarray(category_parts[name], dtype=np.int64) for name in self.names]
        self.reset()

    def reset(self) -> None:
        """Forget every shape seen so far (start a new evaluation)."""
        self.shape_iou: list[float] = []
        self.shape_category: list[int] = []
        self.correct = 0
        self.total = 0

    def _category_id(self, category: Any) -> int:
        if isinstance(category, str):
            if category not in self.names:
                raise ConfigError(f"part segmentation: unknown category {category!r}")
            return self.names.index(category)
        cid = int(category)
        if not 0 <= cid < len(self.names):
            raise ConfigError(f"part segmentation: category id {cid} outside 0..{len(self.names) - 1}")
        return cid

    def update(self, pred: Any, target: Any, category: Any) -> None:
        """Add one shape or a batch.

        One shape: ``target (N,)``, ``category`` an id or name, ``pred (N,)`` part ids or
        ``(N, P_total)`` logits. A batch: ``target (B, N)``, ``category (B,)``, ``pred (B, N)`` or
        ``(B, N, P_total)``. Logits are restricted to the category's parts; part ids are scored
        as given (an id outside the category is simply wrong).
        """
        pred, target = _numpy(pred), _numpy(target)
        if target.ndim == 1:
            pred, target, category = pred[None], target[None], [category]
        is_logits = pred.ndim == target.ndim + 1
        if pred.shape[: target.ndim] != target.shape or not (is_logits or pred.ndim == target.ndim):
            raise DataError("part segmentation", f"pred shape {pred.shape} does not match target {target.shape}")
        if not isinstance(category, (list, tuple)):
            category = _numpy(category).reshape(-1).tolist()  # ids or names -> Python scalars
        categories = list(category)
        if len(categories) != len(target):
            raise DataError("part segmentation", f"{len(categories)} categories for {len(target)} shapes")
        for shape_pred, shape_target, cat in zip(pred, target, categories):
            cid = self._category_id(cat)
            parts = self.parts[cid]
            stray = np.setdiff1d(shape_target, parts)
            if stray.size:
                raise DataError("part segmentation", f"target parts {stray.tolist()} not in category {self.names[cid]}")
            labels = restrict_to_parts(shape_pred, parts) if is_logits else shape_pred
            self.shape_iou.append(part_iou(labels, shape_target, parts))
            self.shape_category.append(cid)
            self.correct += int((labels == shape_target).sum())
            self.total += int(shape_target.size)

    def compute(self) -> dict[str, Any]:
        """Summary dict: ``instance_miou``, ``class_miou`` (over the categories seen),
        ``per_category_miou`` (name -> mean shape IoU), ``point_acc``, ``num_samples``."""
        ious, cats = np.asarray(self.shape_iou), np.asarray(self.shape_category)
        per_category = {self.names[c]: float(ious[cats == c].mean()) for c in sorted(set(self.shape_category))}
        return {
            "instance_miou": float(ious.mean()) if ious.size else 0.0,
            "class_miou": float(np.mean(list(per_category.values()))) if per_category else 0.0,
            "per_category_miou": per_category,
            "point_acc": self.correct / self.total if self.total else 0.0,
            "num_samples": int(ious.size),
        }
