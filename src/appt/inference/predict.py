"""Classifying (or part-labelling) a user's own files with trained weights.

Each file goes through the same preparation as the test split the model was evaluated on (mesh
sampling, FPS to ``num_points``, centring and unit-sphere scaling, the test transforms, the channels
it was trained with, the height along the layout's gravity axis), read from ``appt_data.json``
beside the weights (:func:`appt.training.checkpoint.data_info` writes it).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from appt.errors import ConfigError, DataError
from appt.tasks import Prediction, Task


def collect_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The files named, plus every supported file under the folders named (sorted, recursive)."""
    from appt.data import SUPPORTED_FORMATS

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_FORMATS)
            if not found:
                raise DataError(p, f"folder holds no point-cloud files ({' '.join(SUPPORTED_FORMATS)})")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise DataError(p, "file not found")
    return files


def prepare_files(files: Sequence[Path], info: dict[str, Any], in_channels: int,
                  min_points: int = 1) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Read and prepare every file: ``-> points (F, N, C)`` and the prepared xyz for rendering.

    ``info`` is ``appt_data.json``; weights saved before it recorded ``up_axis`` get the axis of
    ``options`` or y, as then. Unreadable files, and files with fewer distinct points than
    ``min_points`` (the neighbours the model's first stage groups: fewer cannot describe a shape),
    raise :class:`DataError` before any model work is done.
    """
    from appt.data import Preparation, build_transforms, read_points
    from appt.data.cloud import axis_index
    from appt.data.warm import too_few

    options = info.get("options", {})
    prep = Preparation.from_options(int(info.get("num_points") or 1024), options)
    if prep.channels != in_channels:
        raise ConfigError(f"the model takes {in_channels} input channels but its data settings give {prep.channels}")
    transforms = build_transforms(info.get("test_transforms") or [])
    seed = int(info.get("seed", 0))
    up_axis = axis_index(info.get("up_axis", options.get("up_axis", 1)))
    mesh = {"mesh_points": int(info["mesh_points"])} if "mesh_points" in info else {}
    clouds = []
    for i, f in enumerate(files):
        raw = read_points(f, **mesh).replace(up_axis=up_axis)
        problem = too_few(raw.xyz, min_points)
        if problem is not None:
            raise DataError(f, problem)
        cloud = prep.fixed(raw)
        clouds.append(prep.finish(cloud, np.random.default_rng([seed, 0, i]), transforms, str(f))["points"])
    return torch.from_numpy(np.stack(clouds)), [c[:, :3] for c in clouds]


@torch.no_grad()
def run_model(model: nn.Module, task: Task, points: torch.Tensor, files: Sequence[Path], batch_size: int,
              top_k: int, category: int | None = None) -> list[Prediction]:
    """Batched inference; what each file gets is the task's (:meth:`appt.tasks.Task.predictions`:
    classification the ``top_k`` classes, part segmentation the part of every point among the parts
    of ``category``)."""
    model.eval()
    device = next(model.parameters()).device
    results: list[Prediction] = []
    for start in range(0, len(points), batch_size):
        batch = points[start : start + batch_size].to(device)
        results += task.predictions(model, batch, files[start : start + batch_size], top_k, category)
    return results


def write_predictions(results: Sequence[Prediction], out_dir: Path) -> list[Path]:
    """``predictions.csv`` (one row per file) and ``predictions.json`` (everything, parts included)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "predictions.csv", out_dir / "predictions.json"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "prediction", "confidence", "top"])
        for r in results:
            w.writerow([r.path, r.label, f"{r.confidence:.4f}", " ".join(f"{n}:{p:.4f}" for n, p in r.top)])
    json_path.write_text(json.dumps([r.__dict__ for r in results], indent=1) + "\n")
    return [csv_path, json_path]


def write_part_labels(results: Sequence[Prediction], xyz: Sequence[np.ndarray], out_dir: Path) -> list[Path]:
    """Per-point part labels of each segmented file: ``<i>_<name>.ply`` (vertices x, y, z with an
    integer ``label`` property, readable by CloudCompare/MeshLab/plyfile) and ``.csv`` (x, y, z, part)."""
    from plyfile import PlyData, PlyElement

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (r, pts) in enumerate(zip(results, xyz)):
        if r.parts is None:
            continue
        stem = out_dir / f"{i:04d}_{Path(r.path).stem}"
        vertex = np.empty(len(pts), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("label", "i4")])
        vertex["x"], vertex["y"], vertex["z"] = (pts[:, j] for j in range(3))
        vertex["label"] = r.parts
        PlyData([PlyElement.describe(vertex, "vertex")]).write(str(stem.with_suffix(".ply")))
        with open(stem.with_suffix(".csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["x", "y", "z", "part"])
            w.writerows([f"{a:.6f}", f"{b:.6f}", f"{c:.6f}", int(p)] for (a, b, c), p in zip(pts[:, :3], r.parts))
        written += [stem.with_suffix(".ply"), stem.with_suffix(".csv")]
    return written


def render_predictions(results: Sequence[Prediction], xyz: Sequence[np.ndarray], classes: Sequence[str],
                       out_dir: Path) -> list[Path]:
    """One PNG per file: the prepared cloud coloured by its predicted class (or per-point part)."""
    from appt.evaluation.plots import render_cloud

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (r, pts) in enumerate(zip(results, xyz)):
        path = out_dir / f"{i:04d}_{Path(r.path).stem}.png"
        labels = None if r.parts is None else np.asarray(r.parts)
        title = f"{Path(r.path).name}: {r.label} ({100 * r.confidence:.0f} %)"
        render_cloud(pts, path, title, labels=labels, color_index=list(classes).index(r.label))
        written.append(path)
    return written


def format_predictions(results: Sequence[Prediction]) -> str:
    """A plain-text table: file, prediction, confidence (and the runner-up classes)."""
    width = max([len(Path(r.path).name) for r in results] + [4])
    lines = [f"{'file':<{width}}  {'prediction':<14} {'confidence':>10}  others"]
    for r in results:
        others = ", ".join(f"{n} {100 * p:.1f}%" for n, p in r.top[1:])
        if r.parts is not None:
            others = "parts " + " ".join(f"{k}:{v}" for k, v in zip(*np.unique(r.parts, return_counts=True)))
        lines.append(f"{Path(r.path).name:<{width}}  {r.label:<14} {100 * r.confidence:>9.1f}%  {others}")
    return "\n".join(lines)
