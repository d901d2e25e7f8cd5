"""Benchmark 3 — batched farthest-point sampling + kNN grouping: ``appt.geometry`` vs others.

Workload (per cloud size N): a batch of real ModelNet40 clouds (``bench`` class, N of their 10,000
points drawn with the seed), FPS to ``N * centre_ratio`` centres, the ``k`` nearest points of each
centre, and the grouped neighbour coordinates ``(B, centres, k, 3)`` — the first stage of the
point embedding.

Contenders, timed in interleaved rounds:
* ``appt``: ``farthest_point_sample`` + ``gather`` + ``knn`` on the whole batch (torch, ``--device``);
* ``fpsample``: the package's vanilla FPS started at appt's start point (so the work and the
  output are the same), then a scipy cKDTree kNN, one cloud at a time (CPU);
* ``fpsample_bucket``: fpsample's bucket FPS (QuickFPS, kd-line tree of height 3 for N <= 2048,
  else 5) + cKDTree; it does not always honour ``start_idx`` (seen with 1.0.2), so its output
  is checked to be *a* valid FPS sequence instead of the same one;
* ``brute_force``: textbook numpy — an O(N) distance update per sample and a full distance
  matrix with ``argpartition`` for kNN, one cloud at a time (the reference for correctness).

    python benchmarks/bench_geometry.py                  # CPU, 1 torch thread
    python benchmarks/bench_geometry.py --device cuda    # appt on the GPU, the others on CPU

Without fpsample or scipy (e.g. on an offline GPU node) the two fpsample contenders are skipped
and the results say so (``settings.skipped``). The clouds come from ``$APPT_DATA``'s
``modelnet40_bench_all193.npz``; without it, from the test split of the run bundle in
``$APPT_BUNDLE`` (sizes above its points per cloud are then skipped, also recorded).
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any, Callable

import numpy as np
import torch

import common

GOAL_MAX_RATIO = 1.5  # appt's time / the fastest contender's


def parse_args(argv: list[str] | None = None) -> Any:
    p = common.base_parser(__doc__.splitlines()[0], "geometry_cpu.json")
    p.add_argument("--sizes", default="1024,4096,8192", help="points per cloud")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--centre-ratio", type=float, default=0.25, help="centres = N * ratio (CPU embedding: 256 of 1024)")
    p.add_argument("--k", type=int, default=16, help="neighbours per centre (CPU embedding: 16)")
    p.add_argument("--only-appt", action="store_true",
                   help="time appt alone (the GPU script: the CPU contenders are timed in the CPU run); the "
                        "brute-force reference still runs once, untimed, for the correctness checks")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.repeats = "256,512", 2, 1
    return args


def source_shapes(batch: int) -> tuple[np.ndarray, str]:
    """``(batch, P, 3)`` source shapes and where they come from: the ModelNet40 ``bench`` file
    under ``$APPT_DATA`` (10,000 points each), else the test split of ``$APPT_BUNDLE``."""
    if common.MODELNET40_BENCH.is_file():
        return np.load(common.MODELNET40_BENCH)["points"][:batch, :, :3], f"{common.MODELNET40_BENCH.name}: first `batch` shapes"
    if common.BUNDLE:
        clouds, _, _ = common.bundle_clouds("test", count=batch)
        return clouds, f"bundle {common.BUNDLE}, test split: first `batch` shapes ({clouds.shape[1]} points each)"
    raise SystemExit(f"{common.MODELNET40_BENCH}: missing (set APPT_DATA, or APPT_BUNDLE to a run bundle)")


def load_clouds(n_points: int, batch: int, seed: int) -> np.ndarray:
    """``(batch, n_points, 3)`` float32: real shapes, a seeded subset of each one's points."""
    shapes = source_shapes(batch)[0]
    rng = np.random.default_rng(seed)
    return np.stack([s[rng.choice(len(s), n_points, replace=False)] for s in shapes]).astype(np.float32)


def start_index(cloud: np.ndarray) -> int:
    """appt's FPS start: the point farthest from the centroid."""
    return int(((cloud - cloud.mean(0)) ** 2).sum(1).argmax())


# --- contenders: each returns (fps indices (B, n), neighbour indices (B, n, k), seconds per part) ---
def run_appt(x: torch.Tensor, n: int, k: int, device: str) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    from appt.geometry import farthest_point_sample, gather, knn

    common.sync(device)
    tic = time.perf_counter()
    idx = farthest_point_sample(x, n)
    common.sync(device)
    mid = time.perf_counter()
    nbr = knn(gather(x, idx), x, k)
    gather(x, nbr)
    common.sync(device)
    end = time.perf_counter()
    return idx.cpu().numpy(), nbr.cpu().numpy(), {"fps": mid - tic, "knn": end - mid}


