"""Collect the runs of ``gpu_learning.sh`` into one JSON: per run its figures, metrics events and
resolved config; per variant the mean last-epoch test accuracy; the paired differences
``appt - encoder_only`` and ``appt - random_backbone`` over the seeds where both finished, with 95 %
Student-t intervals (``run_queue.summarize_regimes``, the statistics of the regimes queue).

    python benchmarks/gpu_learning_collect.py --runs WORK/runs --bundle DIR --out OUT/gpu_learning.json \
        [--settings key=value ...]

A run without ``summary.json`` (cut at the deadline, or failed) is listed with ``finished: false``
and the last test evaluation it logged (``partial``), and left out of the means and differences.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_queue import now, read_events, summarize_regimes, write_json

REGIME = "full ModelNet10"


def run_record(status: dict[str, Any], run_dir: Path, code: dict[str, Any]) -> dict[str, Any]:
    """One run: its exit status and time (from the script), summary, test evaluations (its other
    metrics.jsonl events are in the runs' tarball) and resolved config."""
    events = read_events(run_dir)
    evals = [e for e in events if e.get("event") in ("eval_test", "eval_val")]
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    record: dict[str, Any] = {
        **status, "regime": REGIME, "overrides": [], "finished": summary is not None and status["rc"] == 0,
        "commits": [code["commit"]], "dirty": code["dirty"],
        "evals": evals, "summary": summary,
        "resolved_config": yaml.safe_load(config_path.read_text()) if config_path.is_file() else None,
    }
    if summary is not None:
        record.update(final=summary["last_epoch"], trainable_params=summary["trainable_params"])
    else:
        record["partial"] = evals[-1] if evals else None
    return record


def collect(runs: Path, bundle: Path, settings: dict[str, str]) -> dict[str, Any]:
    from appt.training.bundle import appt_commit, read_manifest

    manifest = read_manifest(bundle, verify=False)
    code = appt_commit()
    statuses = [json.loads(p.read_text()) for p in sorted(runs.glob("*.status.json"))]
    records = [run_record(s, runs / s["id"], code) for s in statuses]
    done = [r for r in records if r["finished"]]
    summary = summarize_regimes(done, []).get(REGIME, {}).get("all") if done else None
    planned = len(settings.get("seeds", "").split()) * len(settings.get("variants", "").split())
    return {
        "benchmark": "gpu_learning (issue 14, item 3)", "written": now(), "code": code,
        "settings": settings,  # gpu_learning.sh's, with the machine it ran on (cuda, gpu, torch, python, host_cpus)
        "bundle": {"folder": str(bundle), "appt": manifest["appt"], "backbone": manifest["backbone"],
                   "splits": manifest["data"]["splits"], "settings": manifest["data"]["settings"],
                   "total_mib": manifest["total_mib"]},
        "metric": "last-epoch test overall accuracy (fraction) on the bundle's test split; paired differences "
                  "per seed, mean and 95 % Student-t interval (n - 1 degrees of freedom)",
        "complete": len(done) == planned and planned > 0, "runs_planned": planned, "runs_finished": len(done),
        "runs_unfinished": [{"id": r["id"], "rc": r["rc"], "partial": r["partial"]} for r in records if not r["finished"]],
        "summary": summary, "runs": records,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="the folder of run folders and <id>.status.json files")
    p.add_argument("--bundle", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--settings", nargs="*", default=[], metavar="KEY=VALUE", help="recorded as given")
    args = p.parse_args(argv)
    settings = dict(s.split("=", 1) for s in args.settings)
    payload = collect(Path(args.runs), Path(args.bundle), settings)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, payload)
    print(f"{payload['runs_finished']} of {payload['runs_planned']} runs finished -> {out}")
    s = payload["summary"] or {"variants": {}, "paired": {}}
    for v, e in s["variants"].items():
        print(f"  {v}: mean test OA {100 * e['mean_overall_acc']:.2f} % over seeds {e['seeds']}")
    for name, pair in s["paired"].items():
        oa = pair["overall_acc"]
        ci = f"[{100 * oa['ci95'][0]:+.2f}, {100 * oa['ci95'][1]:+.2f}]" if oa["ci95"] else "(n = 1)"
        print(f"  {name}: {100 * oa['mean']:+.2f} points OA, 95 % CI {ci}, n = {oa['n']}")
    for r in payload["runs_unfinished"]:
        part = r["partial"]
        print(f"  {r['id']}: not finished (exit {r['rc']})"
              + (f", last test OA {100 * part['overall_acc']:.2f} % at epoch {part['epoch']}" if part else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
