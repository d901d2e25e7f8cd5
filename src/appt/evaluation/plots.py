"""PNG pictures: the confusion matrix and a point cloud coloured by its prediction.

Rendered with matplotlib's non-interactive Agg backend so they work on a headless machine.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> None:
    """Row-normalised confusion matrix ``(C, C)`` as a heat map with the counts written in."""
    plt = _pyplot()
    c = len(classes)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.45 * c + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(c), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(c), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 40:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _scatter(ax, points: np.ndarray, title: str, labels: np.ndarray | None, color_index: int, cmap) -> None:
    """Draw ``points (N, >=3)`` on a 3D axis, coloured by ``labels (N,)`` or one class colour."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    xyz = xyz - (xyz.max(0) + xyz.min(0)) / 2
    colors = cmap(np.asarray(labels) % 10) if labels is not None else [cmap(color_index % 10)]
    # Most datasets have y up; matplotlib draws z up.
    ax.scatter(xyz[:, 0], xyz[:, 2], xyz[:, 1], c=colors, s=3)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    lim = np.abs(xyz).max() or 1.0
    for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        setter(-lim, lim)


def render_cloud(
    points: np.ndarray, path: str | os.PathLike, title: str, labels: np.ndarray | None = None,
    color_index: int = 0,
) -> None:
    """Scatter ``points (N, >=3)`` in 3D; colour by per-point ``labels (N,)`` or one class colour."""
    plt = _pyplot()
    fig = plt.figure(figsize=(4, 4), dpi=100)
    _scatter(fig.add_subplot(projection="3d"), points, title, labels, color_index, plt.get_cmap("tab10"))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_part_comparison(
    shapes: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: str | os.PathLike
) -> None:
    """One row per shape ``(name, points (N, >=3), predicted parts (N,), true parts (N,))``:
    the cloud coloured by predicted parts (left) and by the true parts (right)."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    fig = plt.figure(figsize=(6, 3 * len(shapes)), dpi=100)
    for row, (name, points, pred, true) in enumerate(shapes):
        for col, (labels, what) in enumerate(((pred, "predicted"), (true, "true"))):
            ax = fig.add_subplot(len(shapes), 2, 2 * row + col + 1, projection="3d")
            _scatter(ax, points, f"{name}: {what} parts", labels, 0, cmap)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
