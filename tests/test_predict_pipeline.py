"""``appt predict`` rebuilds the run's test-time pipeline from ``appt_data.json`` alone, and starts
without the training engine (no Accelerate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from appt.cli.main import main
from appt.inference.predict import prepare_files
from appt.inference.weights import read_data_info
from appt.models import APPTForClassification
from appt.training.builders import build_data
from appt.training.config import load_config

POINTS = 128


def z_up_folder(root: Path) -> None:
    """A Princeton-layout folder (``modelnet_points``: raw z-up coordinates), two classes of random
    boxes whose extent along z differs from that along y, so a height taken on the wrong axis differs."""
    rng = np.random.default_rng(0)
    for label, extent in (("tall", (0.3, 0.5, 2.0)), ("wide", (2.0, 0.4, 0.6))):
        for split, count in (("train", 4), ("test", 2)):
            folder = root / label / split
            folder.mkdir(parents=True)
            for i in range(count):
                np.save(folder / f"{label}_{i}.npy", (rng.random((300, 3)) * extent).astype(np.float32))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short epoch of a tiny random point transformer fed the height channel (4 inputs)."""
    work = tmp_path_factory.mktemp("zup")
    z_up_folder(work / "data")
    cfg = {
        "model": {
            "backbone": {"family": "point_mae", "pretrained": False, "options": {"depth": 2, "width": 64, "heads": 2}},
            "embed_dim": 32, "centers": [64, 32], "neighbors": [16, 16], "widths": [64, -1], "blocks": [1, 1],
            "head_hidden": [64],
        },
        "data": {"dataset": "modelnet_points", "root": str(work / "data"), "num_points": POINTS, "batch_size": 4,
                 "options": {"use_height": True, "cache_dir": str(work / "cache")}},
        "train": {"epochs": 1, "lr": 1e-3},
    }
    (work / "zup.yaml").write_text(yaml.safe_dump(cfg))
    run = work / "run"
    assert main(["train", "--config", str(work / "zup.yaml"), "--set", f"run_dir={run}", "--no-progress"]) == 0
    return run


def test_predict_gives_what_the_model_gives_on_the_eval_pipeline_for_a_z_up_layout(trained: Path, tmp_path: Path) -> None:
    weights = trained / "checkpoints" / "best"
    info = read_data_info(weights)
    assert info["up_axis"] == 2 and info["in_channels"] == 4
    test = build_data(load_config(trained / "config.yaml"), with_train=False).test
    assert test.up_axis == 2
    i = 1
    file = Path(test.paths[i])
    expected_points = test[i]["points"]
    points, _ = prepare_files([file], info, in_channels=4)
    assert torch.equal(points[0], expected_points), "predict prepares the file unlike the test split"

    out = tmp_path / "pred"
    assert main(["predict", "--weights", str(weights), str(file), "--out", str(out), "--top-k", "2"]) == 0
    (record,) = json.loads((out / "predictions.json").read_text())
    model = APPTForClassification.from_pretrained(weights).eval()
    with torch.no_grad():
        probs = model(expected_points[None]).float().softmax(-1)[0]
    expected = sorted(((test.classes[k], float(p)) for k, p in enumerate(probs)), key=lambda t: -t[1])
    assert [name for name, _ in record["top"]] == [name for name, _ in expected]
    assert [p for _, p in record["top"]] == pytest.approx([p for _, p in expected], abs=1e-6)


def test_predict_imports_no_accelerate(trained: Path, tmp_path: Path) -> None:
    """Neither importing the predict path nor predicting a file (with a backbone that does not come
    from transformers, whose own model code may import Accelerate) loads Accelerate."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import appt.cli.predict, appt.inference.predict, appt.inference.weights"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "appt.inference.predict" in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "accelerate" in line] == []
    file = next((trained.parent / "data" / "tall" / "test").glob("*.npy"))
    script = (
        "import sys\nfrom appt.cli.main import main\n"
        f"assert main(['predict', '--weights', {str(trained / 'checkpoints' / 'best')!r}, {str(file)!r},"
        f" '--out', {str(tmp_path / 'pred')!r}]) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'accelerate'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
