"""Benchmark 4 — inference: clouds per second of ``appt predict`` on CPU.

Weights: a classifier saved with ``save_pretrained`` plus the ``appt_data.json`` that ``appt
train`` writes beside it (ModelNet10 classes, 1,024 points), so ``appt predict`` runs as for a
user; the speed does not depend on what the weights have learned, so they are untrained.
Input: ModelNet10 test ``.pcd`` files (a seeded choice).

Timed in interleaved rounds:
* ``cli_small`` / ``cli_large``: the whole command (``python -m appt.cli.main predict``, i.e. the
  ``appt`` script) on ``--small`` and ``--files`` files: start-up, reading, preparation, model,
  CSV/JSON output. Their difference gives the per-cloud cost without the start-up;
* ``library``: ``model(points)`` in this process on the same prepared clouds, same batch size.
The CLI's top-1 classes are checked against the library path's.

    python benchmarks/bench_inference.py                      # MiniLM backbone, CPU, 1 thread
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import common


def parse_args(argv: list[str] | None = None) -> Any:
    p = common.base_parser(__doc__.splitlines()[0], "inference_cpu.json")
    p.add_argument("--backbone", choices=sorted(common.BACKBONES), default="minilm")
    p.add_argument("--embedding", choices=sorted(common.EMBEDDINGS), default="cpu")
    p.add_argument("--files", type=int, default=256, help="files in the large CLI run")
    p.add_argument("--small", type=int, default=16, help="files in the small CLI run (0: no small run)")
    p.add_argument("--batch-size", type=int, default=16, help="appt predict's default")
    p.set_defaults(repeats=3)
    args = p.parse_args(argv)
    if args.quick:
        args.backbone, args.embedding, args.files, args.small, args.repeats = "tiny", "tiny", 4, 0, 1
    return args


def make_weights(folder: Path, args: Any, classes: list[str]) -> Path:
    """A weights folder as ``appt train`` leaves it: weights, model config and data settings."""
    from appt import APPTConfig, APPTForClassification, BackboneSpec

    torch.manual_seed(args.seed)
    spec = BackboneSpec(**common.BACKBONES[args.backbone][1])
    model = APPTForClassification(APPTConfig(backbone=spec, num_classes=len(classes), **common.EMBEDDINGS[args.embedding]))
    model.save_pretrained(folder)
    info = {"task": "classification", "classes": classes, "dataset": "modelnet_points", "num_points": 1024,
            "test_transforms": [], "seed": args.seed, "in_channels": 3, "options": {}}
    (folder / "appt_data.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def cli_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in the child, as --threads here
    return env


def run_cli(files: list[Path], weights: Path, out: Path, args: Any) -> float:
    """Seconds of one ``appt predict`` process on ``files``; fails loudly if the command fails."""
    cmd = [sys.executable, "-m", "appt.cli.main", "predict", *map(str, files), "--weights", str(weights),
           "--out", str(out), "--batch-size", str(args.batch_size)]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(args.threads))
    seconds = time.perf_counter() - tic
    if proc.returncode:
        raise SystemExit(f"appt predict failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def cli_labels(out: Path) -> dict[str, str]:
    with open(out / "predictions.csv", newline="") as f:
        return {row["path"]: row["prediction"] for row in csv.DictReader(f)}


def measure(args: Any) -> tuple[dict[str, list[float]], float]:
    """Interleaved timings of the CLI runs and the library path, and their top-1 agreement."""
    from appt import APPTForClassification
    from appt.inference.predict import prepare_files
    from appt.inference.weights import read_data_info

    all_files = common.modelnet10_files("test")
    classes = sorted({f.parts[-3] for f in all_files})
    rng = np.random.default_rng(args.seed)
    files = [all_files[i] for i in sorted(rng.choice(len(all_files), size=args.files, replace=False))]
    with tempfile.TemporaryDirectory() as tmp:
        weights = make_weights(Path(tmp) / "weights", args, classes)
        model = APPTForClassification.from_pretrained(weights).eval()
        points = prepare_files(files, read_data_info(weights), 3)[0]

        @torch.no_grad()
        def library() -> list[int]:
            top1: list[int] = []
            for start in range(0, len(points), args.batch_size):
                top1 += model(points[start : start + args.batch_size]).argmax(-1).tolist()
            return top1

        runners = {
            "cli_large": lambda: run_cli(files, weights, Path(tmp) / "large", args),
            "library": lambda: common.timed(library, "cpu"),
        }
        if args.small:
            runners["cli_small"] = lambda: run_cli(files[: args.small], weights, Path(tmp) / "small", args)
        times = common.interleaved(runners, args.repeats, warmup=0)
        cli_top1 = cli_labels(Path(tmp) / "large")
        agree = float(np.mean([cli_top1.get(str(f)) == classes[i] for f, i in zip(files, library())]))
    return times, agree


def summarise(times: dict[str, list[float]], agree: float, args: Any) -> tuple[dict[str, Any], str]:
    """Clouds per second (end to end, without start-up, library) and a markdown table."""
    med = {name: common.stats(t)["median"] for name, t in times.items()}
    result = {
        "cli_clouds_per_second_end_to_end": args.files / med["cli_large"],
        "library_clouds_per_second": args.files / med["library"],
        "seconds": {name: common.stats(t) for name, t in times.items()},
        "seconds_raw": times,
        "cli_top1_agrees_with_library": agree,
    }
    rows = [[f"appt predict, {args.files} files", f"{med['cli_large']:.1f}", f"{result['cli_clouds_per_second_end_to_end']:.2f}"]]
    if args.small:
        # per round, so the round's load cancels; then the median over rounds
        per_cloud = statistics.median((big - small) / (args.files - args.small)
                                      for big, small in zip(times["cli_large"], times["cli_small"]))
        result["cli_clouds_per_second_without_startup"] = 1.0 / per_cloud
        result["cli_startup_seconds"] = med["cli_small"] - args.small * per_cloud
        rows += [[f"appt predict, {args.small} files", f"{med['cli_small']:.1f}", f"{args.small / med['cli_small']:.2f}"],
                 ["appt predict, per extra cloud (start-up removed)", f"{per_cloud:.3f}", f"{1.0 / per_cloud:.2f}"]]
    rows.append([f"library model(points), {args.files} clouds", f"{med['library']:.1f}", f"{result['library_clouds_per_second']:.2f}"])
    table = common.markdown_table(["what", "seconds (median)", "clouds/s"], rows)
    if args.small:
        table += f"\n\nstart-up of the command: {result['cli_startup_seconds']:.1f} s."
    table += f"\nCLI top-1 = library top-1 on {100 * agree:.0f} % of files."
    return result, table


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    common.setup_torch(args.device, args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info = common.machine_info(args.device)
    result, table = summarise(*measure(args), args)
    settings = {k: getattr(args, k) for k in ("backbone", "embedding", "files", "small", "batch_size", "repeats", "seed", "threads", "quick")}
    settings["backbone_description"] = common.BACKBONES[args.backbone][0]
    settings["embedding_config"] = common.EMBEDDINGS[args.embedding]
    settings["command"] = "python -m appt.cli.main predict FILES --weights W --out O --batch-size B (= the appt script)"
    common.write_results(args.out, {"benchmark": "inference", "machine": info, "settings": settings,
                                    "results": result, "table": table})
    print(table)


if __name__ == "__main__":
    main()
