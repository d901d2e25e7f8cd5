"""ModelNet-C corruptions on real shapes: contract, determinism, severity, channels, specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pypcd4 import PointCloud

from appt.data.corruptions import (
    CORRUPTIONS,
    LEVELS,
    corrupt,
    corrupt_with_source,
    corrupted_size,
    parse_corruption,
)
from appt.errors import ConfigError, DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELNET10 = DATA / "modelnet10_pcd" / "ModelNet10" / "pcd"
SHAPES = ["bathtub/test/bathtub_0107", "chair/test/chair_0890", "desk/test/desk_0201", "sofa/test/sofa_0681"]
CAP = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal" / "02954340" / "cap_test_00.txt"


def unit_sphere(xyz: np.ndarray) -> np.ndarray:
    xyz = xyz - xyz.mean(axis=0)
    return (xyz / np.linalg.norm(xyz, axis=1).max()).astype(np.float32)


def load_modelnet(name: str) -> np.ndarray:
    return unit_sphere(PointCloud.from_path(MODELNET10 / f"{name}.pcd").numpy()[:, :3].astype(np.float64))


def load_cap() -> np.ndarray:
    """ShapeNetPart cap: (N, 7) x y z nx ny nz part, xyz moved to the unit sphere."""
    rows = np.loadtxt(CAP, dtype=np.float32)
    rows[:, :3] = unit_sphere(rows[:, :3].astype(np.float64))
    return rows


@pytest.fixture(scope="module")
def shapes() -> list[np.ndarray]:
    return [load_modelnet(name) for name in SHAPES]


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    d = ((a[:, None, :3] - b[None, :, :3]) ** 2).sum(-1)
    return float(d.min(axis=1).mean() + d.min(axis=0).mean())


def fitted_linear(clean: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Least-squares affine fit ``out ~ clean @ A + t`` (rows correspond) -> ``A (3, 3)``."""
    design = np.c_[clean[:, :3], np.ones(len(clean))].astype(np.float64)
    return np.linalg.lstsq(design, out[:, :3].astype(np.float64), rcond=None)[0][:3]


def effect(kind: str, clean: np.ndarray, out: np.ndarray) -> float:
    """Per-kind severity measure: rotation angle, scale anisotropy, else Chamfer distance to clean."""
    if kind == "rotate":
        rot = fitted_linear(clean, out)
        return float(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))
    if kind == "scale":
        singular = np.linalg.svd(fitted_linear(clean, out), compute_uv=False)
        return float(singular[0] / singular[-1])
    return chamfer(clean, out)


# -------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_every_level_keeps_dtype_and_channels_and_declared_size(kind: str) -> None:
    cap = load_cap()
    for cloud in (load_modelnet(SHAPES[0]), cap):
        for level in LEVELS:
            out = corrupt(cloud, kind, level, rng=level)
            assert out.dtype == np.float32 and out.ndim == 2
            assert out.shape == (corrupted_size(len(cloud), kind, level), cloud.shape[1])
            assert np.isfinite(out).all()


def test_point_counts_are_modelnet_c_counts_at_1024_points() -> None:
    sizes = {kind: [corrupted_size(1024, kind, level) for level in LEVELS] for kind in CORRUPTIONS}
    assert sizes["dropout_global"] == [768, 640, 512, 384, 256]
    assert sizes["dropout_local"] == [924, 824, 724, 624, 524]
    assert sizes["add_global"] == [1034, 1044, 1054, 1064, 1074]
    assert sizes["add_local"] == [1124, 1224, 1324, 1424, 1524]
    for kind in ("jitter", "scale", "rotate"):
        assert sizes[kind] == [1024] * 5


def test_input_is_not_modified(shapes: list[np.ndarray]) -> None:
    cloud = shapes[0]
    before = cloud.copy()
    for kind in CORRUPTIONS:
        corrupt(cloud, kind, 5, rng=0)
    np.testing.assert_array_equal(cloud, before)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_same_seed_same_output_and_different_seed_differs(kind: str, shapes: list[np.ndarray]) -> None:
    cloud = shapes[1]
    a = corrupt(cloud, kind, 3, rng=7)
    np.testing.assert_array_equal(a, corrupt(cloud, kind, 3, rng=7))
    np.testing.assert_array_equal(a, corrupt(cloud, kind, 3, rng=np.random.default_rng(7)))
    b = corrupt(cloud, kind, 3, rng=8)
    assert a.shape != b.shape or not np.array_equal(a, b)


# -------------------------------------------------------------------------------- severity
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_effect_grows_strictly_with_severity_on_real_shapes(kind: str, shapes: list[np.ndarray]) -> None:
    for seed, cloud in enumerate(shapes):
        outs = [corrupt(cloud, kind, level, rng=seed) for level in LEVELS]
        effects = [effect(kind, cloud, out) for out in outs]
        assert np.all(np.diff(effects) > 0), (kind, SHAPES[seed], effects)
        changed = [abs(len(out) - len(cloud)) / len(cloud) for out in outs]  # fraction dropped/added
        if kind.startswith(("dropout", "add")):
            assert np.all(np.diff(changed) > 0), (kind, changed)


