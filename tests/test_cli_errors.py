"""Bad use ends with a one-line message and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import MODELNET10
from test_cli_e2e import tiny_config

from appt.cli.main import main
from appt.training.builders import build_data, build_model
from appt.training.config import load_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny config and untrained weights saved from it (enough to load; no training needed)."""
    folder = tmp_path_factory.mktemp("errors")
    config = tiny_config(folder)
    cfg = load_config(config)
    model = build_model(cfg, build_data(cfg, with_train=False))
    weights = folder / "weights"
    model.save_pretrained(weights)
    return config, weights


def fails(capsys: pytest.CaptureFixture, argv: list[str], *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_unknown_config_key(setup, capsys, tmp_path: Path) -> None:
    config, _ = setup
    fails(capsys, ["train", "--config", str(config), "--set", "train.lrr=0.1"], "unknown config key 'train.lrr'")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "optimiser": "sgd"}))
    fails(capsys, ["train", "--config", str(bad)], "unknown config key 'optimiser'", str(bad))
    assert not (tmp_path / "runs").exists()


def test_unknown_backbone(setup, capsys, tmp_path: Path) -> None:
    config, _ = setup
    fails(capsys, ["train", "--config", str(config), "--set", "model.backbone.family=resnet",
                   "--set", f"run_dir={tmp_path / 'r'}"], "backbone family 'resnet' unknown")
    assert not (tmp_path / "r").exists(), "a failed start must not leave a run folder"


def test_missing_data_root(setup, capsys, tmp_path: Path) -> None:
    config, _ = setup
    missing = tmp_path / "no_such_data"
    fails(capsys, ["train", "--config", str(config), "--set", f"data.root={missing}"], str(missing), "not found")
    fails(capsys, ["eval", "--weights", str(setup[1]), "--config", str(config), "--set", f"data.root={missing}"],
          str(missing))


def test_weights_for_another_backbone(setup, capsys) -> None:
    config, weights = setup
    fails(capsys, ["eval", "--weights", str(weights), "--config", str(config), "--no-progress",
                   "--set", "model.backbone.family=none", "--set", "model.backbone.options={width: 64}"],
          "trained for backbone 'point_mae:", "uses 'none:")


def test_unreadable_or_missing_input_for_predict(setup, capsys, tmp_path: Path) -> None:
    _, weights = setup
    broken = tmp_path / "broken.pcd"
    broken.write_bytes(b"VERSION .7\nFIELDS x y z\nthis is not a point cloud")
    good = MODELNET10 / "chair" / "test" / "chair_0890.pcd"
    out = tmp_path / "pred"
    fails(capsys, ["predict", "--weights", str(weights), str(good), str(broken), "--out", str(out)], str(broken))
    fails(capsys, ["predict", "--weights", str(weights), str(tmp_path / "nothing.ply")], "nothing.ply", "not found")
    assert not out.exists(), "nothing is written when an input is bad"


def test_not_a_run_or_no_weights(capsys, tmp_path: Path) -> None:
    fails(capsys, ["train", "--resume", str(tmp_path)], "not a run folder")
    fails(capsys, ["eval", "--run", str(tmp_path)], "no appt weights")
    fails(capsys, ["predict", "--weights", str(tmp_path), str(tmp_path)], "no appt weights")


def test_argument_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train"])
    assert exc.value.code == 2 and "--config" in capsys.readouterr().err


def test_installed_command_exits_2_without_traceback(setup) -> None:
    config, _ = setup
    script = Path(sys.executable).parent / "appt"
    proc = subprocess.run([str(script), "train", "--config", str(config), "--set", "data.batchsize=4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"appt train: error: {config}: unknown config key 'data.batchsize' " \
        "(known: batch_size, dataset, eval_batch_size, num_points, num_workers, options, root, subset, " \
        "test_split, test_subset, test_transforms, train_split, train_transforms, val_fraction)"
