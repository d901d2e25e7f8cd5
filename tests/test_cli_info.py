"""``appt info``: versions, device, backbone families, and the parameter count of a config."""

from __future__ import annotations

from pathlib import Path

import torch
from test_cli_e2e import tiny_config

from appt.backbones import available_backbones
from appt.cli.main import main
from appt.training.builders import build_data, build_model
from appt.training.config import load_config


def test_info_reports_environment_and_the_configs_parameter_counts(tmp_path: Path, capsys) -> None:
    config = tiny_config(tmp_path)
    assert main(["info", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in " ".join(out.split())
    assert ("cuda" if torch.cuda.is_available() else "device: cpu") in out
    assert f"cpu kernels: {torch.backends.cpu.get_cpu_capability()} (" in out  # AVX2 / AVX512 round differently
    assert all(name in out for name in available_backbones())
    cfg = load_config(config)
    trainable, total = build_model(cfg, build_data(cfg, with_train=False)).count_parameters()
    assert f"trainable parameters: {trainable:,} / total: {total:,}" in out
    assert "10 classes, 3 input channels" in out
