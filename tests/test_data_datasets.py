"""build_dataset options on real shapes: subsets, validation hold-out, epochs, workers, cache,
user folders and lists, few-shot episodes, collate."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from appt.data import build_dataset, collate, read_points
from appt.data.modelnet import MODELNET40_CLASSES
from appt.errors import ConfigError, DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MN10 = DATA / "modelnet10_pcd" / "ModelNet10" / "pcd"
OFF40 = DATA / "modelnet_off" / "ModelNet40"


def test_subset_is_stratified_seeded_and_exact() -> None:
    full = build_dataset("modelnet_points", MN10, "train", cache=False)
    sub = build_dataset("modelnet_points", MN10, "train", subset=500, seed=3, cache=False)
    assert len(sub) == 500
    share_full = np.bincount(full.labels) / len(full)
    share_sub = np.bincount(sub.labels, minlength=10) / len(sub)
    assert np.abs(share_full - share_sub).max() <= 1.0 / 500 + 1e-9
    again = build_dataset("modelnet_points", MN10, "train", subset=500, seed=3, cache=False)
    other = build_dataset("modelnet_points", MN10, "train", subset=500, seed=4, cache=False)
    assert again.paths == sub.paths and other.paths != sub.paths
    assert set(sub.paths) <= set(full.paths)
    assert len(build_dataset("modelnet_points", MN10, "test", subset=0.25, cache=False)) == 227


def test_per_class_subset_takes_k_shapes_of_every_class() -> None:
    full = build_dataset("modelnet_points", MN10, "train", cache=False)
    sub = build_dataset("modelnet_points", MN10, "train", subset="10/class", seed=3, cache=False)
    np.testing.assert_array_equal(np.bincount(sub.labels, minlength=10), np.full(10, 10))
    assert set(sub.paths) <= set(full.paths)
    other = build_dataset("modelnet_points", MN10, "train", subset="10/class", seed=4, cache=False)
    assert other.paths != sub.paths
    smallest = int(np.bincount(full.labels).min())
    with pytest.raises(ConfigError, match=f"only {smallest} shapes"):
        build_dataset("modelnet_points", MN10, "train", subset=f"{smallest + 1}/class", cache=False)
    with pytest.raises(ConfigError, match="K/class"):
        build_dataset("modelnet_points", MN10, "train", subset="ten/class", cache=False)


def test_val_fraction_carves_a_disjoint_per_class_split_from_train() -> None:
    kw = dict(val_fraction=0.1, seed=1, cache=False)
    train = build_dataset("modelnet_points", MN10, "train", **kw)
    val = build_dataset("modelnet_points", MN10, "val", **kw)
    full = build_dataset("modelnet_points", MN10, "train", cache=False)
    assert not set(train.paths) & set(val.paths)
    assert sorted(train.paths + val.paths) == sorted(full.paths)
    per_class = np.bincount(full.labels)
    np.testing.assert_array_equal(np.bincount(val.labels), np.round(per_class * 0.1).astype(int))
    assert len(build_dataset("modelnet_points", MN10, "test", **kw)) == 908
    with pytest.raises(ConfigError, match="val_fraction"):
        build_dataset("modelnet_points", MN10, "val", cache=False)


def test_set_epoch_reseeds_augmentation_and_is_reproducible() -> None:
    ds = build_dataset("modelnet_points", MN10, "test", num_points=1024, transforms=["rotate", "jitter"], subset=8, cache=False)
    e0 = ds[2]["points"]
    ds.set_epoch(1)
    e1 = ds[2]["points"]
    ds.set_epoch(0)
    assert not torch.equal(e0, e1) and torch.equal(ds[2]["points"], e0)
    other_seed = build_dataset("modelnet_points", MN10, "test", num_points=1024, transforms=["rotate", "jitter"],
                               subset=8, seed=5, cache=False)
    assert not torch.equal(other_seed[2]["points"], e0)


def test_batches_do_not_depend_on_worker_count(tmp_path: Path) -> None:
    ds = build_dataset("modelnet_points", MN10, "test", num_points=512, sampling="random",
                       transforms=["rotate", "scale", "jitter"], subset=12, cache_dir=tmp_path)
    ds.set_epoch(4)
    runs = [list(DataLoader(ds, batch_size=4, num_workers=w)) for w in (0, 2)]
    for a, b in zip(*runs):
        assert torch.equal(a["points"], b["points"]) and torch.equal(a["label"], b["label"])
    assert runs[0][0]["points"].shape == (4, 512, 3)


def test_mesh_sampling_and_fps_are_cached_across_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trimesh

    loads = []
    real_load = trimesh.load
    monkeypatch.setattr(trimesh, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    ds = build_dataset("modelnet_off", OFF40, "train", num_points=256, cache_dir=tmp_path)
    first = [ds[i]["points"] for i in range(len(ds))]
    assert len(loads) == len(ds) == 2
    ds.set_epoch(1)
    again = [ds[i]["points"] for i in range(len(ds))]
    rebuilt = build_dataset("modelnet_off", OFF40, "train", num_points=256, cache_dir=tmp_path)  # a second run
    third = [rebuilt[i]["points"] for i in range(len(rebuilt))]
    assert len(loads) == 2
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(first, again, third))
    other = build_dataset("modelnet_off", OFF40, "train", num_points=128, cache_dir=tmp_path)  # new settings
    other[0]
    assert len(loads) == 3


def test_cache_follows_source_edits_and_survives_corrupt_entries(tmp_path: Path) -> None:
    root = tmp_path / "data" / "monitor" / "train"
    root.mkdir(parents=True)
    src = root / "monitor_0001.off"
    src.write_bytes((OFF40 / "monitor" / "train" / "monitor_0001.off").read_bytes())
    kw = dict(num_points=64, normalize=False, cache_dir=tmp_path / "cache")
    before = build_dataset("folder", tmp_path / "data", "train", **kw)[0]["points"]
    lines = src.read_text().splitlines()
    nv = int(lines[1].split()[0])
    scaled = [" ".join(str(2 * float(t)) for t in ln.split()) for ln in lines[2 : 2 + nv]]
    src.write_text("\n".join(lines[:2] + scaled + lines[2 + nv :]) + "\n")
    os.utime(src, ns=(1, 10**18))
    after = build_dataset("folder", tmp_path / "data", "train", **kw)[0]["points"]
    torch.testing.assert_close(after, 2 * before)
    for entry in (tmp_path / "cache").rglob("*.cloud"):
        entry.write_bytes(b"garbage")
    torch.testing.assert_close(build_dataset("folder", tmp_path / "data", "train", **kw)[0]["points"], after)


def test_cache_location_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPT_CACHE_DIR", str(tmp_path / "env_cache"))
    ds = build_dataset("modelnet_points", MN10, "test", num_points=1024, subset=3)
    for i in range(len(ds)):
        ds[i]
    assert len(list((tmp_path / "env_cache").rglob("*.cloud"))) == 3
    explicit = build_dataset("modelnet_points", MN10, "test", subset=2, cache_dir=tmp_path / "mine")
    explicit[0]
    assert len(list((tmp_path / "mine").rglob("*.cloud"))) == 1


def make_user_folder(root: Path, split_folders: bool) -> dict[str, list[Path]]:
    """Real ModelNet10 chairs and tables saved as .ply/.xyz/.npy/.pcd (+ a README to skip)."""
    from plyfile import PlyData, PlyElement

    made: dict[str, list[Path]] = {}
    for cls in ("chair", "table"):
        for split in ("train", "test"):
            folder = root / cls / split if split_folders else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            sources = sorted((MN10 / cls / split).glob("*.pcd"))[:4]
            for k, src in enumerate(sources):
                xyz = read_points(src).xyz
                if k == 0:
                    v = np.array([tuple(p) for p in xyz], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
                    out = folder / f"{src.stem}.ply"
                    PlyData([PlyElement.describe(v, "vertex")]).write(str(out))
                elif k == 1:
                    out = folder / f"{src.stem}.xyz"
                    np.savetxt(out, xyz)
                elif k == 2:
                    out = folder / f"{src.stem}.npy"
                    np.save(out, xyz)
                else:
                    out = folder / src.name
                    out.write_bytes(src.read_bytes())
                made.setdefault(f"{cls}/{split}", []).append(out)
            (folder / "README.md").write_text("notes")
    return made


def test_user_folder_with_split_subfolders_and_mixed_formats(tmp_path: Path) -> None:
    made = make_user_folder(tmp_path, split_folders=True)
    ds = build_dataset("folder", tmp_path, "test", num_points=1024, cache_dir=tmp_path / ".cache")
    assert ds.classes == ["chair", "table"] and len(ds) == 8
    assert sorted(ds.paths) == sorted(str(p) for k, v in made.items() if k.endswith("test") for p in v)
    originals = {p.stem: read_points(next(MN10.glob(f"*/*/{p.stem}.pcd"))).xyz for v in made.values() for p in v}
    for i in range(len(ds)):
        s = ds[i]
        ref = build_dataset("folder", tmp_path, "test", num_points=1024, normalize=False, cache=False)[i]["points"]
        np.testing.assert_allclose(ref.numpy(), originals[Path(s["path"]).stem], rtol=1e-6, atol=1e-4)
    assert len(build_dataset("folder", tmp_path, "all", cache=False)) == 16


def test_user_folder_without_splits(tmp_path: Path) -> None:
    make_user_folder(tmp_path, split_folders=False)
    assert len(build_dataset("folder", tmp_path, "train", cache=False)) == 16
    val = build_dataset("folder", tmp_path, "val", val_fraction=0.25, cache=False)
    assert np.bincount(val.labels).tolist() == [2, 2]
    with pytest.raises(DataError, match="no train/test sub-folders"):
        build_dataset("folder", tmp_path, "test", cache=False)


def test_file_lists_csv_and_json(tmp_path: Path) -> None:
    made = make_user_folder(tmp_path / "files", split_folders=True)
    rows = [(str(p.relative_to(tmp_path)), key.split("/")[0], key.split("/")[1]) for key, v in made.items() for p in v]
    (tmp_path / "list.csv").write_text("path,label,split\n" + "\n".join(",".join(r) for r in rows) + "\n")
    csv_ds = build_dataset("filelist", tmp_path / "list.csv", "train", cache=False)
    assert csv_ds.classes == ["chair", "table"] and len(csv_ds) == 8
    items = [{"path": p, "label": ["chair", "table"].index(c), "split": s} for p, c, s in rows]
    (tmp_path / "list.json").write_text(json.dumps({"classes": ["chair", "table"], "items": items}))
    json_ds = build_dataset("filelist", tmp_path / "list.json", "test", cache=False)
    assert len(json_ds) == 8 and json_ds.labels.tolist() == [0] * 4 + [1] * 4
    (tmp_path / "plain.csv").write_text("\n".join(f"{p},{c}" for p, c, _ in rows) + "\n")
    assert len(build_dataset("filelist", tmp_path / "plain.csv", "all", cache=False)) == 16


@pytest.fixture(scope="module")
def mn40_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ModelNet40 HDF5 layout from real ModelNet10 shapes of six classes (4 train, 5 test each)."""
    root = tmp_path_factory.mktemp("mn40h5")
    for split, per_class in (("train", 4), ("test", 5)):
        data, labels = [], []
        for cls in ("bed", "chair", "desk", "monitor", "sofa", "toilet"):
            for f in sorted((MN10 / cls / split).glob("*.pcd"))[:per_class]:
                data.append(read_points(f).xyz)
                labels.append(MODELNET40_CLASSES.index(cls))
        with h5py.File(root / f"ply_data_{split}0.h5", "w") as f:
            f.create_dataset("data", data=np.stack(data))
            f.create_dataset("label", data=np.array(labels, dtype=np.uint8)[:, None])
    return root


