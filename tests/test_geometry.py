"""FPS and kNN against brute-force references on real shapes; their precision under autocast;
the one-pass FPS of the embedding and its Triton kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from appt.geometry import farthest_point_sample, gather, knn, square_distance


def reference_fps(xyz: np.ndarray, n: int, first: int | None = None) -> list[int]:
    """Textbook FPS in float64, starting at ``first`` or else the point farthest from the centroid."""
    xyz = xyz.astype(np.float64)
    chosen = [int(np.argmax(((xyz - xyz.mean(0)) ** 2).sum(1))) if first is None else first]
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


def test_square_distance_paths_agree_and_stay_float32(real_clouds):
    clouds, _ = real_clouds
    a, b = clouds[:2, :50], clouds[:2, 50:130]
    exact = square_distance(a, b, matmul=False)
    assert exact.dtype == torch.float32
    torch.testing.assert_close(exact, ((a[:, :, None] - b[:, None]) ** 2).sum(-1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(square_distance(a, b, matmul=True), exact, atol=1e-5, rtol=1e-5)
    assert square_distance(a.bfloat16(), b.bfloat16()).dtype == torch.float32


def test_knn_under_bf16_autocast_equals_fp32_on_real_clouds(real_clouds):
    """bf16 autocast used to run the distance matmul in bf16: 73 % of k = 16 groups exact."""
    clouds, _ = real_clouds
    xyz = clouds[:8]
    for n in (512, 128):  # stage-0-like and stage-2-like queries
        centres = gather(xyz, farthest_point_sample(xyz, n))
        ref = knn(centres, xyz, 16)
        for matmul in (True, False):  # the CPU path and the CUDA path
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = knn(centres, xyz, 16) if matmul else square_distance(centres, xyz, matmul=False).topk(
                    16, dim=-1, largest=False).indices
            same = (got.sort(-1).values == ref.sort(-1).values).all(-1).float().mean().item()
            assert same == 1.0, f"{100 * same:.1f} % of groups exact under bf16 autocast (matmul={matmul})"


def test_fps_prefix_property_on_real_clouds(real_clouds):
    """FPS over an FPS sequence, from its first point, returns the sequence's prefix: why one FPS
    pass serves every stage of the embedding."""
    clouds, _ = real_clouds
    xyz = clouds[:6]
    seq = gather(xyz, farthest_point_sample(xyz, 256))
    for m in (128, 64, 32):
        again = farthest_point_sample(seq, m, start=0)
        assert torch.equal(again, torch.arange(m).expand(6, -1))
        assert again[0].tolist() == reference_fps(seq[0].numpy(), m, first=0)


def test_embedding_stages_equal_separate_fps_from_the_previous_first_centre(real_clouds):
    from appt.embedding import PointEmbedding

    clouds, _ = real_clouds
    emb = PointEmbedding(3, 32, embed_dim=8, centers=(256, 128, 64, 100), neighbors=(8, 8, 8, 8),
                         widths=(8, 8, 8, 8), blocks=(1, 1, 1, 1)).eval()
    with torch.no_grad():
        stages = emb(clouds[:4]).stages
    xyz = stages[0][0]
    expected = gather(xyz, farthest_point_sample(xyz, 256))
    assert torch.equal(stages[1][0], expected)
    for s in (2, 3, 4):  # the last stage asks for more centres than it has: cyclic repeats
        prev = stages[s - 1][0]
        n = emb.stages[s - 1].num_centers
        assert torch.equal(stages[s][0], gather(prev, farthest_point_sample(prev, n, start=0)))


def test_each_centre_is_its_own_nearest_under_bf16_autocast(real_clouds):
    """What feature propagation relies on: a point that is a centre takes that centre's feature."""
    clouds, _ = real_clouds
    centres = gather(clouds[:8], farthest_point_sample(clouds[:8], 256))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nearest = knn(clouds[:8], centres, 3)[..., 0]  # for every point; centres are points too
        own = knn(centres, centres, 1)[..., 0]
    assert torch.equal(own, torch.arange(256).expand(8, -1))
    assert torch.equal(nearest, knn(clouds[:8], centres, 3)[..., 0])


TRITON_CHECK = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import load_real_clouds
from appt.geometry import farthest_point_sample
from appt.geometry.fps_triton import farthest_point_sample_triton
clouds, _ = load_real_clouds(2, seed=5)                         # 1,024 points: a full block
ref = farthest_point_sample(clouds, 64)
got = farthest_point_sample_triton(clouds, 64, ref[:, 0])
odd = farthest_point_sample(clouds[:, :700], 48, start=3)       # 700 points: masked lanes
got_odd = farthest_point_sample_triton(clouds[:, :700], 48, torch.full((2,), 3))
print("EQUAL" if torch.equal(got, ref) and torch.equal(got_odd, odd) else f"DIFFER {{got.tolist()}} {{ref.tolist()}}")
"""


def test_triton_fps_kernel_equals_the_torch_loop_in_the_cpu_interpreter():
    """The CUDA kernel's logic, run by Triton's interpreter on the CPU (a fresh process: the
    interpreter is chosen when the kernel is compiled)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = TRITON_CHECK.format(tests=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("EQUAL"), proc.stdout[-2000:]
