"""FPS and kNN against brute-force references on real shapes."""

from __future__ import annotations

import numpy as np
import torch

from appt.geometry import farthest_point_sample, gather, knn, square_distance


def reference_fps(xyz: np.ndarray, n: int) -> list[int]:
    """Textbook FPS in float64, starting at the point farthest from the centroid."""
    xyz = xyz.astype(np.float64)
    chosen = [int(np.argmax(((xyz - xyz.mean(0)) ** 2).sum(1)))]
    dist = np.full(len(xyz), np.inf)
    for _ in range(n - 1):
        dist = np.minimum(dist, ((xyz - xyz[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(np.argmax(dist)))
    return chosen


def test_fps_matches_reference_on_real_clouds(real_clouds):
    clouds, _ = real_clouds
    idx = farthest_point_sample(clouds[:4], 128)
    for b in range(4):
        assert idx[b].tolist() == reference_fps(clouds[b].numpy(), 128)


def test_fps_is_order_free(real_clouds):
    clouds, _ = real_clouds
    perm = torch.randperm(clouds.shape[1], generator=torch.Generator().manual_seed(1))
    a = farthest_point_sample(clouds, 64)
    b = farthest_point_sample(clouds[:, perm], 64)
    assert torch.equal(gather(clouds, a), gather(clouds[:, perm], b))


def test_fps_with_more_samples_than_points_repeats_cyclically():
    xyz = torch.rand(2, 5, 3)
    idx = farthest_point_sample(xyz, 12)
    assert idx.shape == (2, 12)
    assert torch.equal(idx[:, :5], idx[:, 5:10])
    assert all(len(set(row[:5].tolist())) == 5 for row in idx)


def test_knn_matches_brute_force_on_real_clouds(real_clouds):
    clouds, _ = real_clouds
    xyz = clouds[:3]
    centres = gather(xyz, farthest_point_sample(xyz, 100))
    idx = knn(centres, xyz, 16)
    for b in range(3):
        full = ((centres[b, :, None].double() - xyz[b, None].double()) ** 2).sum(-1).numpy()  # (M, N)
        ref = np.sort(full, axis=1)[:, :16]
        got = np.take_along_axis(full, idx[b].numpy(), axis=1)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
        assert all(len(set(row)) == 16 for row in idx[b].tolist())  # distinct neighbours


def test_square_distance_matches_direct_difference(real_clouds):
    clouds, _ = real_clouds
    a, b = clouds[:2, :50], clouds[:2, 50:130]
    direct = ((a[:, :, None] - b[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(square_distance(a, b), direct, atol=1e-5, rtol=1e-5)
