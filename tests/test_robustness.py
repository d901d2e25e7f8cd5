"""Corruption-robustness evaluation: corrupted test copies, the report's scores (ModelNet-C mCE / RmCE),
and the CLI end to end."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import DATA
from test_cli_e2e import appt, ok, tiny_config

from appt.data import build_dataset
from appt.errors import ConfigError
from appt.training.config import load_config
from appt.evaluation.robustness import (
    MODELNET_C_DGCNN_CLEAN_ERROR,
    MODELNET_C_DGCNN_ERROR,
    CorruptedDataset,
    corruption_error,
    mean_corruption_error,
    relative_corruption_error,
    relative_mean_corruption_error,
    robustness_summary,
)

PNG = b"\x89PNG\r\n\x1a\n"
SRC = Path(__file__).resolve().parents[1] / "src"
SHAPENET = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal"


@pytest.fixture(scope="module")
def caps():
    return build_dataset("shapenetpart", SHAPENET, split="test", num_points=512, seed=0)


def test_corrupted_copies_are_seeded_per_sample_and_keep_part_labels_on_their_points(caps):
    a = CorruptedDataset(caps, "dropout_global", 3, seed=0)
    b = CorruptedDataset(caps, "dropout_global", 3, seed=0)
    c = CorruptedDataset(caps, "dropout_global", 3, seed=1)
    assert torch.equal(a[0]["points"], b[0]["points"])
    assert not torch.equal(a[0]["points"], c[0]["points"])
    clean = caps[0]
    out = a[0]
    assert out["points"].shape[0] < clean["points"].shape[0] and out["points"].dtype == torch.float32
    # every kept point is one of the clean points, and it kept that point's part label
    rows = {tuple(p.tolist()): int(s) for p, s in zip(clean["points"], clean["seg"])}
    assert all(rows[tuple(p.tolist())] == int(s) for p, s in zip(out["points"], out["seg"]))
    assert out["seg"].shape[0] == out["points"].shape[0]


def test_added_points_get_labels_of_real_parts(caps):
    out = CorruptedDataset(caps, "add_local", 2, seed=0)[1]
    assert out["points"].shape[0] > caps[1]["points"].shape[0]
    assert set(out["seg"].tolist()) <= set(caps[1]["seg"].tolist())


def test_summary_scores_match_a_hand_computed_example():
    s = robustness_summary(0.9, {"jitter": {1: 0.8, 2: 0.7}, "rotate": {1: 0.9, 2: 0.6}})
    assert s["mean_corrupted"] == pytest.approx(0.75)
    assert s["mean_drop"] == pytest.approx(0.15)
    # errors: jitter mean 0.25, rotate mean 0.25; clean error 0.1 -> 2.5 each
    assert s["mce_vs_clean"] == pytest.approx(2.5)
    assert "modelnet_c_mce" not in s  # only with all five levels
    full = robustness_summary(0.9, {"jitter": {lv: 0.9 - 0.02 * lv for lv in range(1, 6)}})
    assert full["modelnet_c_mce"] > 0 and "modelnet_c_rmce" in full


def test_eval_corrupt_writes_a_reproducible_report(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    run = tmp_path / "run"
    ok(appt("train", "--config", str(config), "--set", f"run_dir={run}", "--set", "train.epochs=1", "--no-progress"))
    reports = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = ok(appt("eval", "--run", str(run), "--out", str(out), "--no-progress",
                       "--corrupt", "jitter", "dropout_global:5", "add_local:2"))
        assert "mean drop" in proc.stdout
        reports.append(json.loads((out / "robustness.json").read_text()))
        assert (out / "robustness.png").read_bytes()[:8] == PNG
        assert "| jitter |" in (out / "robustness.md").read_text()
        with open(out / "robustness.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 1 + 5 + 1 + 1  # clean + jitter 1..5 + two single levels
        metrics = json.loads((out / "metrics.json").read_text())
        assert reports[-1]["summary"]["clean"] == pytest.approx(metrics["overall_acc"])
        assert reports[-1]["kernels"] == metrics["kernels"] and metrics["kernels"]["device"] == "cpu"
    assert reports[0]["table"] == reports[1]["table"]
    table = reports[0]["table"]
    assert sorted(table) == ["add_local", "dropout_global", "jitter"]
    assert sorted(table["jitter"], key=int) == ["1", "2", "3", "4", "5"]
    assert all(0.0 <= v <= 1.0 for levels in table.values() for v in levels.values())


def test_an_interrupted_corruption_sweep_resumes_only_for_the_same_weights(tmp_path: Path) -> None:
    """Passes saved in ``robustness_progress.jsonl`` are reused when the fingerprint (weights' bytes,
    seed, data settings, clean score, corruption code) matches, recomputed when it does not; the file
    goes once the report is written."""
    from appt.training.evaluate import PROGRESS_FILE

    config = tiny_config(tmp_path)
    run = tmp_path / "run"
    ok(appt("train", "--config", str(config), "--set", f"run_dir={run}", "--set", "train.epochs=1", "--no-progress"))
    first = tmp_path / "first"
    specs = ("--corrupt", "jitter:1", "rotate:2", "scale:1")
    ok(appt("eval", "--run", str(run), "--out", str(first), "--no-progress", *specs))
    assert not (first / PROGRESS_FILE).exists()
    table = json.loads((first / "robustness.json").read_text())["table"]

    # as a sweep killed after its first pass would leave it, but with a marker score (0.123) for jitter:1;
    # passes saved under another clean score or another corruption code must not be reused
    fingerprint = _fingerprint_of(run, first)
    out = tmp_path / "resumed"
    out.mkdir()
    (out / PROGRESS_FILE).write_text("\n".join([
        json.dumps({**fingerprint, "kind": "jitter", "level": 1, "score": 0.123}),
        json.dumps({**fingerprint, "clean": fingerprint["clean"] + 0.5, "kind": "rotate", "level": 2, "score": 0.456}),
        json.dumps({**fingerprint, "corruption_code_sha256": "0" * 64, "kind": "scale", "level": 1, "score": 0.789}),
        '{"cut short']))
    proc = ok(appt("eval", "--run", str(run), "--out", str(out), "--no-progress", *specs))
    assert "resuming: 1 of 3 corrupted passes already done" in proc.stdout
    resumed = json.loads((out / "robustness.json").read_text())["table"]
    assert resumed["jitter"]["1"] == 0.123
    assert resumed["rotate"]["2"] == table["rotate"]["2"] and resumed["scale"]["1"] == table["scale"]["1"]
    assert not (out / PROGRESS_FILE).exists()

    # weights named as a file: the fingerprint is that file's bytes alone (not its whole folder's)
    weights = run / "checkpoints" / "best" / "appt_weights.safetensors"
    by_file = tmp_path / "by_file"
    by_file.mkdir()
    (by_file / PROGRESS_FILE).write_text(json.dumps(
        {**_fingerprint_of(run, first, files=[weights]), "kind": "jitter", "level": 1, "score": 0.321}) + "\n")
    proc = ok(appt("eval", "--weights", str(weights), "--config", str(run / "config.yaml"), "--out", str(by_file),
                   "--no-progress", "--corrupt", "jitter:1"))
    assert "resuming: 1 of 1" in proc.stdout
    assert json.loads((by_file / "robustness.json").read_text())["table"]["jitter"]["1"] == 0.321


def _fingerprint_of(run: Path, report_dir: Path, files: list[Path] | None = None) -> dict:
    """The sweep key ``appt eval`` computes, rebuilt from the run's files (default: every file of its
    best checkpoint's folder) and the clean score it wrote."""
    digest = hashlib.sha256()
    for f in files or sorted(p for p in (run / "checkpoints" / "best").iterdir() if p.is_file()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    cfg = load_config(run / "config.yaml", [])
    clean = json.loads((report_dir / "robustness.json").read_text())["summary"]["clean"]
    code = hashlib.sha256(b"".join((SRC / "appt" / f).read_bytes() for f in ("data/corruptions.py", "evaluation/robustness.py")))
    return {"weights_sha256": digest.hexdigest(), "seed": cfg.train.seed, "clean": clean,
            "data": json.loads(json.dumps(asdict(cfg.data), default=str)), "corruption_code_sha256": code.hexdigest()}


def test_unknown_corruption_is_a_clear_usage_error(tmp_path: Path) -> None:
    # refused before anything is loaded, so a weights path that does not exist is never reached
    proc = appt("eval", "--weights", str(tmp_path / "none"), "--corrupt", "melt:3", "--no-progress")
    assert proc.returncode == 2
    assert "melt" in proc.stderr and "Traceback" not in proc.stderr
    proc = appt("eval", "--weights", str(tmp_path / "none"), "--corrupt", "jitter:9", "--no-progress")
    assert proc.returncode == 2 and "level" in proc.stderr


def test_mean_corruption_error_hand_computed() -> None:
    errors = {"jitter": [0.1, 0.3], "scale": [0.2, 0.4]}
    reference = {"jitter": [0.2, 0.6], "scale": [0.2, 0.2]}
    # CE_jitter = 0.4 / 0.8 = 0.5; CE_scale = 0.6 / 0.4 = 1.5; mCE = 1.0
    assert corruption_error(errors["jitter"], reference["jitter"]) == pytest.approx(0.5)
    assert corruption_error(errors["scale"], reference["scale"]) == pytest.approx(1.5)
    assert mean_corruption_error(errors, reference) == pytest.approx(1.0)
    # clean errors 0.05 (model), 0.1 (reference):
    # RCE_jitter = (0.2 - 0.05) / (0.4 - 0.1) = 0.5; RCE_scale = (0.3 - 0.05) / (0.2 - 0.1) = 2.5
    assert relative_corruption_error(errors["jitter"], 0.05, reference["jitter"], 0.1) == pytest.approx(0.5)
    assert relative_corruption_error(errors["scale"], 0.05, reference["scale"], 0.1) == pytest.approx(2.5)
    assert relative_mean_corruption_error(errors, 0.05, reference, 0.1) == pytest.approx(1.5)
    # a scalar is read as the mean over levels
    assert mean_corruption_error({"jitter": 0.2, "scale": 0.3}, {"jitter": 0.4, "scale": 0.2}) == pytest.approx(1.0)


# ModelNet-C's published rows (Ren et al. 2022): overall accuracy per corruption, averaged
# over the five levels, and the clean accuracy. DGCNN is the reference; PointNet is scored against it.
DGCNN_OA = {"jitter": 0.684, "dropout_global": 0.752, "dropout_local": 0.793, "add_global": 0.705,
            "add_local": 0.725, "scale": 0.906, "rotate": 0.785}
POINTNET_OA = {"jitter": 0.797, "dropout_global": 0.876, "dropout_local": 0.778, "add_global": 0.121,
               "add_local": 0.562, "scale": 0.881, "rotate": 0.591}


def test_pointnet_scored_against_the_dgcnn_reference_gives_its_published_mce_and_rmce() -> None:
    """PointNet's published mCE 1.422 and RmCE 1.488 (by hand: mean of 0.203/0.316, 0.124/0.248, ...
    and of (0.203 - 0.093)/(0.316 - 0.074), ...), through the report's summary: pins the reference
    table, both formulas and the accuracy -> error conversion."""
    assert MODELNET_C_DGCNN_ERROR == pytest.approx({k: 1.0 - acc for k, acc in DGCNN_OA.items()})
    assert MODELNET_C_DGCNN_CLEAN_ERROR == pytest.approx(1.0 - 0.926)
    table = {kind: {lv: acc for lv in range(1, 6)} for kind, acc in POINTNET_OA.items()}
    s = robustness_summary(0.907, table)
    assert s["modelnet_c_mce"] == pytest.approx(1.422, abs=5e-4)
    assert s["modelnet_c_rmce"] == pytest.approx(1.488, abs=5e-4)


def test_corruption_error_rejects_bad_tables() -> None:
    with pytest.raises(ConfigError, match="no entry for rotate"):
        mean_corruption_error({"jitter": 0.1, "rotate": 0.2}, {"jitter": 0.2})
    with pytest.raises(ConfigError, match="> 0"):
        corruption_error([0.1], [0.0])
    with pytest.raises(ConfigError, match="division by 0"):
        relative_corruption_error(0.2, 0.1, 0.3, 0.3)
    with pytest.raises(ConfigError, match="no corruption kinds"):
        mean_corruption_error({}, MODELNET_C_DGCNN_ERROR)
