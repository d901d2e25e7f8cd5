"""HDF5 releases (ModelNet40 ply_hdf5_2048, ScanObjectNN h5_files) written from real shapes in the
official structure (dataset names, dtypes, shapes, file names) and read back through the datasets."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from appt.data import build_dataset, read_points
from appt.data.modelnet import MODELNET40_CLASSES
from appt.data.scanobjectnn import SCANOBJECTNN_CLASSES
from appt.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OFF = DATA / "modelnet_off"
# the eight real meshes and their ScanObjectNN classes
MESHES = {"sofa": "sofa", "table": "table", "desk": "desk", "monitor": "display"}


@pytest.fixture(scope="module")
def bench() -> dict[str, np.ndarray]:
    """The 193 real ModelNet40 bench shapes, first 2,048 of their 10,000 points (xyz, normals)."""
    z = np.load(DATA / "modelnet40_bench_all193.npz")
    return {"points": z["points"][:, :2048], "split": z["split"]}


def write_modelnet40_h5(root: Path, bench: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``modelnet40_ply_hdf5_2048`` layout: train split over two files, list files, shape names."""
    root.mkdir()
    label = MODELNET40_CLASSES.index("bench")
    written = {}
    for split, chunks in (("train", 2), ("test", 1)):
        pts = bench["points"][bench["split"] == split]
        written[split] = pts
        names = []
        for k, part in enumerate(np.array_split(np.arange(len(pts)), chunks)):
            name = f"ply_data_{split}{k}.h5"
            with h5py.File(root / name, "w") as f:
                f.create_dataset("data", data=pts[part, :, :3].astype(np.float32))
                f.create_dataset("normal", data=pts[part, :, 3:].astype(np.float32))
                f.create_dataset("label", data=np.full((len(part), 1), label, dtype=np.uint8))
                f.create_dataset("faceId", data=np.zeros((len(part), 2048), dtype=np.int32))
            names.append(f"data/modelnet40_ply_hdf5_2048/{name}")
        (root / f"{split}_files.txt").write_text("\n".join(names) + "\n")
    (root / "shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
    return written


def test_modelnet40_h5_reads_official_layout(tmp_path: Path, bench: dict[str, np.ndarray]) -> None:
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    written = write_modelnet40_h5(root, bench)
    for split, count in (("train", 173), ("test", 20)):
        ds = build_dataset("modelnet40_h5", root, split, normalize=False, use_normals=True, cache=False)
        assert len(ds) == count == len(written[split]) and ds.classes == MODELNET40_CLASSES
        assert set(ds.labels.tolist()) == {MODELNET40_CLASSES.index("bench")}
        for i in (0, count // 2, count - 1):
            np.testing.assert_array_equal(ds[i]["points"].numpy(), written[split][i])
        assert ds.paths[0].endswith(f"ply_data_{split}0.h5[0]")


def test_modelnet40_h5_fps_to_1024_is_cached(tmp_path: Path, bench: dict[str, np.ndarray]) -> None:
    root = tmp_path / "h5"
    write_modelnet40_h5(root, bench)
    ds = build_dataset("modelnet40_h5", root, "test", num_points=1024, cache_dir=tmp_path / "cache")
    first = [ds[i]["points"] for i in range(len(ds))]
    assert all(p.shape == (1024, 3) for p in first)
    assert len(list((tmp_path / "cache").rglob("*.cloud"))) == len(ds)
    again = [ds[i]["points"] for i in range(len(ds))]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first, again))


def test_modelnet40_h5_without_list_files_uses_the_glob(tmp_path: Path, bench: dict[str, np.ndarray]) -> None:
    root = tmp_path / "h5"
    write_modelnet40_h5(root, bench)
    for f in ("train_files.txt", "test_files.txt", "shape_names.txt"):
        (root / f).unlink()
    assert len(build_dataset("modelnet40_h5", root, "train", cache=False)) == 173


