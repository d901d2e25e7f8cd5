"""Metrics, the metrics log, data order and the learning-rate schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from appt.training.builders import build_scheduler
from appt.training.config import config_from_dict
from appt.training.loaders import EpochShuffleSampler
from appt.evaluation.metrics import (
    MetricsLog,
    classification_summary,
    confusion_matrix,
    read_confusion_csv,
    read_metrics,
    write_confusion_csv,
)
from appt.evaluation.plots import plot_confusion, render_cloud


def test_confusion_matrix_counts_pairs_and_summary_averages_recalls() -> None:
    target = np.array([0, 0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2])
    cm = confusion_matrix(pred, target, 3)
    for t in range(3):
        for p in range(3):
            assert cm[t, p] == np.sum((target == t) & (pred == p))
    s = classification_summary(cm, ["a", "b", "c"])
    assert s["overall_acc"] == pytest.approx(5 / 7)
    assert s["mean_class_acc"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert s["per_class_acc"] == pytest.approx({"a": 0.75, "b": 0.5, "c": 1.0})


def test_absent_classes_do_not_drag_mean_class_accuracy() -> None:
    cm = confusion_matrix(np.array([1, 1]), np.array([1, 1]), 4)
    s = classification_summary(cm, list("abcd"))
    assert s["mean_class_acc"] == 1.0 and list(s["per_class_acc"]) == ["b"]


def test_confusion_csv_round_trips_and_png_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cm = confusion_matrix(rng.integers(0, 5, 200), rng.integers(0, 5, 200), 5)
    names = ["bathtub", "bed", "chair", "desk", "dresser"]
    write_confusion_csv(cm, names, tmp_path / "cm.csv")
    got_names, got = read_confusion_csv(tmp_path / "cm.csv")
    assert got_names == names and np.array_equal(got, cm)
    plot_confusion(cm, names, tmp_path / "cm.png")
    render_cloud(rng.normal(size=(100, 3)), tmp_path / "cloud.png", "chair", labels=rng.integers(0, 3, 100))
    for name in ("cm.png", "cloud.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_log_appends_json_lines(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    log.log("train_step", 1, loss=2.5)
    log.close()
    log = MetricsLog(tmp_path)  # a resumed run keeps appending
    log.log("eval_test", 2, overall_acc=0.5)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["event"], r["step"]) for r in records] == [("train_step", 1), ("eval_test", 2)]
    assert records[0]["loss"] == 2.5


def test_data_order_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochShuffleSampler(50, seed=3), EpochShuffleSampler(50, seed=3)
    a.set_epoch(2)
    torch.manual_seed(123)  # the global RNG must not matter
    b.set_epoch(2)
    order = list(a)
    assert order == list(b) and sorted(order) == list(range(50))
    b.set_epoch(3)
    assert list(b) != order
    assert list(EpochShuffleSampler(5, 0, shuffle=False)) == [0, 1, 2, 3, 4]


def test_schedule_warms_up_linearly_then_follows_cosine_to_min_lr() -> None:
    cfg = config_from_dict({"train": {"epochs": 10, "lr": 1.0, "min_lr": 0.1, "warmup_epochs": 1}})
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[4:], lrs[5:]))
    mid = 4 + 18  # half-way through the 36 cosine steps
    assert lrs[mid] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs[-1] > 0.1 and opt.param_groups[0]["lr"] == pytest.approx(0.1)
