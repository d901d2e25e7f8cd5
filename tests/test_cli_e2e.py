"""End to end through the real ``appt`` command in subprocesses, on real ModelNet10 shapes:
train -> eval -> predict, and a run stopped mid-epoch then resumed ends bit-identical."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import DATA, MODELNET10
from safetensors.torch import load_file

from appt.cli.main import main
from appt.evaluation.metrics import read_confusion_csv, read_metrics
from appt.training.kernels import kernel_signature

PNG = b"\x89PNG\r\n\x1a\n"
CLASSES = sorted(p.name for p in MODELNET10.iterdir() if p.is_dir())


def tiny_config(folder: Path) -> Path:
    """A few-second run: tiny random point transformer, 24 train / 10 test real shapes, 256 points,
    2 epochs of 3 steps, a resumable checkpoint every 2 steps."""
    cfg = {
        "model": {
            "backbone": {"family": "point_mae", "pretrained": False, "options": {"depth": 2, "width": 64, "heads": 2}},
            "embed_dim": 32, "centers": [64, 32], "neighbors": [16, 16], "widths": [64, -1], "blocks": [1, 1],
            "head_hidden": [64],
        },
        "data": {
            "dataset": "modelnet_points", "root": str(MODELNET10), "num_points": 256, "batch_size": 8,
            "subset": 24, "test_subset": 10, "options": {"cache_dir": str(folder / "cache")},
            "train_transforms": [{"name": "scale", "low": 0.9, "high": 1.1}, "rotate"],
        },
        "train": {"epochs": 2, "lr": 1e-3, "checkpoint_every": 2, "log_every": 1},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def appt(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the ``appt`` command line as a user would (a separate Python process; ``env``: added to ours)."""
    return subprocess.run([sys.executable, "-m", "appt.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600, check=False, env={**os.environ, **env} if env else None)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    tiny_config(folder)
    return folder


@pytest.fixture(scope="module")
def trained(work: Path) -> tuple[Path, str]:
    run = work / "run"
    proc = ok(appt("train", "--config", str(work / "tiny.yaml"), "--set", f"run_dir={run}", "--no-progress"))
    return run, proc.stdout


def test_train_writes_config_metrics_checkpoints_and_reports(trained: tuple[Path, str]) -> None:
    run, stdout = trained
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["data"]["subset"] == 24
    events = read_metrics(run / "metrics.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds.count("train_step") == 6 and kinds.count("train_epoch") == 2 and kinds.count("eval_test") == 2
    assert kinds[-1] == "summary"
    for e in events:
        if e["event"] == "train_step":
            assert np.isfinite(e["loss"]) and e["lr"] > 0
    for name in ("best", "last"):
        weights = load_file(str(run / "checkpoints" / name / "appt_weights.safetensors"))
        assert weights and not any(k.startswith("backbone.") for k in weights)  # trained tensors only
        info = json.loads((run / "checkpoints" / name / "appt_data.json").read_text())
        assert info["classes"] == CLASSES
    assert (run / "checkpoints" / "resume.pt").is_file()
    summary = json.loads((run / "summary.json").read_text())
    evals = [e for e in events if e["event"] == "eval_test"]
    assert summary["last_epoch"]["overall_acc"] == evals[-1]["overall_acc"]
    assert summary["best_epoch"]["overall_acc"] == max(e["overall_acc"] for e in evals)
    assert f"trainable parameters: {summary['trainable_params']:,}" in stdout
    assert "test accuracy (last epoch 2)" in stdout and "test accuracy (best epoch" in stdout
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").rglob("*")), "temporaries left behind"


def test_eval_writes_figures_and_confusion_matrix(trained: tuple[Path, str], work: Path) -> None:
    run, _ = trained
    proc = ok(appt("eval", "--run", str(run), "--no-progress"))
    out = run / "eval" / "best"
    classes, cm = read_confusion_csv(out / "confusion_matrix.csv")
    assert classes == CLASSES and cm.sum() == 10
    assert (out / "confusion_matrix.png").read_bytes()[:8] == PNG
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall_acc"] == pytest.approx(np.trace(cm) / cm.sum())
    assert metrics["kernels"] == kernel_signature(torch.device("cpu"))  # the child inherits our environment
    summary = json.loads((run / "summary.json").read_text())
    assert metrics["overall_acc"] == pytest.approx(summary["best_epoch"]["overall_acc"])
    assert f"overall accuracy {100 * metrics['overall_acc']:.2f} %" in proc.stdout
    # The same weights named as a file, with test-time voting, into another folder (in-process:
    # the entry point is the same function, without paying the start-up of another Python).
    voted = work / "voted"
    assert main(["eval", "--weights", str(run / "checkpoints" / "last" / "appt_weights.safetensors"),
                 "--vote", "2", "--out", str(voted), "--no-progress"]) == 0
    assert json.loads((voted / "metrics.json").read_text())["vote"] == 2
    assert read_confusion_csv(voted / "confusion_matrix.csv")[1].sum() == 10


def test_predict_classifies_files_and_folders(trained: tuple[Path, str], work: Path) -> None:
    run, _ = trained
    one = MODELNET10 / "chair" / "test" / "chair_0890.pcd"
    folder = MODELNET10 / "bathtub" / "test"
    out = work / "pred"
    proc = ok(appt("predict", "--weights", str(run / "checkpoints" / "best"), str(one), str(folder),
                   "--render", "--out", str(out)))
    expected = [one, *sorted(folder.glob("*.pcd"))]
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(p) for p in expected]
    records = json.loads((out / "predictions.json").read_text())
    for row, rec in zip(rows, records):
        assert row["prediction"] == rec["label"] in CLASSES
        probs = [p for _, p in rec["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    renders = sorted((out / "renders").glob("*.png"))
    assert len(renders) == len(expected) and all(p.read_bytes()[:8] == PNG for p in renders)
    assert "chair_0890.pcd" in proc.stdout and rows[0]["prediction"] in proc.stdout


def test_run_stopped_mid_epoch_resumes_bit_identical(trained: tuple[Path, str], work: Path) -> None:
    run, _ = trained
    stopped = work / "stopped"
    # Stop after step 5 = batch 2 of epoch 2; the last resumable checkpoint is step 4 (batch 1),
    # so step 5 is redone on resume, as after a kill.
    proc = ok(appt("train", "--config", str(work / "tiny.yaml"), "--set", f"run_dir={stopped}",
                   "--set", "train.stop_after_steps=5", "--no-progress"))
    assert "stopped after step 5" in proc.stdout
    state = torch.load(stopped / "checkpoints" / "resume.pt", weights_only=True)
    assert (state["progress"]["epoch"], state["progress"]["batch"], state["progress"]["step"]) == (1, 1, 4)
    proc = ok(appt("train", "--resume", str(stopped), "--no-progress"))
    marks = [(e["event"], e["step"]) for e in read_metrics(stopped / "metrics.jsonl") if e["event"] in ("stopped", "resume")]
    assert marks == [("stopped", 5), ("resume", 4)]
    assert "kernels changed" not in proc.stdout and len(json.loads((stopped / "summary.json").read_text())["kernels"]) == 1
    for name in ("last", "best"):
        a = load_file(str(run / "checkpoints" / name / "appt_weights.safetensors"))
        b = load_file(str(stopped / "checkpoints" / name / "appt_weights.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
    first, again = json.loads((run / "summary.json").read_text()), json.loads((stopped / "summary.json").read_text())
    assert first["last_epoch"] == again["last_epoch"] and first["best_epoch"] == again["best_epoch"]


def test_resume_on_other_kernels_says_so_and_records_both(work: Path) -> None:
    """A run stopped on this CPU's kernels and resumed on torch's plain ones (``ATEN_CPU_CAPABILITY=default``,
    as on an older CPU) goes on, tells the user its bits changed, and its summary lists both sessions'."""
    run = work / "other_kernels"
    ok(appt("train", "--config", str(work / "tiny.yaml"), "--set", f"run_dir={run}",
            "--set", "train.stop_after_steps=3", "--no-progress"))
    first = torch.load(run / "checkpoints" / "resume.pt", weights_only=True)["kernels"]
    assert first == [{"device": "cpu", "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "MKL_ENABLE_INSTRUCTIONS": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
                      "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA")}]
    proc = ok(appt("train", "--resume", str(run), "--no-progress", env={"ATEN_CPU_CAPABILITY": "default"}))
    summary = json.loads((run / "summary.json").read_text())
    plain = first[0]["cpu_capability"] == "DEFAULT"  # a CPU without vector kernels: nothing changes
    assert ("kernels changed" in proc.stdout) == (not plain) == ("ATEN_CPU_CAPABILITY=avx2" in proc.stdout)
    expected = ["DEFAULT"] if plain else [first[0]["cpu_capability"], "DEFAULT"]
    assert [k["cpu_capability"] for k in summary["kernels"]] == expected
    resumed = [e for e in read_metrics(run / "metrics.jsonl") if e["event"] == "resume"]
    assert resumed[0]["kernels"]["cpu_capability"] == "DEFAULT"


def test_part_segmentation_train_eval_predict(tmp_path: Path) -> None:
    """ShapeNetPart (the real Cap shapes; their val list stands in for the missing train list),
    in-process through the same entry point: instance mIoU reported, parts predicted per point."""
    root = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    cfg = {
        "task": "part_segmentation",
        "model": {
            "backbone": {"family": "point_mae", "pretrained": False, "options": {"depth": 3, "width": 64, "heads": 2}},
            "embed_dim": 32, "centers": [64, 32], "neighbors": [16, 16], "widths": [64, -1], "blocks": [1, 1],
            "head_hidden": [64], "seg_fp_widths": [64],
        },
        "data": {"dataset": "shapenetpart", "root": str(root), "train_split": "val", "num_points": 512,
                 "batch_size": 4, "options": {"cache_dir": str(tmp_path / "cache")}},
        "train": {"epochs": 1, "lr": 3e-3, "label_smoothing": 0.0},
    }
    (tmp_path / "seg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "seg.yaml"), "--set", f"run_dir={run}", "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["last_epoch"]["instance_miou"] <= 1.0 and summary["last_epoch"]["num_samples"] == 11
    assert main(["eval", "--run", str(run), "--no-progress"]) == 0
    metrics = json.loads((run / "eval" / "best" / "metrics.json").read_text())
    assert list(metrics["per_category_miou"]) == ["Cap"]
    assert metrics["instance_miou"] == pytest.approx(summary["best_epoch"]["instance_miou"])
    assert (run / "eval" / "best" / "parts.png").read_bytes()[:8] == PNG
    files = sorted((root / "02954340").glob("*.txt"))[:3]
    out = tmp_path / "pred"
    assert main(["predict", "--weights", str(run / "checkpoints" / "best"), "--category", "Cap",
                 *map(str, files), "--render", "--out", str(out)]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert [r["path"] for r in records] == [str(f) for f in files]
    for r in records:
        assert r["label"] == "Cap" and len(r["parts"]) == 512 and set(r["parts"]) <= {6, 7}
    assert len(list((out / "renders").glob("*.png"))) == 3
    from plyfile import PlyData

    for i, (r, f) in enumerate(zip(records, files)):
        ply = PlyData.read(str(out / "parts" / f"{i:04d}_{f.stem}.ply"))["vertex"]
        assert ply.count == 512 and list(ply["label"]) == r["parts"]
        with open(out / "parts" / f"{i:04d}_{f.stem}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [int(row["part"]) for row in rows] == r["parts"]
        np.testing.assert_allclose([float(row["x"]) for row in rows], ply["x"], atol=1e-5)
