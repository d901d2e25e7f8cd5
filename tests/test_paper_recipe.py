"""The paper presets' recipe: the authors' optimiser, schedule and ScanObjectNN input pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import DATA

from appt.training.builders import build_data, build_optimizer, build_scheduler
from appt.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
SCAN = REPO / "configs" / "scanobjectnn_pb_t50_rs_vit_b16_paper.yaml"


def step_lrs(config: Path, overrides: list[str], steps_per_epoch: int, epochs: int) -> list[float]:
    """The lr of every step, the scheduler stepped once per step as the engine does."""
    cfg = load_config(config, overrides)
    optimizer = build_optimizer(torch.nn.Linear(2, 2), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def lrs_of(config: Path, overrides: list[str], steps_per_epoch: int, epochs: int) -> list[float]:
    """The lr of the first step of every epoch."""
    return step_lrs(config, overrides, steps_per_epoch, epochs)[::steps_per_epoch]


def test_scanobjectnn_schedule_is_timms_cosine_over_200_epochs_then_flat() -> None:
    """The engine steps the scheduler every step; the lr still changes once per epoch."""
    per_step = step_lrs(SCAN, [], 3, 300)
    assert all(len(set(per_step[3 * e : 3 * e + 3])) == 1 for e in range(300))
    expected = [1e-4 + 0.5 * 4e-4 * (1 + math.cos(math.pi * e / 200)) if e < 200 else 1e-4 for e in range(300)]
    np.testing.assert_allclose(lrs_of(SCAN, [], 3, 300), expected, rtol=1e-9)


def test_shapenetpart_schedule_halves_every_40_epochs_never_below_its_floor() -> None:
    config = REPO / "configs" / "shapenetpart_vit_b16_paper.yaml"
    lrs = lrs_of(config, [], 2, 350)
    np.testing.assert_allclose(lrs[:81:40], [3e-3, 1.5e-3, 7.5e-4])
    assert lrs[39] == 3e-3 and lrs[-1] == pytest.approx(3e-3 / 2**8)  # 349 // 40 = 8 halvings
    assert lrs_of(config, ["train.min_lr=1e-4"], 2, 350)[-1] == pytest.approx(1e-4)


def test_paper_optimiser_decays_every_tensor_with_adam_eps_1e_4() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    paper = build_optimizer(model, load_config(SCAN))
    assert len(paper.param_groups) == 1 and paper.param_groups[0]["weight_decay"] == 0.01
    assert paper.param_groups[0]["eps"] == 1e-4
    default = build_optimizer(model, load_config(REPO / "configs" / "scanobjectnn_pb_t50_rs_vit_b16.yaml"))
    assert [g["weight_decay"] for g in default.param_groups] == [0.01, 0.0] and default.param_groups[0]["eps"] == 1e-8


def test_paper_label_smoothing_matches_their_wrong_class_mass() -> None:
    """Their loss puts 0.8 on the true class and 0.2 / (C - 1) on each other one."""
    eps = load_config(SCAN).train.label_smoothing
    logits, label = torch.randn(1, 15), torch.tensor([3])
    target = torch.full((1, 15), 0.2 / 14)
    target[0, 3] = 0.8
    theirs = -(target * logits.log_softmax(-1)).sum()
    torch.testing.assert_close(torch.nn.functional.cross_entropy(logits, label, label_smoothing=eps), theirs)


@pytest.fixture(scope="module")
def scan_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ScanObjectNN ``h5_files`` (PB_T50_RS file names) holding real bench shapes of 2,048 points."""
    shapes = np.load(DATA / "modelnet40_bench_all193.npz")["points"][:4, :2048, :3].astype(np.float32)
    root = tmp_path_factory.mktemp("scan") / "h5_files"
    (root / "main_split").mkdir(parents=True)
    for split in ("training", "test"):
        with h5py.File(root / "main_split" / f"{split}_objectdataset_augmentedrot_scale75.h5", "w") as f:
            f["data"] = shapes * 3.0  # not unit-sized: normalisation must happen in the pipeline
            f["label"] = np.arange(4, dtype=np.int64)
            f["mask"] = np.ones(shapes.shape[:2], dtype=np.int64)
    return root


def test_scanobjectnn_paper_input_is_xyz_plus_height_from_1024_of_1200_fps_points(scan_root: Path, tmp_path: Path) -> None:
    cfg = load_config(SCAN, [f"data.root={scan_root}", f"data.options.cache_dir={tmp_path}"])
    data = build_data(cfg)
    assert data.in_channels == 4
    first, later = data.train[0]["points"], None
    data.train.set_epoch(1)
    later = data.train[0]["points"]
    for pts in (first, later):
        assert pts.shape == (1024, 4)
        torch.testing.assert_close(pts[:, 3], pts[:, 1] - pts[:, 1].min())
        assert pts[:, :3].norm(dim=1).max() <= 1.0 + 1e-5
    assert not torch.equal(first, later)  # a new draw (and augmentation) each epoch
    test = data.test[0]["points"]
    assert test.shape == (1024, 4) and torch.equal(test, data.test[0]["points"])  # deterministic FPS
    torch.testing.assert_close(test[:, :3].norm(dim=1).max(), torch.tensor(1.0))
