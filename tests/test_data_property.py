"""Property-based: random arrays and damaged real files through the single-file reader, random
clouds through the transforms and the preparation. The only exception allowed is DataError, and
whatever is returned satisfies the cloud invariants."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from appt.data import Cloud, Preparation, build_transforms, read_points
from appt.data.cloud import MAX_ABS_COORD
from appt.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_FILES = {
    ".pcd": (DATA / "modelnet10_pcd" / "ModelNet10" / "pcd" / "bed" / "test" / "bed_0516.pcd").read_bytes(),
    ".off": (DATA / "modelnet_off" / "ModelNet10" / "sofa" / "test" / "sofa_0681.off").read_bytes(),
    ".txt": "\n".join(
        (DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal" / "02954340" / "cap_val_00.txt").read_text().splitlines()[:120]
    ).encode(),
}
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from(["f2", "f4", "f8", "i1", "i4", "i8", "u1", "u8", "?", "c8"])
arrays = DTYPES.flatmap(
    lambda dt: hnp.arrays(
        np.dtype(dt),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9),
        elements=None if dt == "?" else hnp.from_dtype(np.dtype(dt), allow_nan=True, allow_infinity=True)
        if dt[0] in "fc" else hnp.from_dtype(np.dtype(dt)),
    )
)


def check_cloud(c: Cloud) -> None:
    n = len(c)
    assert n > 0 and c.xyz.shape == (n, 3) and c.xyz.dtype == np.float32
    assert np.isfinite(c.xyz).all() and np.abs(c.xyz).max() <= MAX_ABS_COORD
    for field in (c.normals, c.colors):
        assert field is None or (field.shape == (n, 3) and np.isfinite(field).all())
    assert c.seg is None or (c.seg.shape == (n,) and c.seg.dtype == np.int64)


def read_or_data_error(path: Path, **kw: object) -> None:
    try:
        cloud = read_points(path, **kw)
    except DataError as err:
        assert path.name in err.path
        return
    check_cloud(cloud)


def write(path: Path, arr: np.ndarray) -> None:
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, arr)
    elif suffix == ".npz":
        np.savez(path, points=arr)
    elif suffix == ".h5":
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=arr)
    else:  # text: rows of the array as written by NumPy (any dtype)
        path.write_text("\n".join(" ".join(str(v) for v in np.atleast_1d(row).ravel()) for row in np.atleast_1d(arr)))


@FAST
@given(arr=arrays, suffix=st.sampled_from([".npy", ".npz", ".h5", ".txt", ".xyz"]), index=st.one_of(st.none(), st.integers(0, 10)))
def test_random_arrays_read_or_raise_data_error(arr: np.ndarray, suffix: str, index: int | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"cloud{suffix}"
        write(path, arr)
        read_or_data_error(path, index=index)


@FAST
@given(suffix=st.sampled_from(sorted(REAL_FILES)), cut=st.floats(0.0, 1.0),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6))
def test_damaged_real_files_read_or_raise_data_error(suffix: str, cut: float, flips: list[tuple[float, int]]) -> None:
    blob = bytearray(REAL_FILES[suffix][: max(1, int(len(REAL_FILES[suffix]) * cut))])
    for where, value in flips:
        blob[min(int(where * len(blob)), len(blob) - 1)] = value
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"damaged{suffix}"
        path.write_bytes(bytes(blob))
        read_or_data_error(path, mesh_points=64)


finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@st.composite
def clouds(draw: st.DrawFn) -> Cloud:
    n = draw(st.integers(1, 40))
    xyz = draw(hnp.arrays(np.float32, (n, 3), elements=finite))
    if draw(st.booleans()):  # all points equal / heavily duplicated clouds are valid input
        xyz[:] = xyz[0]
    normals = draw(st.none() | hnp.arrays(np.float32, (n, 3), elements=st.floats(-1, 1, width=32)))
    seg = draw(st.none() | hnp.arrays(np.int64, (n,), elements=st.integers(0, 49)))
    return Cloud(xyz, normals, None, seg, draw(st.integers(0, 2)))


transform_specs = st.lists(st.one_of(
    st.just("normalize"), st.just("shuffle"), st.just("rotate"), st.just("perturb_rotation"),
    st.builds(lambda lo, k, a: {"name": "scale", "low": lo, "high": lo * k, "anisotropic": a},
              st.floats(0.01, 10), st.floats(1, 5), st.booleans()),
    st.builds(lambda s: {"name": "translate", "shift": s}, st.floats(0, 100)),
    st.builds(lambda s, c: {"name": "jitter", "sigma": s, "clip": c}, st.floats(0, 1), st.floats(0, 1)),
    st.builds(lambda r: {"name": "dropout", "max_ratio": r}, st.floats(0, 0.99)),
    st.builds(lambda n, m: {"name": "resample", "num_points": n, "method": m},
              st.integers(1, 64), st.sampled_from(["fps", "random", "first"])),
), max_size=6)


@FAST
@given(cloud=clouds(), specs=transform_specs, seed=st.integers(0, 2**32 - 1))
def test_transforms_keep_clouds_valid(cloud: Cloud, specs: list, seed: int) -> None:
    out = build_transforms(specs)(cloud, np.random.default_rng(seed))
    check_cloud(out)
    assert (out.normals is None) == (cloud.normals is None) and (out.seg is None) == (cloud.seg is None)


@FAST
@given(cloud=clouds(), num_points=st.none() | st.integers(1, 64), sampling=st.sampled_from(["fps", "random", "first"]),
       normalize=st.booleans(), height=st.booleans(), specs=transform_specs)
def test_preparation_gives_the_promised_shape(cloud: Cloud, num_points: int | None, sampling: str, normalize: bool,
                                              height: bool, specs: list) -> None:
    prep = Preparation(num_points, sampling, normalize, use_normals=cloud.normals is not None, use_height=height)
    out = prep.finish(prep.fixed(cloud), np.random.default_rng(0), build_transforms(specs), "x")["points"]
    resampled = any(isinstance(s, dict) and s["name"] == "resample" for s in specs)
    if num_points is not None and not resampled:
        assert out.shape[0] == num_points
    assert out.shape[1] == prep.channels and out.dtype == np.float32 and np.isfinite(out).all()
    if normalize and not specs:
        assert np.linalg.norm(out[:, :3], axis=1).max() <= 1.0 + 1e-5
