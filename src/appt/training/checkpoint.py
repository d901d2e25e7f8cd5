"""Checkpoints that survive being killed: atomic file replacement and the resumable training state.

Two kinds of files live in ``RUN_DIR/checkpoints/``:
  - ``last/`` and ``best/``: the trained weights only, as written by the model's
    ``save_pretrained`` (safetensors + JSON config) — what ``appt eval`` / ``appt predict`` load;
  - ``resume.pt``: everything ``--resume`` needs to continue bit-identically (trainable weights and
    buffers, optimizer, scheduler, position in the epoch, running sums, best-so-far).
Every file is written to a temporary name in the same folder, flushed to disk, then moved over the
old one with ``os.replace`` (atomic on POSIX), so a crash while writing leaves the previous good
file in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from appt.errors import CheckpointError
from appt.fileio import TMP_MARK, atomic_write, fsync
from appt.models.io import DATA_INFO, trained_state_dict


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Delete temporaries left by a process killed while writing (never a finished file)."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.rglob(f"*{TMP_MARK}*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def publish_weights(model: Any, target: str | os.PathLike) -> Path:
    """``model.save_pretrained`` into a scratch folder, then move each file atomically into ``target``.

    The JSON config is identical across a run's saves, so per-file atomicity is enough: the weights
    file in ``target`` is always a complete one.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_MARK}", dir=target.parent))
    try:
        model.save_pretrained(scratch)
        for f in sorted(scratch.iterdir(), key=lambda p: p.suffix == ".safetensors"):
            fsync(f)
            os.replace(f, target / f.name)
        fsync(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def load_trained_state(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Copy ``state`` (from :func:`~appt.models.io.trained_state_dict`) into ``model``; mismatch ->
    CheckpointError."""
    own = model.state_dict()
    missing = [n for n in trained_state_dict(model) if n not in state]
    unknown = [n for n in state if n not in own]
    bad = [n for n in state if n in own and own[n].shape != state[n].shape]
    if missing or unknown or bad:
        first = (missing or unknown or bad)[0]
        raise CheckpointError(
            f"{source}: does not fit this model ({len(missing)} missing, {len(unknown)} unknown, "
            f"{len(bad)} wrongly shaped tensors, e.g. {first!r})"
        )
    with torch.no_grad():
        for n, t in state.items():
            own[n].copy_(t)


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically write the resumable state (tensors, numbers, strings, nested dicts/lists)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read :func:`save_training_state`'s file (no pickled code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no resumable checkpoint (was the run started with appt train?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None


def data_info(cfg: Any, data: Any, in_channels: int) -> dict[str, Any]:
    """What ``appt predict`` needs besides the weights to rebuild the test-time pipeline of run config
    ``cfg`` exactly: class names (when known), points, preparation options, test transforms, seed,
    channels, and what the dataset layout decided rather than the config: the gravity axis
    (``up_axis``, used by the height channel and rotations) and, for meshes, ``mesh_points``.

    ``data``: the run's :class:`~appt.training.builders.DataBundle`, or ``None`` when the data is not
    at hand (``appt convert``); the layout's choices are then known only if the config sets them.
    """
    from appt.data.cloud import axis_index

    d = cfg.data
    info: dict[str, Any] = {"task": cfg.task}
    if data is not None:
        info["classes"] = list(data.classes)
    info.update({"dataset": d.dataset, "num_points": d.num_points, "test_transforms": d.test_transforms,
                 "seed": cfg.train.seed, "in_channels": in_channels, "options": d.options})
    test = data.test if data is not None else None
    up_axis = test.up_axis if test is not None else d.options.get("up_axis")
    if up_axis is not None:
        info["up_axis"] = axis_index(up_axis)
    mesh_points = getattr(test, "mesh_points", d.options.get("mesh_points"))
    if mesh_points is not None:
        info["mesh_points"] = int(mesh_points)
    return info


def publish_model_folder(model: Any, target: str | os.PathLike, info: dict[str, Any]) -> Path:
    """The folder ``appt predict`` / ``from_pretrained`` read: trained weights and config
    (:func:`publish_weights`) plus ``info`` as ``appt_data.json``, each file written atomically."""
    target = publish_weights(model, target)
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(target / DATA_INFO, lambda tmp: tmp.write_text(text))
    return target