def test_rotation_angles_respect_the_modelnet_c_limit(shapes: list[np.ndarray]) -> None:
    for seed in range(20):
        for level in LEVELS:
            out = corrupt(shapes[0], "rotate", level, rng=seed)
            rot = fitted_linear(shapes[0], out)
            np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-4)
            # three Euler angles of at most pi/6 * level/5 each: total angle at most 3x that
            angle = np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))
            assert angle <= 3 * np.pi / 6 * level / 5 + 1e-4


def test_scale_returns_to_the_unit_sphere(shapes: list[np.ndarray]) -> None:
    out = corrupt(shapes[2], "scale", 5, rng=1)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    assert np.linalg.norm(out, axis=1).max() == pytest.approx(1.0, abs=1e-5)


def test_local_dropout_cuts_holes_global_dropout_thins(shapes: list[np.ndarray]) -> None:
    # level 5: local drops 500 points, global 768, yet local leaves clean points farther from the rest
    for seed, cloud in enumerate(shapes):
        local, global_ = (corrupt(cloud, kind, 5, rng=seed) for kind in ("dropout_local", "dropout_global"))
        assert len(local) > len(global_)
        assert chamfer(cloud, local) > chamfer(cloud, global_)


@pytest.mark.parametrize("kind", ["add_global", "add_local"])
def test_added_points_stay_in_the_unit_ball(kind: str, shapes: list[np.ndarray]) -> None:
    for seed, cloud in enumerate(shapes):
        out = corrupt(cloud, kind, 5, rng=seed)
        np.testing.assert_array_equal(out[: len(cloud)], cloud)
        assert np.linalg.norm(out[len(cloud) :], axis=1).max() <= 1.0 + 1e-6


def test_local_additions_lie_near_the_surface_global_ones_do_not(shapes: list[np.ndarray]) -> None:
    def added_distance(kind: str, cloud: np.ndarray) -> float:
        out = corrupt(cloud, kind, 5, rng=0)
        d = ((out[len(cloud) :, None] - cloud[None]) ** 2).sum(-1).min(axis=1)
        return float(np.sqrt(d).mean())

    for cloud in shapes:
        assert added_distance("add_local", cloud) < added_distance("add_global", cloud)


# -------------------------------------------------------------------------------- channels
@pytest.mark.parametrize("kind", ["dropout_global", "dropout_local", "add_global", "add_local", "jitter"])
def test_extra_channels_follow_their_source_point(kind: str) -> None:
    cap = load_cap()  # x y z nx ny nz part
    out, source = corrupt_with_source(cap, kind, 4, rng=3)
    np.testing.assert_array_equal(out[:, 3:], cap[source, 3:])
    if kind.startswith("dropout"):  # surviving rows are original rows, unchanged and not repeated
        np.testing.assert_array_equal(out, cap[source])
        assert len(np.unique(source)) == len(source)
    if kind.startswith("add"):  # an added point takes the channels of its nearest original point
        added = out[len(cap) :, :3]
        nearest = ((added[:, None] - cap[None, :, :3]) ** 2).sum(-1).argmin(axis=1)
        np.testing.assert_array_equal(out[len(cap) :, 3:], cap[nearest, 3:])


@pytest.mark.parametrize("kind", ["rotate", "scale"])
def test_normals_follow_rotation_and_scaling(kind: str) -> None:
    cap = load_cap()
    out = corrupt(cap, kind, 5, rng=4)
    linear = fitted_linear(cap, out)
    expected = cap[:, 3:6] @ np.linalg.inv(linear).T
    length = np.linalg.norm(expected, axis=1, keepdims=True)
    assert (length == 0).any()  # this real file has a zero normal: it must stay zero
    expected = np.divide(expected, length, out=np.zeros_like(expected), where=length > 0)
    np.testing.assert_allclose(out[:, 3:6], expected, atol=1e-4)
    np.testing.assert_array_equal(out[:, 6], cap[:, 6])  # part labels untouched


def test_bad_points_raise_data_error() -> None:
    with pytest.raises(DataError, match="points"):
        corrupt(np.zeros((10, 2), np.float32), "jitter", 1, rng=0)
    with pytest.raises(DataError, match="points"):
        corrupt(np.zeros(10, np.float32), "jitter", 1, rng=0)


# -------------------------------------------------------------------------------- specs
def test_parse_corruption_specs() -> None:
    assert parse_corruption("jitter:3") == [("jitter", 3)]
    assert parse_corruption("rotate") == [("rotate", level) for level in LEVELS]
    assert parse_corruption(" scale:5 , add_local:1") == [("scale", 5), ("add_local", 1)]
    assert parse_corruption("all") == [(kind, level) for kind in CORRUPTIONS for level in LEVELS]
    assert parse_corruption("all:2") == [(kind, 2) for kind in CORRUPTIONS]


@pytest.mark.parametrize("spec", ["blur", "blur:2", "jitter:0", "jitter:6", "jitter:x", "jitter:2.5", "jitter:"])
def test_bad_specs_raise_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="corruption"):
        parse_corruption(spec)


@pytest.mark.parametrize("level", [0, 6, True, 2.0, "3"])
def test_corrupt_rejects_bad_levels(level: object, shapes: list[np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="level"):
        corrupt(shapes[0], "jitter", level, rng=0)  # type: ignore[arg-type]


def test_corrupt_rejects_unknown_kind(shapes: list[np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="unknown kind 'blur'"):
        corrupt(shapes[0], "blur", 1, rng=0)
