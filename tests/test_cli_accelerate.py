"""``accelerate launch`` with 2 CPU processes (gloo) of the demo config trains and writes the same
kind of outputs as one process (shrunk to a few real shapes so it takes seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import MODELNET10
from safetensors.torch import load_file

from appt.training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]


def test_two_process_cpu_run_of_the_demo_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "APPT_DATA": str(MODELNET10.parents[2])}
    cmd = [
        # `accelerate launch`, run by module so it is the one installed beside this Python
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        "-m", "appt.cli.main", "train", "--config", "configs/demo_modelnet10_minilm.yaml", "--no-progress",
        "--set", f"run_dir={run}", "--set", "data.subset=20", "--set", "data.test_subset=10",
        "--set", "data.num_points=256", "--set", "data.batch_size=4", "--set", "train.epochs=1",
        "--set", "train.log_every=1",
        "--set", f"data.options.cache_dir={tmp_path / 'cache'}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 process(es)" in proc.stdout
    assert proc.stdout.count("trainable parameters:") == 2, "only the main process reports"
    events = read_metrics(run / "metrics.jsonl")
    steps = [e for e in events if e["event"] == "train_step"]
    # 20 shapes = 5 batches of 4, dealt to 2 processes; training drops the incomplete last round
    assert len(steps) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["last_epoch"]["epoch"] == 1
    evals = [e for e in events if e["event"] == "eval_test"]
    assert len(evals) == 1 and 0.0 <= evals[0]["overall_acc"] <= 1.0
    assert evals[0]["num_samples"] == 10, "each test shape counted once across the 2 processes"
    for name in ("best", "last"):
        assert load_file(str(run / "checkpoints" / name / "appt_weights.safetensors"))
    assert (run / "checkpoints" / "resume.pt").is_file() and (run / "config.yaml").is_file()
