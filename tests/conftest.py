"""Shared test fixtures: the real data beside the repository, and small real clouds from it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELNET10 = DATA / "modelnet10_pcd" / "ModelNet10" / "pcd"


def load_real_clouds(count: int, split: str = "train", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` real ModelNet10 clouds ``(count, 1024, 3)`` on the unit sphere and their labels.

    Read with pypcd4 directly so core tests do not depend on appt.data.
    """
    from pypcd4 import PointCloud

    classes = sorted(p.name for p in MODELNET10.iterdir() if p.is_dir())
    files = sorted(MODELNET10.glob(f"*/{split}/*.pcd"))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), size=count, replace=False)
    clouds, labels = [], []
    for i in chosen:
        xyz = PointCloud.from_path(files[i]).numpy(("x", "y", "z")).astype(np.float32)
        xyz = xyz - xyz.mean(axis=0)
        xyz = xyz / np.linalg.norm(xyz, axis=1).max()
        clouds.append(xyz)
        labels.append(classes.index(files[i].parts[-3]))
    return torch.from_numpy(np.stack(clouds)), torch.tensor(labels)


@pytest.fixture(scope="session")
def real_clouds() -> tuple[torch.Tensor, torch.Tensor]:
    """16 real ModelNet10 training clouds (16, 1024, 3) and labels (16,)."""
    return load_real_clouds(16)


def run_blocks(backbone, x: torch.Tensor) -> torch.Tensor:
    """What APPT does with a backbone ``(B, T, D) -> (B, T, D)``: prepare the tokens, run every
    block, final norm (the backbone tests compare this with each model's own forward)."""
    x = backbone.prepare_tokens(x)
    for block in backbone.blocks:
        x = block(x)
    return backbone.final_norm(x)


def assert_frozen_without_dropout(backbone) -> None:
    """Nothing of ``backbone`` trains, each tensor has one name, and train mode computes what eval
    mode does (no dropout left inside), on tokens of width 32 (the tiny test models)."""
    assert all(not p.requires_grad for p in backbone.parameters())
    assert len(list(backbone.named_parameters(remove_duplicate=False))) == len(list(backbone.parameters()))
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        expected = run_blocks(backbone, x)
        backbone.train()
        try:
            assert torch.equal(run_blocks(backbone, x), expected)
        finally:
            backbone.eval()
