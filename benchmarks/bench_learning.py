"""Benchmark 1: what the frozen backbone adds — every variant at equal budget, several seeds.

Trains each variant of ``configs/modelnet10_minilm.yaml`` (real pretrained all-MiniLM-L6-v2,
real ModelNet10, 1,024 points) through the same engine as ``appt train``, with the same seeded
training subset, epochs and recipe, and tests every epoch on the official test split. Writes
per-run learning curves and a per-variant mean +- std to JSON, and a learning-curve plot.

    python benchmarks/bench_learning.py --subset 500 --epochs 4 --seeds 0 1 2

With ``--val F`` a seeded per-class fraction ``F`` of the training split is held out and the
curves are *validation* accuracy (for choosing settings; the test figures are not recorded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_info, markdown_table, write_results  # noqa: E402

from appt.models import VARIANTS  # noqa: E402
from appt.training.config import load_config  # noqa: E402
from appt.training.engine import Trainer  # noqa: E402

CONFIG = ROOT / "configs" / "modelnet10_minilm.yaml"


def run_one(variant: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Train one (variant, seed); return its test curve and final figures."""
    run_dir = workdir / f"{variant}-s{seed}"
    overrides = [
        f"model.variant={variant}", f"train.seed={seed}", f"train.epochs={args.epochs}",
        f"run_dir={run_dir}", "train.eval_every=1", "train.checkpoint_every=0",
    ]
    if args.subset:
        overrides.append(f"data.subset={args.subset}")
    if args.val:
        # Choosing settings must not look at the test split: score the held-out part of train,
        # and keep the (unrecorded) end-of-run test pass tiny.
        overrides += [f"data.val_fraction={args.val}", "data.test_subset=10"]
    elif args.test_subset:
        overrides.append(f"data.test_subset={args.test_subset}")
    overrides += args.set
    cfg = load_config(args.config, overrides)
    start = time.time()
    summary = Trainer(cfg, progress=False).fit()
    seconds = time.time() - start
    curve = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == ("eval_val" if args.val else "eval_test"):
            curve.append({"epoch": event["epoch"], "overall_acc": event["overall_acc"],
                          "mean_class_acc": event["mean_class_acc"]})
    return {
        "variant": variant, "seed": seed, "seconds": round(seconds, 1),
        "trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
        "curve": curve, "last": curve[-1], "best_overall_acc": max(c["overall_acc"] for c in curve),
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean +- std over seeds of the last-epoch OA / mAcc and the best-epoch OA, per variant."""
    out: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rs = [r for r in runs if r["variant"] == variant]

        def ms(values: list[float]) -> list[float]:
            return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]

        out[variant] = {
            "seeds": [r["seed"] for r in rs],
            "last_overall_acc": ms([r["last"]["overall_acc"] for r in rs]),
            "last_mean_class_acc": ms([r["last"]["mean_class_acc"] for r in rs]),
            "best_overall_acc": ms([r["best_overall_acc"] for r in rs]),
            "trainable_params": rs[0]["trainable_params"], "total_params": rs[0]["total_params"],
            "seconds_per_run": statistics.mean(r["seconds"] for r in rs),
        }
    return out


def plot(runs: list[dict[str, Any]], path: Path, title: str, split: str = "test") -> None:
    """Test (or validation) OA against epochs: mean over seeds per variant, shaded min..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in dict.fromkeys(r["variant"] for r in runs):
        curves = [[c["overall_acc"] * 100 for c in r["curve"]] for r in runs if r["variant"] == variant]
        epochs = range(1, len(curves[0]) + 1)
        cols = list(zip(*curves))
        ax.plot(epochs, [statistics.mean(c) for c in cols], marker="o", label=variant)
        ax.fill_between(epochs, [min(c) for c in cols], [max(c) for c in cols], alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} overall accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--subset", type=int, default=500, help="seeded per-class training subset (0 = all 3,991)")
    p.add_argument("--test-subset", type=int, default=0, help="0 = the whole official test split (908)")
    p.add_argument("--val", type=float, default=0.0, help="hold out this fraction of train and report validation curves")
    p.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"learning_{time.strftime('%Y-%m-%d')}.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "learning_curve.png"))
    p.add_argument("--plot-backbone", default=str(ROOT / "docs" / "learning_curve_backbone.png"),
                   help="second plot: appt vs encoder_only vs random_backbone alone (when they all ran)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="no training: combine the runs of shard results (same settings, e.g. variants split "
                        "over two 1-thread processes) into --out and the plots")
    args = p.parse_args(argv)
    split = "validation" if args.val else "test"

    if args.merge:
        shards = [json.loads(Path(f).read_text()) for f in args.merge]
        def shared(shard: dict[str, Any]) -> dict[str, Any]:  # what shards must agree on
            return {k: v for k, v in shard["settings"].items() if k != "variants"}

        settings = shared(shards[0])
        for shard, name in zip(shards, args.merge):
            if shared(shard) != settings:
                raise SystemExit(f"{name}: settings differ from {args.merge[0]}; refusing to merge")
        runs = sorted((r for shard in shards for r in shard["runs"]), key=lambda r: (VARIANTS.index(r["variant"]), r["seed"]))
        settings["shards"] = [{"file": Path(f).name, "machine": sh["machine"]} for f, sh in zip(args.merge, shards)]
        split = "validation" if settings["scored_on"] != "test" else "test"
        machine = shards[0]["machine"]
        complete = all(shard.get("complete", True) for shard in shards)
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        machine = machine_info("cpu")
        settings = {"config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT) else args.config,
                    "epochs": args.epochs, "train_subset": args.subset or "all", "test": args.test_subset or "all 908",
                    "seeds": args.seeds, "overrides": args.set, "variants": args.variants,
                    "scored_on": f"validation ({args.val:.0%} of train, seeded per class)" if args.val else "test"}
        runs, complete = [], True
        with tempfile.TemporaryDirectory(prefix="appt-learning-") as tmp:
            for seed in args.seeds:  # seed-major, so a cut-short benchmark still compares variants fairly
                for variant in args.variants:
                    run = run_one(variant, seed, args, Path(tmp))
                    runs.append(run)
                    print(f"{variant:16s} seed {seed}: last OA {100 * run['last']['overall_acc']:.2f} %, "
                          f"best {100 * run['best_overall_acc']:.2f} %, {run['seconds']:.0f} s", flush=True)
                    # after every run, so a benchmark cut short keeps what it measured
                    write_results(args.out, {"benchmark": "learning", "complete": False, "machine": machine,
                                             "settings": settings, "runs": runs})
    summary = aggregate(runs)
    write_results(args.out, {"benchmark": "learning", "complete": complete, "machine": machine, "settings": settings,
                             "summary": summary, "runs": runs})
    label = f"ModelNet10, {settings['train_subset']} train shapes, 1,024 pts, {settings['epochs']} epochs, seeds {settings['seeds']}"
    plot(runs, Path(args.plot), label, split)
    trio = ("appt", "encoder_only", "random_backbone")
    if all(any(r["variant"] == v for r in runs) for v in trio):
        plot([r for r in runs if r["variant"] in trio], Path(args.plot_backbone), f"Does the frozen backbone help? {label}", split)
    rows = [[v, f"{100 * s['last_overall_acc'][0]:.2f} ± {100 * s['last_overall_acc'][1]:.2f}",
             f"{100 * s['last_mean_class_acc'][0]:.2f} ± {100 * s['last_mean_class_acc'][1]:.2f}",
             f"{100 * s['best_overall_acc'][0]:.2f} ± {100 * s['best_overall_acc'][1]:.2f}",
             f"{s['trainable_params']:,} / {s['total_params']:,}", f"{s['seconds_per_run']:.0f}"]
            for v, s in summary.items()]
    print(markdown_table(["variant", "last-epoch OA %", "last-epoch mAcc %", "best-epoch OA %",
                          "trained / total params", "s per run"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