def test_generated_fewshot_episode_is_seeded_and_consistent(mn40_h5: Path) -> None:
    kw = dict(way=5, shot=3, query=4, fold=2, cache=False)
    support = build_dataset("fewshot_modelnet40", mn40_h5, "train", **kw)
    query = build_dataset("fewshot_modelnet40", mn40_h5, "test", **kw)
    assert support.classes == query.classes and len(support.classes) == 5
    assert np.bincount(support.labels).tolist() == [3] * 5 and np.bincount(query.labels).tolist() == [4] * 5
    for ds in (support, query):
        for i in range(len(ds)):
            assert Path(ds[i]["path"].split("[")[0]).exists()
    same = build_dataset("fewshot_modelnet40", mn40_h5, "train", **kw, seed=9)
    other_fold = build_dataset("fewshot_modelnet40", mn40_h5, "train", **{**kw, "fold": 3})
    assert same.paths == support.paths  # the training seed does not change the task
    assert other_fold.paths != support.paths
    with pytest.raises(DataError, match="6-way episode|7-way episode"):
        build_dataset("fewshot_modelnet40", mn40_h5, "train", **{**kw, "way": 7})


def test_released_fewshot_fold_pickle(tmp_path: Path) -> None:
    clouds = [read_points(f).xyz for f in sorted(MN10.glob("*/test/*.pcd"))[:30]]
    fold = {
        "train": [(clouds[i], i % 5, f"class{i % 5}") for i in range(10)],
        "test": [(clouds[10 + i], i % 5, f"class{i % 5}") for i in range(20)],
    }
    (tmp_path / "5way_2shot").mkdir()
    with open(tmp_path / "5way_2shot" / "0.pkl", "wb") as fh:
        pickle.dump(fold, fh)
    ds = build_dataset("fewshot_modelnet40", tmp_path, "test", way=5, shot=2, fold=0, normalize=False, cache=False)
    assert len(ds) == 20 and ds.classes == [f"class{k}" for k in range(5)]
    np.testing.assert_array_equal(ds[3]["points"].numpy(), clouds[13])
    assert int(ds[3]["label"]) == 3