def fps_brute(cloud: np.ndarray, n: int, start: int) -> np.ndarray:
    """Textbook FPS: keep each point's distance to the chosen set, take the farthest, repeat."""
    idx = np.empty(n, dtype=np.int64)
    dist = np.full(len(cloud), np.inf, dtype=np.float32)
    far = start
    for i in range(n):
        idx[i] = far
        dist = np.minimum(dist, ((cloud - cloud[far]) ** 2).sum(1))
        far = int(dist.argmax())
    return idx


def knn_brute(cloud: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    """Full ``(n, N)`` distance matrix, partial sort, then sort the k nearest."""
    d = ((centres[:, None, :] - cloud[None, :, :]) ** 2).sum(-1)
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(d, part, 1).argsort(1)
    return np.take_along_axis(part, order, 1)


def knn_kdtree(cloud: np.ndarray, centres: np.ndarray, k: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(cloud).query(centres, k, workers=1)[1]


def per_cloud(fps: Callable[[np.ndarray, int], np.ndarray], knn_fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]):
    """A contender that loops over the clouds, timing FPS and kNN + grouping apart."""

    def run(pts: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        tic = time.perf_counter()
        idx = np.stack([fps(c, n) for c in pts])
        mid = time.perf_counter()
        nbr = np.stack([knn_fn(c, c[i], k) for c, i in zip(pts, idx)])
        pts[np.arange(len(pts))[:, None, None], nbr]  # the grouped coordinates (B, n, k, 3)
        return idx, nbr, {"fps": mid - tic, "knn": time.perf_counter() - mid}

    return run


def skipped_contenders() -> dict[str, str]:
    """Contenders that cannot run here, and why (they need fpsample and scipy's cKDTree)."""
    missing = [m for m in ("fpsample", "scipy") if importlib.util.find_spec(m) is None]
    if not missing:
        return {}
    why = f"{' and '.join(missing)} not importable"
    return {"fpsample": why, "fpsample_bucket": why}


def contenders(n_points: int) -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    if not skipped_contenders():
        import fpsample

        height = 3 if n_points <= 2048 else 5
        out["fpsample"] = per_cloud(lambda c, n: fpsample.fps_sampling(c, n, start_idx=start_index(c)).astype(np.int64), knn_kdtree)
        out["fpsample_bucket"] = per_cloud(lambda c, n: fpsample.bucket_fps_kdline_sampling(c, n, height).astype(np.int64), knn_kdtree)
    out["brute_force"] = per_cloud(lambda c, n: fps_brute(c, n, start_index(c)), knn_brute)
    return out


# --- correctness (checked once per size, untimed) ---------------------------------------------
def greedy_gap(cloud: np.ndarray, idx: np.ndarray) -> float:
    """Largest shortfall, relative to the farthest distance, of a pick against the farthest point
    (0 for an exact FPS sequence from its own first pick)."""
    dist = np.full(len(cloud), np.inf)
    worst = 0.0
    for i, j in enumerate(idx):
        if i:
            worst = max(worst, float((dist.max() - dist[j]) / dist.max()))
        dist = np.minimum(dist, ((cloud.astype(np.float64) - cloud[j]) ** 2).sum(1))
    return worst


def knn_distance_gap(pts: np.ndarray, fps: np.ndarray, nbr: np.ndarray, ref: np.ndarray) -> float:
    """Largest difference between the sorted neighbour distances of ``nbr`` and of ``ref``."""
    b = np.arange(len(pts))[:, None, None]
    centres = pts[np.arange(len(pts))[:, None], fps][:, :, None, :]
    d = ((pts[b, nbr] - centres) ** 2).sum(-1)
    d_ref = ((pts[b, ref] - centres) ** 2).sum(-1)
    return float(np.abs(np.sort(d, -1) - np.sort(d_ref, -1)).max())


def checks(pts: np.ndarray, outputs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    ref_fps, ref_nbr = outputs["brute_force"]
    out = {}
    for name, (fps, nbr) in outputs.items():
        out[name] = {
            "fps_greedy_gap_max": max(greedy_gap(c, i) for c, i in zip(pts[:2], fps[:2])),
            "fps_same_start_as_appt": bool((fps[:, 0] == outputs["appt"][0][:, 0]).all()),
            "fps_same_indices_as_appt": float((fps == outputs["appt"][0]).mean()),
            "knn_distance_gap_vs_brute_force": knn_distance_gap(pts, fps, nbr, knn_for(pts, fps, ref_nbr, ref_fps)),
        }
    return out


def knn_for(pts: np.ndarray, fps: np.ndarray, ref_nbr: np.ndarray, ref_fps: np.ndarray) -> np.ndarray:
    """Brute-force neighbours of ``fps``'s centres (reuses the reference's when the centres match)."""
    if np.array_equal(fps, ref_fps):
        return ref_nbr
    return np.stack([knn_brute(c, c[i], ref_nbr.shape[-1]) for c, i in zip(pts, fps)])


def bench_size(n_points: int, args: Any) -> dict[str, Any]:
    n = max(1, int(n_points * args.centre_ratio))
    pts = load_clouds(n_points, args.batch, args.seed)
    x = torch.from_numpy(pts).to(args.device)
    runners = {"appt": lambda: run_appt(x, n, args.k, args.device)}
    runners.update({name: (lambda f=f: f(pts, n, args.k)) for name, f in contenders(n_points).items()})
    outputs = {name: run()[:2] for name, run in runners.items()}  # also the warm-up
    timed = {name: run for name, run in runners.items() if name == "appt" or not args.only_appt}
    parts = common.interleaved({name: (lambda r=run: r()[2]) for name, run in timed.items()}, args.repeats, warmup=0)
    seconds = {name: {p: common.stats([t[p] for t in ts]) for p in ("fps", "knn")} for name, ts in parts.items()}
    totals = {name: [t["fps"] + t["knn"] for t in ts] for name, ts in parts.items()}
    for name in seconds:
        seconds[name]["total"] = common.stats(totals[name])
    ratios = {}
    for part in ("fps", "knn", "total"):
        fastest = min(seconds, key=lambda m: seconds[m][part]["median"])
        ratios[part] = {"fastest": fastest, "appt_over_fastest": seconds["appt"][part]["median"] / seconds[fastest][part]["median"]}
    ratios["total"]["appt_over_fastest_paired"] = common.paired_ratio(totals["appt"], totals[ratios["total"]["fastest"]])
    return {"points": n_points, "centres": n, "k": args.k, "batch": args.batch, "seconds": seconds,
            "seconds_raw": parts, "ratios": ratios, "checks": checks(pts, outputs),
            "goal_met": ratios["total"]["appt_over_fastest"] <= GOAL_MAX_RATIO}


def summary_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for res in results:
        for name, s in res["seconds"].items():
            rows.append([res["points"], res["centres"], name, f"{1000 * s['fps']['median']:,.1f}",
                         f"{1000 * s['knn']['median']:,.1f}", f"{1000 * s['total']['median']:,.1f}",
                         f"{s['total']['median'] / res['seconds'][res['ratios']['total']['fastest']]['total']['median']:.2f}"])
    header = ["N", "centres", "method", "FPS ms", "kNN+group ms", "total ms", "total / fastest"]
    return common.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    common.setup_torch(args.device, args.threads)
    info = common.machine_info(args.device)
    skipped = skipped_contenders()
    for name, why in skipped.items():
        print(f"{name}: skipped ({why})", flush=True)
    shapes, source = source_shapes(args.batch)
    sizes = [int(s) for s in args.sizes.split(",")]
    too_big = [s for s in sizes if s > shapes.shape[1]]
    if too_big:
        print(f"sizes {too_big}: skipped (the clouds have {shapes.shape[1]} points)", flush=True)
    results = []
    for size in (s for s in sizes if s not in too_big):
        print(f"[N = {size}]", flush=True)
        results.append(bench_size(size, args))
    import importlib.metadata

    settings = {k: getattr(args, k) for k in ("sizes", "batch", "centre_ratio", "k", "repeats", "seed", "threads", "quick",
                                              "only_appt")}
    settings["versions"] = {"numpy": np.__version__}
    for package in ("fpsample", "scipy"):
        if importlib.util.find_spec(package) is not None:
            settings["versions"][package] = importlib.metadata.version(package)
    settings["skipped"] = {"contenders": skipped, "sizes": too_big}
    settings["data"] = f"{source}, a seeded subset of N of their points each"
    table = summary_table(results)
    common.write_results(args.out, {"benchmark": "geometry", "machine": info, "settings": settings,
                                    "results": results, "table": table})
    print(table)


if __name__ == "__main__":
    main()
