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

DATA_INFO = "appt_data.json"  # beside the weights: what `appt predict` needs besides them


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


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Trainable parameters and all buffers (BN statistics), cloned: what training changes."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    params = {n for n, _ in model.named_parameters()}
    return {
        n: t.detach().clone()
        for n, t in model.state_dict().items()
        if n in trainable or n not in params
    }


def load_trainable_state(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Copy ``state`` (from :func:`trainable_state_dict`) into ``model``; mismatch -> CheckpointError."""
    own = model.state_dict()
    missing = [n for n in trainable_state_dict(model) if n not in state]
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


def data_info(cfg: Any, classes: list[str] | None, in_channels: int) -> dict[str, Any]:
    """What ``appt predict`` needs besides the weights: class names (when known) and the test-time
    pipeline of run config ``cfg``."""
    d = cfg.data
    info: dict[str, Any] = {"task": cfg.task}
    if classes is not None:
        info["classes"] = list(classes)
    info.update({"dataset": d.dataset, "num_points": d.num_points, "test_transforms": d.test_transforms,
                 "seed": cfg.train.seed, "in_channels": in_channels, "options": d.options})
    return info


def publish_model_folder(model: Any, target: str | os.PathLike, info: dict[str, Any]) -> Path:
    """The folder ``appt predict`` / ``from_pretrained`` read: trained weights and config
    (:func:`publish_weights`) plus ``info`` as ``appt_data.json``, each file written atomically."""
    target = publish_weights(model, target)
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(target / DATA_INFO, lambda tmp: tmp.write_text(text))
    return target
