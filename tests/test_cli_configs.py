"""Every shipped config loads, builds its data pipeline and model, and runs one batch of real
shapes forward.

No pretrained ViT / Point-MAE weights exist here, so those configs are built with random weights
of the same architecture (``pretrained=false``); MiniLM uses its real packaged weights. Datasets
the shared data lacks in official form (ScanObjectNN h5 files, few-shot fold pickles) are written
to a temporary folder in their official layouts from real ModelNet40 shapes. The ShapeNetPart
subset has no train list, so its val split stands in for the train split.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import DATA, MODELNET10

from appt.data import collate
from appt.tasks import get_task
from appt.training.builders import build_data, build_model, model_config
from appt.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"), key=lambda p: (p.stem.split("_")[-1], p.stem))
BUILT: dict[tuple, torch.nn.Module] = {}


HF_STAND_INS = {"hf_vision": ("dinov2", "clip_vision"), "hf_audio": ("ast",), "hf_video": ("videomae",)}


def hf_stand_in(hub_id: str, folder: Path) -> Path:
    """A tiny random model of the type ``hub_id`` names, saved in ``folder`` (Hugging Face configs are
    not in this machine's cache, so the real architecture cannot be built without its files)."""
    from test_backbones_hf_modalities import make_model

    case = next(c for c in ("dinov2", "clip_vision", "ast", "videomae") if c.split("_")[0] in hub_id.lower())
    make_model(case).save_pretrained(folder / case)
    return folder / case


@pytest.fixture(scope="module")
def official_layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ScanObjectNN ``h5_files`` and a few-shot fold, filled with real bench shapes (2048 points)."""
    root = tmp_path_factory.mktemp("layouts")
    shapes = np.load(DATA / "modelnet40_bench_all193.npz")["points"][:24, :2048, :3]
    labels = np.arange(len(shapes)) % 15
    sonn = root / "h5_files"
    for folder, suffix in (("main_split", ""), ("main_split_nobg", ""), ("main_split", "_augmentedrot_scale75")):
        (sonn / folder).mkdir(parents=True, exist_ok=True)
        for split, part in (("training", slice(0, 16)), ("test", slice(16, 24))):
            with h5py.File(sonn / folder / f"{split}_objectdataset{suffix}.h5", "w") as f:
                f["data"] = shapes[part].astype(np.float32)
                f["label"] = labels[part].astype(np.int64)
                f["mask"] = np.ones(shapes[part].shape[:2], dtype=np.int64)
    fewshot = root / "ModelNetFewshot"
    (fewshot / "5way_10shot").mkdir(parents=True)
    episode = {
        "train": [(shapes[i, :1024], i % 5, f"class{i % 5}") for i in range(10)],
        "test": [(shapes[i, :1024], i % 5, f"class{i % 5}") for i in range(10, 20)],
    }
    with open(fewshot / "5way_10shot" / "0.pkl", "wb") as f:
        pickle.dump(episode, f)
    return {"scanobjectnn": sonn, "fewshot_modelnet40": fewshot}


def test_configs_cover_every_task_and_backbone_family() -> None:
    names = {p.stem for p in CONFIGS}
    tasks = ["modelnet40", "scanobjectnn_obj_bg", "scanobjectnn_obj_only", "scanobjectnn_pb_t50_rs",
             "fewshot_modelnet40", "shapenetpart"]
    assert {f"{t}_{b}" for t in tasks for b in ("vit_b16", "minilm", "point_mae")} <= names
    assert "demo_modelnet10_minilm" in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_and_runs_a_real_batch(path: Path, official_layouts: dict[str, Path], tmp_path: Path) -> None:
    cfg = load_config(path)
    roots = {
        "modelnet_points": MODELNET10,
        "modelnet40_txt": DATA / "modelnet40_normal_resampled",
        "shapenetpart": DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal",
        **official_layouts,
    }
    overrides = [f"data.root={roots[cfg.data.dataset]}", f"data.options.cache_dir={tmp_path}"]
    if cfg.data.dataset != "modelnet_points":  # the official-layout stand-ins hold only a few shapes
        overrides += ["data.subset=null", "data.test_subset=null"]
    backbone = cfg.model["backbone"]
    if backbone["name"] != "minilm":
        overrides += ["model.backbone.pretrained=false", "model.backbone.checkpoint=null"]
    if backbone["family"] in HF_STAND_INS:  # no config.json of the real model here: a tiny one of its type
        overrides.append(f"model.backbone.name={hf_stand_in(backbone['name'], tmp_path)}")
    if cfg.data.dataset == "shapenetpart":
        overrides.append("data.train_split=val")
    cfg = load_config(path, overrides)
    data = build_data(cfg)
    # Configs whose completed model configs are equal (the ScanObjectNN variants of one backbone)
    # share one built model: it is exactly what each of them builds.
    key = (cfg.task, cfg.train.seed, json.dumps(model_config(cfg, data).to_dict(), sort_keys=True))
    if key not in BUILT:
        BUILT.clear()  # keep one big model in memory at a time
        BUILT[key] = build_model(cfg, data)
    model = BUILT[key]
    assert model.config.backbone.family == backbone["family"]
    trainable, total = model.count_parameters()
    assert 0 < trainable < total
    task = get_task(cfg.task, data.classes)
    batch = collate([data.train[0], data.train[1]])
    assert batch["points"].shape == (2, data.train[0]["points"].shape[0], data.in_channels)
    model.eval()
    with torch.no_grad():
        logits = task.forward(model, batch)
    if cfg.task == "part_segmentation":
        assert logits.shape == (2, batch["points"].shape[1], model.config.num_classes)
    else:
        assert logits.shape == (2, len(data.classes))
    assert torch.isfinite(logits).all()
    assert torch.isfinite(task.loss(logits, batch, cfg.train.label_smoothing))
