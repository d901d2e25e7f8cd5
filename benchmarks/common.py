"""Shared helpers of the benchmark scripts: machine facts, interleaved timing, results as JSON.

Why interleaved: the benchmark machine may be shared, so its load drifts while a benchmark runs.
Timing every contender once per round, in a rotating order, exposes them all to the same drift;
per-round ratios then cancel most of it, and medians over rounds drop the outliers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# The data: $APPT_DATA (as the configs), else ../shared/data beside the repository.
DATA = Path(os.environ.get("APPT_DATA") or ROOT.parent / "shared" / "data").expanduser()
# A run bundle (`appt bundle`): on an offline node the benchmarks read their clouds from it, so
# they need neither the .pcd files nor pypcd4.
BUNDLE = os.environ.get("APPT_BUNDLE") or None
MODELNET10 = DATA / "modelnet10_pcd" / "ModelNet10" / "pcd"
MODELNET40_BENCH = DATA / "modelnet40_bench_all193.npz"

# Backbones by short name: (description, BackboneSpec keyword arguments). Random weights cost the
# same as pretrained ones; MiniLM is the one real pretrained backbone available offline.
BACKBONES: dict[str, tuple[str, dict[str, Any]]] = {
    "vit_b": ("12 x 768, timm vit_base_patch16_224", {"family": "timm_vit", "name": "vit_base_patch16_224", "pretrained": False}),
    "point_mae": ("12 x 384, Point-MAE", {"family": "point_mae", "pretrained": False}),
    "minilm": ("6 x 384, all-MiniLM-L6-v2 (pretrained)", {"family": "hf_text", "name": "minilm"}),
    "tiny": ("2 x 64 point transformer (tests only)",
             {"family": "point_mae", "pretrained": False, "options": {"depth": 2, "width": 64, "heads": 2}}),
}
# Point-embedding settings: "cpu" is the lighter one a CPU user would pick, "default" the
# APPTConfig defaults (the authors' 4 stages, k = 40), "tiny" for the --quick tests.
EMBEDDINGS: dict[str, dict[str, Any]] = {
    "cpu": {"centers": (256, 128, 64), "neighbors": (16,), "widths": (128, 256, -1), "blocks": (1, 1, 1), "embed_dim": 64},
    "default": {},
    "tiny": {"centers": (32, 16), "neighbors": (8,), "widths": (32, -1), "blocks": (1, 1), "embed_dim": 16},
}


def base_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """Options every benchmark takes. ``--threads 1`` is the CPU default: see docs/benchmarks.md."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; medians are reported (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for tests (seconds)")
    p.add_argument("--out", default=str(RESULTS / default_out), help="results JSON file")
    return p


def setup_torch(device: str, threads: int) -> None:
    """Fix the thread count and refuse a CUDA run without CUDA (a silent CPU run would mislead)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if threads > 0:
        torch.set_num_threads(threads)


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _run(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    """The CPU's name as ``lscpu`` gives it (``Model name``)."""
    for line in _run(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def kernel_isa(env: Mapping[str, str] | None = None) -> str | None:
    """The instruction set torch's CPU kernels use in a process started with ``env`` ("AVX2",
    "AVX512", ...): asked of a child, since torch chooses at import."""
    ask = [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"]
    try:
        out = subprocess.run(ask, env=dict(env) if env is not None else None, capture_output=True, text=True,
                             timeout=300, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def machine_info(device: str) -> dict[str, Any]:
    """Date, machine, software versions and load: what a reader needs to weigh the numbers."""
    import torch

    info: dict[str, Any] = {
        "date": _run(["date"]).strip() or datetime.datetime.now().isoformat(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),  # AVX2 / AVX512 round differently
        "python": platform.python_version(),
        "device": device,
        "load_average_at_start": list(os.getloadavg()),
        "git_commit": _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip(),
        "git_head": _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).strip(),
        # uncommitted changes in the tree: the numbers are of HEAD plus them
        "git_dirty": bool(_run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).strip()),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def interleaved(fns: Mapping[str, Callable[[], T]], repeats: int, warmup: int = 1) -> dict[str, list[T]]:
    """Call every ``fn`` once per round, rotating the order each round; each returns its timing(s).

    ``warmup`` untimed rounds come first (allocator growth, kernel caches, optimizer state).
    """
    names = list(fns)
    times: dict[str, list[T]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = fns[name]()
            if r >= warmup:
                times[name].append(seconds)
        print(f"  round {r + 1 - warmup}/{repeats}" if r >= warmup else "  warm-up round", flush=True)
    return times


def timed(fn: Callable[[], Any], device: str) -> float:
    """Seconds one call of ``fn`` takes (GPU work included)."""
    sync(device)
    tic = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - tic


def stats(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of ``num[r] / den[r]``: a ratio with the round's shared load cancelled."""
    return statistics.median(a / b for a, b in zip(num, den))


def write_results(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"results: {path}")
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (the scripts print these; docs/benchmarks.md quotes them)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def modelnet10_files(split: str) -> list[Path]:
    """Every ModelNet10 ``.pcd`` file of ``split`` (sorted), from ``$APPT_DATA`` (default ../shared/data)."""
    files = sorted(MODELNET10.glob(f"*/{split}/*.pcd"))
    if not files:
        sys.exit(f"{MODELNET10}: no ModelNet10 .pcd files (set APPT_DATA, or APPT_BUNDLE to a run bundle)")
    return files


def bundle_clouds(split: str, bundle: str | Path | None = None, count: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The first ``count`` clouds of a bundle's ``split`` (train | val | test) on the unit sphere
    ``(F, N, 3)`` float32, their labels ``(F,)`` and the class names; default bundle ``$APPT_BUNDLE``.
    Checks the bundle's files against its manifest first; needs only NumPy and safetensors."""
    from appt.data.bundle import unit_clouds
    from appt.training.bundle import read_manifest

    from appt.errors import APPTError

    folder = Path(bundle or BUNDLE or "")
    try:
        splits = read_manifest(folder)["data"]["splits"]
    except APPTError as exc:
        sys.exit(f"APPT_BUNDLE: {exc}")
    if split not in splits:
        sys.exit(f"{folder}: the bundle has no {split} split (it has {', '.join(splits)})")
    points, labels, classes = unit_clouds(folder / splits[split]["file"], count)
    return points.numpy(), labels.numpy(), classes


def read_unit_clouds(files: Sequence[Path]) -> np.ndarray:
    """``(F, N, 3)`` float32 clouds from ``.pcd`` files, centred and scaled to the unit sphere."""
    from appt.data import read_points

    clouds = []
    for f in files:
        xyz = read_points(f).xyz.astype(np.float32)
        xyz = xyz - xyz.mean(axis=0)
        clouds.append(xyz / np.linalg.norm(xyz, axis=1).max())
    return np.stack(clouds)
