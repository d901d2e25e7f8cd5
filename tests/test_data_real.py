"""Every real file in ../shared/data goes through its loader; counts checked against the files/README."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from appt.data import build_dataset, read_points
from appt.data.modelnet import MODELNET10_CLASSES, MODELNET40_CLASSES
from appt.data.shapenetpart import CATEGORIES, PART_RANGES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MN10 = DATA / "modelnet10_pcd" / "ModelNet10" / "pcd"
MN40_TXT = DATA / "modelnet40_normal_resampled"
SNP = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal"


def readme_modelnet10_counts() -> dict[str, tuple[int, int]]:
    """``class -> (train, test)`` parsed from the data README's ModelNet10 row."""
    text = (DATA / "README.md").read_text()
    counts = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"(\w+) (\d+)/(\d+)", text)}
    return {c: counts[c] for c in MODELNET10_CLASSES}


@pytest.mark.parametrize("split,column", [("train", 0), ("test", 1)])
def test_all_modelnet10_pcd_clouds_load_with_readme_counts(split: str, column: int) -> None:
    expected = readme_modelnet10_counts()
    ds = build_dataset("modelnet_points", MN10, split=split, num_points=1024, cache=False)
    assert ds.classes == sorted(expected)
    assert len(ds) == sum(v[column] for v in expected.values())
    per_class = np.bincount(ds.labels, minlength=10)
    assert {c: int(per_class[i]) for i, c in enumerate(ds.classes)} == {c: v[column] for c, v in expected.items()}
    radii = np.empty(len(ds))
    for i in range(len(ds)):
        s = ds[i]
        pts = s["points"]
        assert pts.shape == (1024, 3) and pts.dtype == torch.float32
        assert torch.isfinite(pts).all()
        assert Path(s["path"]).parts[-3] == ds.classes[int(s["label"])]
        radii[i] = float(pts.norm(dim=1).max())
    # raw mesh units (0.2 .. 2.3e5) all end on the unit sphere, centred
    np.testing.assert_allclose(radii, 1.0, atol=1e-5)


def test_modelnet10_split_sizes_match_the_readme_total() -> None:
    text = (DATA / "README.md").read_text()
    train, test = (int(x.replace(",", "")) for x in re.search(r"split ([\d,]+) train / ([\d,]+) test", text).groups())
    assert len(build_dataset("modelnet_points", MN10, "train", cache=False)) == train
    assert len(build_dataset("modelnet_points", MN10, "test", cache=False)) == test


def test_modelnet40_txt_bench_shapes_follow_the_shape_lists(tmp_path: Path) -> None:
    names = (MN40_TXT / "modelnet40_shape_names.txt").read_text().split()
    assert names == MODELNET40_CLASSES
    for split in ("train", "test"):
        ids = (MN40_TXT / f"modelnet40_{split}.txt").read_text().split()
        ds = build_dataset("modelnet40_txt", MN40_TXT, split, num_points=1024, use_normals=True, cache_dir=tmp_path)
        assert len(ds) == len(ids) and ds.num_classes == 40
        assert set(ds.labels.tolist()) == {names.index("bench")}
        assert [Path(p).stem for p in ds.paths] == ids
        s = ds[0]
        assert s["points"].shape == (1024, 6)
        normals = s["points"][:, 3:]
        assert torch.allclose(normals.norm(dim=1), torch.ones(1024), atol=0.02)


def test_bench_txt_files_equal_the_npz_rows_and_npz_split_sizes() -> None:
    npz = np.load(DATA / "modelnet40_bench_all193.npz")
    ids, split, points = list(npz["ids"]), npz["split"], npz["points"]
    assert points.shape == (193, 10000, 6)
    assert (split == "train").sum() == 173 and (split == "test").sum() == 20
    txts = sorted((MN40_TXT / "bench").glob("*.txt"))
    assert len(txts) == 30
    for txt in txts:
        cloud = read_points(txt)
        assert len(cloud) == 10000 and cloud.normals is not None
        np.testing.assert_array_equal(cloud.xyz, points[ids.index(txt.stem), :, :3])
        np.testing.assert_array_equal(cloud.normals, points[ids.index(txt.stem), :, 3:])


def test_npz_rows_read_by_index_with_normals() -> None:
    path = DATA / "modelnet40_bench_all193.npz"
    points = np.load(path)["points"]
    for row in (0, 96, 192):
        c = read_points(path, index=row)
        np.testing.assert_array_equal(c.xyz, points[row, :, :3])
        np.testing.assert_array_equal(c.normals, points[row, :, 3:])


@pytest.mark.parametrize("version,classes", [("ModelNet10", ["sofa", "table"]), ("ModelNet40", ["desk", "monitor"])])
def test_raw_princeton_off_meshes_are_sampled(version: str, classes: list[str], tmp_path: Path) -> None:
    root = DATA / "modelnet_off" / version
    for split in ("train", "test"):
        ds = build_dataset("modelnet_off", root, split, num_points=512, use_normals=True, cache_dir=tmp_path)
        assert ds.classes == classes and len(ds) == 2 and ds.up_axis == 2
        for i in range(len(ds)):
            s = ds[i]
            assert s["points"].shape == (512, 6)
            assert torch.isfinite(s["points"]).all()
            assert float(s["points"][:, :3].norm(dim=1).max()) == pytest.approx(1.0, abs=1e-5)
            assert Path(s["path"]).parts[-3] == classes[int(s["label"])]


def test_off_samples_lie_on_the_mesh_surface() -> None:
    import trimesh

    path = DATA / "modelnet_off" / "ModelNet40" / "monitor" / "train" / "monitor_0001.off"
    mesh = trimesh.load(str(path), process=False)
    cloud = read_points(path, mesh_points=300, seed=3)
    _, dist, _ = trimesh.proximity.closest_point(mesh, cloud.xyz.astype(np.float64))
    assert dist.max() < 1e-3 * float(np.ptp(mesh.vertices, axis=0).max())
    again = read_points(path, mesh_points=300, seed=3)
    np.testing.assert_array_equal(cloud.xyz, again.xyz)


@pytest.mark.parametrize("split,count", [("test", 11), ("val", 5)])
def test_shapenetpart_cap_shapes_with_part_labels(split: str, count: int, tmp_path: Path) -> None:
    ds = build_dataset("shapenetpart", SNP, split, num_points=2048, sampling="random", use_normals=True, cache_dir=tmp_path)
    assert len(ds) == count and ds.classes == list(CATEGORIES)
    cap = CATEGORIES.index("Cap")
    for i in range(len(ds)):
        s = ds[i]
        rows = np.loadtxt(s["path"])
        assert s["points"].shape == (2048, 6) and s["seg"].shape == (2048,)
        assert int(s["category"]) == int(s["label"]) == cap
        assert set(s["seg"].tolist()) <= set(PART_RANGES["Cap"])
        assert set(s["seg"].tolist()) == set(rows[:, 6].astype(int).tolist())


def test_shapenetpart_all_points_keep_their_part_labels(tmp_path: Path) -> None:
    ds = build_dataset("shapenetpart", SNP, "test", normalize=False, cache_dir=tmp_path)
    s = ds[3]
    rows = np.loadtxt(s["path"]).astype(np.float32)
    np.testing.assert_array_equal(s["points"].numpy(), rows[:, :3])
    np.testing.assert_array_equal(s["seg"].numpy(), rows[:, 6].astype(np.int64))


def test_shapenetpart_empty_official_train_list_is_refused() -> None:
    from appt.errors import DataError

    with pytest.raises(DataError, match="holds no shapes"):
        build_dataset("shapenetpart", SNP, "train", cache=False)