def test_collate_stacks_and_names_the_odd_file(tmp_path: Path) -> None:
    ds = build_dataset("shapenetpart", DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal", "val", cache=False)
    fixed = build_dataset("shapenetpart", DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal", "val",
                          num_points=1024, cache=False)
    batch = collate([fixed[i] for i in range(3)])
    assert batch["points"].shape == (3, 1024, 3) and batch["seg"].shape == (3, 1024) and len(batch["path"]) == 3
    with pytest.raises(DataError, match=Path(ds[1]["path"]).name):
        collate([ds[0], ds[1]])


@pytest.mark.parametrize("call,error,fragment", [
    (lambda: build_dataset("modelnet99", MN10), ConfigError, "unknown dataset"),
    (lambda: build_dataset("modelnet_points", MN10, colour=True), ConfigError, "colour"),
    (lambda: build_dataset("modelnet_points", MN10, "dev"), ConfigError, "split"),
    (lambda: build_dataset("modelnet_points", MN10, sampling="grid"), ConfigError, "sampling"),
    (lambda: build_dataset("modelnet_points", MN10, num_points=0), ConfigError, "num_points"),
    (lambda: build_dataset("modelnet_points", MN10, subset=5000, cache=False), ConfigError, "subset"),
    (lambda: build_dataset("modelnet_points", MN10, seed=-1, cache=False), ConfigError, "seed"),
    (lambda: build_dataset("modelnet_points", MN10, up_axis="w", cache=False), ConfigError, "up_axis"),
    (lambda: build_dataset("scanobjectnn", MN10, variant="hardest"), ConfigError, "variant"),
])
def test_bad_options_raise_config_error(call: object, error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        call()


def test_registry_discovers_every_layout_module_on_first_use() -> None:
    """In a fresh interpreter (no layout module imported yet) the table fills itself from the package,
    and the unknown-name error lists what it found."""
    code = (
        "import sys; from appt.data import available_datasets, build_dataset\n"
        "assert 'appt.data.scanobjectnn' not in sys.modules\n"
        "print(','.join(available_datasets()))\n"
        "try: build_dataset('modelnet99', '.')\n"
        "except ValueError as e: print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    names = "fewshot_modelnet40 filelist folder modelnet40_h5 modelnet40_txt modelnet_off modelnet_points scanobjectnn shapenetpart"
    assert out[0].split(",") == names.split()
    assert out[1] == f"unknown dataset 'modelnet99'; available: {', '.join(names.split())}"


def test_up_axis_override_drives_rotation_and_height() -> None:
    ds = build_dataset("modelnet_points", MN10, "test", num_points=1024, use_height=True, subset=2, cache=False)
    assert ds.up_axis == 2
    s = ds[0]["points"]
    np.testing.assert_allclose(s[:, 3].numpy(), (s[:, 2] - s[:, 2].min()).numpy(), atol=1e-6)
    y = build_dataset("modelnet_points", MN10, "test", num_points=1024, use_height=True, subset=2, up_axis="y",
                      transforms=["rotate"], cache=False)
    p, raw = y[0]["points"], ds[0]["points"]
    torch.testing.assert_close(p[:, 1], raw[:, 1])  # rotation about y keeps y
    np.testing.assert_allclose(p[:, 3].numpy(), (p[:, 1] - p[:, 1].min()).numpy(), atol=1e-6)
