"""The YAML config schema: typed sections, overrides, env defaults, bases, and refusal of unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from appt.errors import ConfigError
from appt.training.config import config_from_dict, load_config, save_config
from appt.training.config_files import expand_env, parse_override

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"trian": {}}, "trian"),
        ({"train": {"lrr": 1.0}}, "train.lrr"),
        ({"data": {"batchsize": 4}}, "data.batchsize"),
        ({"model": {"backbone": {"family": "hf_text"}, "num_stages": 3}}, "model.num_stages"),
        ({"model": {"backbone": {"family": "hf_text", "nmae": "minilm"}}}, "model.backbone.nmae"),
    ],
)
def test_unknown_key_is_refused_with_its_dotted_name(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        config_from_dict(raw)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"train": {"epochs": "many"}}, "train.epochs must be an integer"),
        ({"train": {"deterministic": "yes"}}, "train.deterministic must be true or false"),
        ({"train": {"precision": "fp8"}}, "train.precision"),
        ({"data": {"val_fraction": 1.5}}, "val_fraction"),
        ({"task": "detection"}, "task="),
        ({"model": {"backbone": {"family": "hf_text"}, "centers": "many"}}, "model.centers"),
    ],
)
def test_bad_values_are_refused(raw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        config_from_dict(raw)


def test_yaml_exponent_strings_become_floats_and_stage_lists_tuples() -> None:
    # PyYAML reads "1e-3" (no dot) as a string; the schema knows lr is a float.
    cfg = config_from_dict({"train": {"lr": "1e-3", "grad_clip": None},
                            "model": {"backbone": {"family": "hf_text"}, "centers": [128, 64]}})
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.grad_clip is None
    assert cfg.model["centers"] == [128, 64]
    counts = config_from_dict({"data": {"subset": 1.0, "test_subset": 300}, "train": {"epochs": 5.0}})
    assert counts.data.subset == 1.0 and isinstance(counts.data.subset, float)  # all, as a fraction
    assert counts.data.test_subset == 300 and counts.train.epochs == 5 and isinstance(counts.train.epochs, int)


def test_overrides_reach_nested_keys_and_are_read_as_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", {"model": {"backbone": {"family": "hf_text", "name": "minilm"}},
                                       "train": {"epochs": 3}})
    cfg = load_config(path, ["train.epochs=7", "train.lr=2e-4", "model.backbone.pretrained=false",
                             "data.train_transforms=[{name: scale}]", "data.options.variant=obj_bg"])
    assert cfg.train.epochs == 7
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.model["backbone"]["pretrained"] is False
    assert cfg.data.train_transforms == [{"name": "scale"}]
    assert cfg.data.options == {"variant": "obj_bg"}
    assert cfg.name == "c"


@pytest.mark.parametrize("item", ["train.epochs", "=3", "train..lr=1"])
def test_malformed_override_is_refused(item: str) -> None:
    with pytest.raises(ConfigError):
        parse_override(item)


def test_override_of_unknown_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", {})
    with pytest.raises(ConfigError, match="train.epoch'"):
        load_config(path, ["train.epoch=3"])


def test_env_defaults_resolve_and_relative_roots_become_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("APPT_TEST_ROOT", raising=False)
    assert expand_env("${APPT_TEST_ROOT:-../d}/x") == "../d/x"
    monkeypatch.setenv("APPT_TEST_ROOT", "/data")
    assert expand_env("${APPT_TEST_ROOT:-../d}/x") == "/data/x"
    with pytest.raises(ConfigError, match="APPT_UNSET_VAR"):
        expand_env("${APPT_UNSET_VAR}/x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APPT_TEST_ROOT")
    cfg = config_from_dict({"data": {"root": "${APPT_TEST_ROOT:-../shared}/m"}})
    assert cfg.data.root == str(tmp_path.parent / "shared" / "m")


def test_bases_merge_in_order_and_the_file_wins(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "task.yaml", {"data": {"batch_size": 8, "num_points": 512}, "train": {"epochs": 5}})
    write(tmp_path / "base" / "bb.yaml", {"model": {"backbone": {"family": "hf_text", "name": "minilm"}},
                                          "train": {"lr": 0.01}})
    path = write(tmp_path / "leaf.yaml", {"base": ["base/task.yaml", "base/bb.yaml"], "train": {"epochs": 2}})
    cfg = load_config(path)
    assert (cfg.data.batch_size, cfg.data.num_points) == (8, 512)
    assert (cfg.train.epochs, cfg.train.lr) == (2, 0.01)
    assert cfg.model["backbone"]["name"] == "minilm"


def test_circular_and_missing_bases_are_config_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nothing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_saved_config_reloads_to_the_same_run(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", {"model": {"backbone": {"family": "hf_text", "name": "minilm"}, "centers": [64, 32]},
                                       "data": {"root": str(tmp_path), "subset": 40},
                                       "train": {"epochs": 2, "betas": [0.8, 0.9]}})
    cfg = load_config(path, ["train.seed=5"])
    save_config(cfg, tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again.to_dict() == cfg.to_dict()
