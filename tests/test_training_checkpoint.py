"""Checkpoint files: atomic replacement survives a kill mid-write; resumable state round-trips."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from appt.errors import CheckpointError
from appt.fileio import atomic_write
from appt.models.io import trained_state_dict
from appt.training.checkpoint import (
    load_trained_state,
    load_training_state,
    remove_stale_temps,
    save_training_state,
)


def test_kill_while_writing_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "resume.pt"
    save_training_state(target, {"step": 1, "w": torch.arange(4.0)})
    before = target.read_bytes()
    # A separate process starts replacing the file, writes half of it, and is SIGKILLed.
    script = textwrap.dedent(f"""
        import os, signal
        from appt.fileio import atomic_write
        def half(tmp):
            with open(tmp, "wb") as f:
                f.write(b"partial checkpoint bytes")
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(target)!r}, half)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == before
    assert load_training_state(target)["step"] == 1
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert leftovers, "the killed writer should have left its temporary file"
    remove_stale_temps(tmp_path)
    assert list(tmp_path.iterdir()) == [target]


def test_failed_write_raises_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"good")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"bad")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"good"
    assert list(tmp_path.iterdir()) == [target]


def test_unreadable_or_missing_state_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no resumable checkpoint"):
        load_training_state(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_training_state(tmp_path / "junk.pt")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
        self.backbone.requires_grad_(False)
        self.backbone[1].requires_grad_(True)  # a backbone tensor that trains (as lora / full_finetune)
        self.head = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(3)


def test_resume_state_holds_what_a_checkpoint_holds_and_loads_back() -> None:
    model = Tiny()
    state = trained_state_dict(model)  # one definition for weights folders and resume.pt
    assert set(state) == {"backbone.1.weight", "backbone.1.bias", "head.weight", "head.bias", "bn.weight",
                          "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    other = Tiny()
    load_trained_state(other, state, "x")
    for k, v in state.items():
        assert torch.equal(other.state_dict()[k], v)
    state["head.weight"] = torch.zeros(5, 3)
    with pytest.raises(CheckpointError, match="wrongly shaped"):
        load_trained_state(other, state, "x")
    del state["head.weight"]
    with pytest.raises(CheckpointError, match="1 missing"):
        load_trained_state(other, state, "x")
