"""``appt train --data DIR`` without a config, on folders built from real ModelNet10 shapes: layout
detection, the hold-out, the cache progress line, predict with the run's weights, repeating the run
from its saved config, bad folders in one line, and shipped bases named ``appt:NAME`` from anywhere."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import DATA, MODELNET10
from safetensors.torch import load_file

from appt.cli.main import main
from appt.data import build_dataset
from appt.data.detect import detect_layout
from appt.data.warm import warm_cache
from appt.errors import ConfigError, DataError
from appt.training.config import load_config
from appt.tasks.classification import ClassificationTask, balanced_class_weights

CLASSES = ["chair", "sofa", "toilet"]
# A tiny embedding so the run takes seconds; everything else is what --data chooses.
TINY = ["--set", "model.centers=[32,16]", "--set", "model.neighbors=[8,8]", "--set", "model.widths=[64,-1]",
        "--set", "model.blocks=[1,1]", "--set", "model.head_hidden=[64]"]


def class_folders(root: Path, per_class: int = 8, split: bool = False) -> Path:
    """``root/<class>/[train/]*.pcd``: real ModelNet10 training shapes, plus a README to skip."""
    for c in CLASSES:
        target = root / c / "train" if split else root / c
        target.mkdir(parents=True)
        for f in sorted((MODELNET10 / c / "train").glob("*.pcd"))[:per_class]:
            shutil.copy(f, target / f.name)
        if split:
            (root / c / "test").mkdir()
            shutil.copy(sorted((MODELNET10 / c / "test").glob("*.pcd"))[0], root / c / "test")
    (root / "chair" / "notes.md").write_text("not a cloud\n")
    return root


def fails(capsys: pytest.CaptureFixture, argv: list[str], *fragments: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # transformers' own "Loading weights" bar (MiniLM loads before the files are read) is not ours
    lines = [line for line in err.strip().splitlines() if line.strip() and "Loading weights" not in line]
    assert "Traceback" not in err and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_train_on_a_folder_without_split_then_predict_and_repeat(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = class_folders(tmp_path / "mine")
    run = tmp_path / "run"
    env_cache = ["--set", f"data.options.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run([sys.executable, "-m", "appt.cli.main", "train", "--data", str(data), "--epochs", "1",
                           "--points", "256", "--batch-size", "8", "--run-dir", str(run), "--balanced", "--no-progress",
                           *TINY, *env_cache],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "class folders, no train/test split, 3 classes (chair 8, sofa 8, toilet 8; 24 files)" in out
    assert "skipped 1 file(s) of other types, e.g. notes.md" in out
    assert "stratified hold-out of 20 % of each class" in out and "backbone: minilm (hf_text minilm" in out
    assert "shapes: 18 train / 6 held out" in out  # round(8 * 0.2) = 2 of each class
    assert "preparing" in out and "first use of these files" in out and "prepared " in out
    best = run / "checkpoints" / "best"
    assert f"next: appt predict --weights {best}" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["dataset"] == "folder" and saved["data"]["test_split"] == "val"
    assert saved["data"]["val_fraction"] == 0.2 and saved["model"]["backbone"]["name"] == "minilm"
    assert saved["model"]["embed_dim"] == 64  # the CPU-sized embedding (this machine has no GPU)
    assert saved["train"]["balanced"] is True and saved["train"]["epochs"] == 1
    assert json.loads((best / "appt_data.json").read_text())["classes"] == CLASSES
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last_epoch"]["num_samples"] == 6

    # predict with the run's weights on one class folder
    assert main(["predict", "--weights", str(best), str(data / "sofa"), "--out", str(tmp_path / "pred")]) == 0
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["prediction"] for r in rows} <= set(CLASSES)
    one_point = tmp_path / "one_point.txt"
    one_point.write_text("0.1 0.2 0.3\n")
    capsys.readouterr()
    fails(capsys, ["predict", "--weights", str(best), str(one_point), "--out", str(tmp_path / "pred1")],
          "one_point.txt: holds 1 distinct point(s); at least 8 are needed")

    # the saved config repeats the run (same hold-out, same weights), and the cache is warm now. In a
    # fresh process like the first run: this one's torch settings (threads) depend on earlier tests.
    again = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "appt.cli.main", "train", "--config", str(run / "config.yaml"),
                           "--run-dir", str(again), "--no-progress"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preparing" not in proc.stdout
    a, b = load_file(str(best / "appt_weights.safetensors")), load_file(str(again / "checkpoints/best/appt_weights.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_split_layout_and_file_lists_and_benchmark_roots_are_detected(tmp_path: Path) -> None:
    split = detect_layout(class_folders(tmp_path / "split", per_class=2, split=True))
    assert (split.dataset, split.has_split, split.classes) == ("folder", True, CLASSES)
    assert split.counts == {"chair": 3, "sofa": 3, "toilet": 3}
    files = sorted(MODELNET10.glob("*/test/*.pcd"))[::200]
    listing = tmp_path / "list.csv"
    listing.write_text("".join(f"{f},{f.parts[-3]}\n" for f in files))
    found = detect_layout(listing)
    assert (found.dataset, found.has_split) == ("filelist", False)
    assert sum(found.counts.values()) == len(files) and found.classes == sorted({f.parts[-3] for f in files})
    assert detect_layout(DATA / "modelnet40_normal_resampled").dataset == "modelnet40_txt"
    part = detect_layout(DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal")
    assert (part.dataset, part.task) == ("shapenetpart", "part_segmentation")


def one_class(root: Path) -> list[str]:
    (root / "chair").mkdir(parents=True)
    shutil.copy(sorted((MODELNET10 / "chair" / "train").glob("*.pcd"))[0], root / "chair")
    return ["train", "--data", str(root)]


def empty_class(root: Path) -> list[str]:
    one_class(root)
    (root / "sofa").mkdir()
    (root / "sofa" / "notes.txt.bak").write_text("x")
    return ["train", "--data", str(root)]


def mixed(root: Path) -> list[str]:
    one_class(root)
    (root / "sofa" / "train").mkdir(parents=True)
    return ["train", "--data", str(root)]


def loose_files(root: Path) -> list[str]:
    root.mkdir()
    shutil.copy(sorted((MODELNET10 / "chair" / "train").glob("*.pcd"))[0], root)
    return ["train", "--data", str(root)]


@pytest.mark.parametrize("make, fragments", [
    (lambda r: ["train", "--data", str(r / "nowhere")], ["nowhere: not found"]),
    (one_class, ["has one class folder (chair)", "at least 2 classes"]),
    (empty_class, ["sofa: class folder holds no point-cloud or mesh files"]),
    (mixed, ["chair: has no train/ and test/ sub-folders while other class folders do"]),
    (loose_files, ["has no class sub-folders but 1 point files lie directly in it"]),
    (lambda r: ["train", "--data", str(MODELNET10), "--backbone", "no_such_net"], ["--backbone 'no_such_net': unknown"]),
], ids=["missing", "one-class", "empty-class", "mixed-layout", "no-class-folders", "unknown-backbone"])
def test_bad_data_or_backbone_is_one_line_exit_2(make, fragments: list[str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    fails(capsys, [*make(tmp_path / "d"), "--no-progress"], *fragments)


def test_a_corrupt_file_is_refused_with_the_count(tmp_path: Path) -> None:
    data = class_folders(tmp_path / "mine", per_class=3)
    (data / "sofa" / "broken.pcd").write_bytes(b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\n")
    ds = build_dataset("folder", data, "train", num_points=64, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=r"broken\.pcd: .*\(1 of 10 files refused"):
        warm_cache([ds], progress=False)
    (data / "sofa" / "broken.pcd").unlink()
    (data / "toilet" / "few.txt").write_text("0 0 0\n1 0 0\n0 1 0\n1 0 0\n")  # 3 distinct points
    ds = build_dataset("folder", data, "train", num_points=64, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=r"few\.txt: holds 3 distinct point\(s\); at least 16 .*\(1 of 1 files refused"):
        warm_cache([ds], progress=False, min_points=16)  # the 9 good clouds are cached already


def test_shipped_bases_are_named_from_a_yaml_outside_the_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing of the repository is reachable by a relative path
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({
        "base": ["appt:minilm", "appt:embed_cpu"], "data": {"root": str(MODELNET10)}, "train": {"epochs": 2},
    }))
    cfg = load_config(tmp_path / "mine.yaml")
    assert cfg.model["backbone"] == {"family": "hf_text", "name": "minilm", "pretrained": True}
    assert cfg.model["centers"] == [128, 64, 32] and cfg.train.epochs == 2
    repo_base = Path(__file__).resolve().parents[1] / "configs" / "base"
    for name in ("minilm", "mpnet", "vit_b16", "point_mae"):  # the repository's bases are the shipped ones
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"base": [str(repo_base / f"{name}.yaml")]}))
        (tmp_path / f"{name}_pkg.yaml").write_text(yaml.safe_dump({"base": [f"appt:{name}"]}))
        assert load_config(tmp_path / f"{name}.yaml").model == load_config(tmp_path / f"{name}_pkg.yaml").model
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"base": ["appt:no_such_base"]}))
    with pytest.raises(ConfigError, match="appt:no_such_base: no such shipped config; known: .*appt:minilm"):
        load_config(tmp_path / "bad.yaml")


def test_balanced_weights_make_every_class_weigh_the_same(tmp_path: Path) -> None:
    data = tmp_path / "imbalanced"
    for c, n in zip(CLASSES, (6, 3, 1)):
        (data / c).mkdir(parents=True)
        for f in sorted((MODELNET10 / c / "train").glob("*.pcd"))[:n]:
            shutil.copy(f, data / c / f.name)
    labels = build_dataset("folder", data, "train", num_points=64, cache=False).labels
    weights = balanced_class_weights(labels, 3)
    torch.testing.assert_close(weights, torch.tensor([10 / 18, 10 / 9, 10 / 3]))
    task, logits = ClassificationTask(), torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    batch = {"label": torch.as_tensor(labels)}
    plain = task.loss(logits, batch, 0.0)
    task.class_weights = weights
    per_sample = torch.nn.functional.cross_entropy(logits, batch["label"], reduction="none")
    expected = (weights[batch["label"]] * per_sample).sum() / weights[batch["label"]].sum()
    torch.testing.assert_close(task.loss(logits, batch, 0.0), expected)
    assert not torch.isclose(plain, expected)
    assert balanced_class_weights([0, 0, 2], 3).tolist()[1] == 0.0  # a class absent from train