def test_single_h5_file_reads_one_cloud_by_index(tmp_path: Path, bench: dict[str, np.ndarray]) -> None:
    root = tmp_path / "h5"
    written = write_modelnet40_h5(root, bench)
    cloud = read_points(root / "ply_data_test0.h5", index=4)
    np.testing.assert_array_equal(cloud.xyz, written["test"][4, :, :3])
    np.testing.assert_array_equal(cloud.normals, written["test"][4, :, 3:])


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """``h5_files/`` with the three variants, from the eight real meshes sampled to 2,048 points.

    OBJ_BG adds a real-looking floor of background points under each object, OBJ_ONLY does not,
    PB_T50_RS holds rotated and 0.75-scaled copies: each file's content is distinguishable.
    """
    root = tmp_path_factory.mktemp("scanobjectnn") / "h5_files"
    rng = np.random.default_rng(0)
    clouds = {"train": [], "test": []}
    labels = {"train": [], "test": []}
    for off in sorted(OFF.glob("*/*/*/*.off")):
        split, cls = off.parent.name, off.parts[-3]
        xyz = read_points(off, mesh_points=2048, seed=1).xyz
        xyz = (xyz - xyz.mean(0)) / np.abs(xyz).max()
        clouds[split].append(xyz)
        labels[split].append(SCANOBJECTNN_CLASSES.index(MESHES[cls]))
    written = {}
    for variant, folder, suffix in (("obj_only", "main_split_nobg", ""), ("obj_bg", "main_split", ""),
                                    ("pb_t50_rs", "main_split", "_augmentedrot_scale75")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        written[variant] = {}
        for split in ("train", "test"):
            data = np.stack(clouds[split]).astype(np.float32)
            if variant == "obj_bg":
                floor = rng.uniform(-1, 1, size=(len(data), 400, 3)).astype(np.float32)
                floor[..., 1] = -1.0
                data = np.concatenate([data[:, :1648], floor], axis=1)
            if variant == "pb_t50_rs":
                c, s = np.cos(0.7), np.sin(0.7)
                data = (data @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32).T) * 0.75
            name = f"{'training' if split == 'train' else 'test'}_objectdataset{suffix}.h5"
            with h5py.File(root / folder / name, "w") as f:
                f.create_dataset("data", data=data)
                f.create_dataset("label", data=np.array(labels[split], dtype=np.int64))
                f.create_dataset("mask", data=np.zeros(data.shape[:2], dtype=np.int64))
            written[variant][split] = data
    return root, written


@pytest.mark.parametrize("variant", ["obj_bg", "obj_only", "pb_t50_rs"])
def test_scanobjectnn_variants_read_their_own_files(variant: str, scans: tuple) -> None:
    root, written = scans
    for split in ("train", "test"):
        ds = build_dataset("scanobjectnn", root, split, variant=variant, normalize=False, cache=False)
        assert len(ds) == 4 and ds.num_classes == 15
        assert sorted(ds.classes[k] for k in ds.labels) == sorted(MESHES.values())
        for i in range(len(ds)):
            np.testing.assert_array_equal(ds[i]["points"].numpy(), written[variant][split][i])


def test_scanobjectnn_height_channel_is_height_above_lowest_point(scans: tuple) -> None:
    root, _ = scans
    ds = build_dataset("scanobjectnn", root, "train", variant="obj_bg", num_points=1024, use_height=True,
                       transforms=["rotate", "scale"], cache=False)
    pts = ds[0]["points"]
    assert pts.shape == (1024, 4)
    np.testing.assert_allclose(pts[:, 3].numpy(), (pts[:, 1] - pts[:, 1].min()).numpy(), atol=1e-6)


def test_scanobjectnn_variant_folder_as_root(scans: tuple) -> None:
    root, written = scans
    ds = build_dataset("scanobjectnn", root / "main_split_nobg", "test", variant="obj_only", normalize=False, cache=False)
    np.testing.assert_array_equal(ds[0]["points"].numpy(), written["obj_only"]["test"][0])
    with pytest.raises(DataError, match="not found"):  # main_split holds OBJ_BG under the same file names
        build_dataset("scanobjectnn", root / "main_split", "test", variant="obj_only", cache=False)
