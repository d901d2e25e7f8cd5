"""read_points on every supported file type, written from real shapes: values survive the round trip."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from plyfile import PlyData, PlyElement
from pypcd4 import Encoding, PointCloud

from appt.data import Cloud, read_points
from appt.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAP = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal" / "02954340" / "cap_val_01.txt"
OFF = DATA / "modelnet_off" / "ModelNet40" / "desk" / "test" / "desk_0201.off"


@pytest.fixture(scope="module")
def cap() -> Cloud:
    """A real cap: xyz, normals, part labels; colours made from its part labels (red/blue)."""
    c = read_points(CAP)
    rgb = np.where((c.seg == 6)[:, None], [255, 40, 0], [0, 90, 255]).astype(np.uint8)
    return c.replace(colors=rgb)


def same_xyz(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("encoding,rgb_type", [(Encoding.ASCII, np.uint32), (Encoding.BINARY, np.uint32),
                                               (Encoding.BINARY, np.float32), (Encoding.BINARY_COMPRESSED, np.float32)])
def test_pcd_encodings_with_normals_and_colour(cap: Cloud, encoding: Encoding, rgb_type: type, tmp_path: Path) -> None:
    packed = PointCloud.encode_rgb(cap.colors).view(rgb_type)  # PCL's 0x00RRGGBB, as float or uint
    fields = ("x", "y", "z", "normal_x", "normal_y", "normal_z", "rgb", "label")
    data = [*cap.xyz.T, *cap.normals.T, packed, cap.seg.astype(np.uint32)]
    pc = PointCloud.from_points(data, fields, (np.float32,) * 6 + (rgb_type, np.uint32))
    pc.save(tmp_path / "cap.pcd", encoding=encoding)
    out = read_points(tmp_path / "cap.pcd")
    same_xyz(out.xyz, cap.xyz)
    same_xyz(out.normals, cap.normals)
    np.testing.assert_allclose(out.colors * 255, cap.colors, atol=1e-3)
    np.testing.assert_array_equal(out.seg, cap.seg)


@pytest.mark.parametrize("text", [True, False])
@pytest.mark.parametrize("extras", ["none", "normals", "normals+colour"])
def test_ply_ascii_and_binary(cap: Cloud, text: bool, extras: str, tmp_path: Path) -> None:
    cols = [("x", cap.xyz[:, 0]), ("y", cap.xyz[:, 1]), ("z", cap.xyz[:, 2])]
    if "normals" in extras:
        cols += [("nx", cap.normals[:, 0]), ("ny", cap.normals[:, 1]), ("nz", cap.normals[:, 2])]
    if "colour" in extras:
        cols += [("red", cap.colors[:, 0]), ("green", cap.colors[:, 1]), ("blue", cap.colors[:, 2])]
    v = np.empty(len(cap), dtype=[(n, "u1" if n in ("red", "green", "blue") else "f4") for n, _ in cols])
    for n, values in cols:
        v[n] = values
    PlyData([PlyElement.describe(v, "vertex")], text=text).write(str(tmp_path / "cap.ply"))
    out = read_points(tmp_path / "cap.ply")
    same_xyz(out.xyz, cap.xyz)
    assert (out.normals is not None) == ("normals" in extras)
    assert (out.colors is not None) == ("colour" in extras)
    if out.colors is not None:
        np.testing.assert_allclose(out.colors * 255, cap.colors, atol=1e-3)


def test_text_tables_by_column_rule(cap: Cloud, tmp_path: Path) -> None:
    np.savetxt(tmp_path / "a.xyz", cap.xyz)
    np.savetxt(tmp_path / "b.txt", np.column_stack([cap.xyz, cap.normals]), delimiter=",")
    np.savetxt(tmp_path / "c.txt", np.column_stack([cap.xyz, cap.colors]), fmt="%.6f %.6f %.6f %d %d %d")
    (tmp_path / "d.pts").write_text(f"{len(cap)}\n" + "\n".join(" ".join(map(str, p)) + " 17" for p in cap.xyz))
    assert read_points(tmp_path / "a.xyz").normals is None
    b = read_points(tmp_path / "b.txt")
    same_xyz(b.normals, cap.normals)
    c = read_points(tmp_path / "c.txt")
    assert c.normals is None and np.allclose(c.colors * 255, cap.colors)
    d = read_points(tmp_path / "d.pts")  # count line, then x y z intensity
    same_xyz(d.xyz, cap.xyz)
    assert d.normals is None and d.colors is None
    shapenet = read_points(CAP)  # 7 columns: x y z nx ny nz part
    assert set(np.unique(shapenet.seg)) == {6, 7}


def test_numpy_files(cap: Cloud, tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.column_stack([cap.xyz, cap.normals]))
    same_xyz(read_points(tmp_path / "a.npy").normals, cap.normals)
    rec = np.zeros(len(cap), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    rec["x"], rec["y"], rec["z"] = cap.xyz.T
    np.save(tmp_path / "rec.npy", rec)
    same_xyz(read_points(tmp_path / "rec.npy").xyz, cap.xyz)
    stack = np.stack([cap.xyz, cap.xyz[::-1]])
    np.save(tmp_path / "stack.npy", stack)
    same_xyz(read_points(tmp_path / "stack.npy", index=1).xyz, cap.xyz[::-1])
    np.savez(tmp_path / "z.npz", points=stack, normals=np.stack([cap.normals, cap.normals[::-1]]), seg=np.stack([cap.seg, cap.seg[::-1]]))
    z = read_points(tmp_path / "z.npz", index=1)
    same_xyz(z.normals, cap.normals[::-1])
    np.testing.assert_array_equal(z.seg, cap.seg[::-1])
    np.savez(tmp_path / "one.npz", cap.xyz)  # a single unnamed array
    same_xyz(read_points(tmp_path / "one.npz").xyz, cap.xyz)


def test_h5_single_cloud_and_stack(cap: Cloud, tmp_path: Path) -> None:
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f.create_dataset("points", data=cap.xyz)
        f.create_dataset("normals", data=cap.normals)
    one = read_points(tmp_path / "one.h5")
    same_xyz(one.normals, cap.normals)
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f.create_dataset("data", data=np.stack([cap.xyz] * 3))
        f.create_dataset("label", data=np.zeros((3, 1), np.uint8))
    same_xyz(read_points(tmp_path / "stack.h5", index=2).xyz, cap.xyz)
    with pytest.raises(DataError, match="pass index="):
        read_points(tmp_path / "stack.h5")


@pytest.mark.parametrize("suffix", [".off", ".obj", ".stl"])
def test_meshes_are_sampled_on_their_surface(suffix: str, tmp_path: Path) -> None:
    import trimesh

    mesh = trimesh.load(str(OFF), process=False)
    path = tmp_path / f"desk{suffix}"
    mesh.export(str(path))
    cloud = read_points(path, mesh_points=500, seed=4)
    assert cloud.xyz.shape == (500, 3) and cloud.normals.shape == (500, 3)
    _, dist, tri = trimesh.proximity.closest_point(mesh, cloud.xyz.astype(np.float64))
    assert dist.max() < 1e-4 * float(np.ptp(mesh.vertices, axis=0).max())
    np.testing.assert_allclose(np.abs((cloud.normals * mesh.face_normals[tri]).sum(1)), 1.0, atol=1e-3)


def test_modelnet_off_header_quirk(tmp_path: Path) -> None:
    text = OFF.read_text().splitlines()
    (tmp_path / "quirk.off").write_text("OFF" + "\n".join(text[1:]) + "\n")  # "OFF5298 7608 0"
    np.testing.assert_array_equal(read_points(tmp_path / "quirk.off", seed=1).xyz, read_points(OFF, seed=1).xyz)
