"""Transforms and resampling on real clouds: what each one guarantees, seeding, composition."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from appt.data import Cloud, build_transforms, normalize, read_points
from appt.data.resample import fps_indices, resample
from appt.data.transforms import RandomRotate, RandomScale
from appt.errors import ConfigError
from appt.geometry import farthest_point_sample

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAP = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal" / "02954340" / "cap_test_00.txt"
TXT = DATA / "modelnet40_normal_resampled" / "bench" / "bench_0001.txt"


@pytest.fixture(scope="module")
def cap() -> Cloud:
    """A real ShapeNetPart cap: xyz, normals and part labels (~2,500 points)."""
    return read_points(CAP)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_normalize_centres_and_scales_to_unit_sphere(cap: Cloud) -> None:
    raw = cap.replace(xyz=cap.xyz * 250.0 + np.float32(1e4))
    out = normalize(raw)
    np.testing.assert_allclose(out.xyz.mean(0), 0.0, atol=1e-5)
    assert np.linalg.norm(out.xyz, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_normalize_rule_for_all_points_equal() -> None:
    out = normalize(Cloud(np.full((50, 3), 7.5, np.float32)))
    np.testing.assert_array_equal(out.xyz, 0.0)


def test_rotation_about_gravity_axis_keeps_height_and_rotates_normals(cap: Cloud) -> None:
    out = RandomRotate()(cap, rng(1))  # cap.up_axis == 1 (y)
    np.testing.assert_allclose(out.xyz[:, 1], cap.xyz[:, 1], atol=1e-6)
    assert not np.allclose(out.xyz[:, 0], cap.xyz[:, 0], atol=1e-3)
    # normals turn with the surface: the angle between a point and its normal is preserved
    dot_before = (cap.xyz * cap.normals).sum(1)
    dot_after = (out.xyz * out.normals).sum(1)
    np.testing.assert_allclose(dot_after, dot_before, atol=1e-5)
    z_up = RandomRotate()(cap.replace(up_axis=2), rng(1))
    np.testing.assert_allclose(z_up.xyz[:, 2], cap.xyz[:, 2], atol=1e-6)


def test_anisotropic_scale_keeps_normals_perpendicular_to_the_surface() -> None:
    # a tilted plane x + y + z = 0 with its true normal
    g = rng(2)
    u, v = g.normal(size=(2, 200, 1))
    xyz = (u * np.array([1, -1, 0]) + v * np.array([1, 1, -2])).astype(np.float32)
    normal = np.tile(np.array([1, 1, 1], np.float32) / math.sqrt(3), (200, 1))
    out = RandomScale(0.5, 2.0, anisotropic=True)(Cloud(xyz, normal), rng(3))
    a, b = out.xyz[1] - out.xyz[0], out.xyz[2] - out.xyz[0]
    assert abs(float(out.normals[0] @ a)) < 1e-4 and abs(float(out.normals[0] @ b)) < 1e-4
    np.testing.assert_allclose(np.linalg.norm(out.normals, axis=1), 1.0, atol=1e-6)


def test_jitter_is_clipped_and_translate_is_rigid(cap: Cloud) -> None:
    j = build_transforms([{"name": "jitter", "sigma": 0.5, "clip": 0.02}])(cap, rng())
    assert np.abs(j.xyz - cap.xyz).max() <= 0.02 + 1e-6
    t = build_transforms([{"name": "translate", "shift": 0.3}])(cap, rng())
    d = t.xyz - cap.xyz
    np.testing.assert_allclose(d, np.broadcast_to(d[0], d.shape), atol=1e-6)
    assert np.abs(d[0]).max() <= 0.3


def test_dropout_keeps_count_and_moves_part_labels_with_points(cap: Cloud) -> None:
    out = build_transforms([{"name": "dropout", "max_ratio": 0.8}])(cap, rng(5))
    assert len(out) == len(cap)
    replaced = (out.xyz == cap.xyz[0]).all(1)
    assert replaced.sum() > 1
    assert (out.seg[replaced] == cap.seg[0]).all()


@pytest.mark.parametrize("method", ["fps", "random", "first"])
def test_resample_down_moves_every_field_together(cap: Cloud, method: str) -> None:
    out = resample(cap, 512, method, rng())
    assert len(out) == 512 and out.normals.shape == (512, 3) and out.seg.shape == (512,)
    lookup = {tuple(p): (tuple(n), s) for p, n, s in zip(cap.xyz, cap.normals, cap.seg)}
    for p, n, s in zip(out.xyz, out.normals, out.seg):
        assert lookup[tuple(p)] == (tuple(n), s)
    if method != "first":
        assert len({tuple(p) for p in out.xyz}) == 512  # no repeats when enough points


@pytest.mark.parametrize("method", ["fps", "random", "first"])
def test_resample_up_rule_keeps_every_point(cap: Cloud, method: str) -> None:
    small = cap.take(np.arange(100))
    out = resample(small, 256, method, rng())
    assert len(out) == 256
    assert {tuple(p) for p in out.xyz} == {tuple(p) for p in small.xyz}


def test_fps_matches_geometry_package_on_real_clouds() -> None:
    bench = read_points(TXT).xyz
    for xyz, n in ((bench[:4000], 256), (read_points(CAP).xyz, 300)):
        ours = fps_indices(xyz, n)
        ref = farthest_point_sample(torch.from_numpy(xyz)[None], n)[0].numpy()
        np.testing.assert_array_equal(ours, ref)


def test_fps_spreads_points_better_than_random(cap: Cloud) -> None:
    def coverage(idx: np.ndarray) -> float:  # worst distance from any point to the sample
        d = np.linalg.norm(cap.xyz[:, None] - cap.xyz[idx][None], axis=-1)
        return float(d.min(1).max())

    assert coverage(fps_indices(cap.xyz, 64)) < 0.7 * coverage(rng().choice(len(cap), 64, replace=False))


def test_compose_is_seeded_and_order_dependent(cap: Cloud) -> None:
    t = build_transforms(["rotate", "scale", "jitter", {"name": "resample", "num_points": 256}])
    a, b = t(cap, rng(7)), t(cap, rng(7))
    np.testing.assert_array_equal(a.xyz, b.xyz)
    c = t(cap, rng(8))
    assert not np.array_equal(a.xyz, c.xyz)
    swapped = build_transforms(["scale", "rotate", "jitter", {"name": "resample", "num_points": 256}])
    assert not np.allclose(swapped(cap, rng(7)).xyz, a.xyz)


def test_user_callable_transforms_compose_with_named_ones(cap: Cloud) -> None:
    def flip(cloud: Cloud, g: np.random.Generator) -> Cloud:
        return cloud.replace(xyz=-cloud.xyz)

    out = build_transforms([flip, "normalize"])(cap, rng())
    np.testing.assert_allclose(out.xyz, normalize(cap.replace(xyz=-cap.xyz)).xyz)


@pytest.mark.parametrize("spec,fragment", [
    (["spin"], "unknown transform 'spin'"),
    ([{"name": "scale", "low": 2.0, "high": 1.0}], "low <= high"),
    ([{"name": "jitter", "sigmaa": 0.1}], "sigmaa"),
    ([{"low": 0.9}], "needs a 'name'"),
    ([{"name": "rotate", "axis": "w"}], "axis"),
    ([{"name": "resample", "num_points": 0}], "positive integer"),
    ([{"name": "resample", "num_points": 64, "method": "grid"}], "method"),
    ([{"name": "dropout", "max_ratio": 1.0}], "max_ratio"),
    ("jitter", "list"),
    ([3], "expected a name"),
])
def test_bad_transform_specs_raise_config_error(spec: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        build_transforms(spec)
