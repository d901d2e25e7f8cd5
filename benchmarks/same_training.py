"""Does the code here still train a finished (or partial) run bitwise as it did? The check to make
before moving the regimes queue's worktree to a new commit (docs/benchmarks.md, section 8).

    python benchmarks/same_training.py RUN_DIR [RUN_DIR ...] [--steps 10] [--out FILE.json]

For each run folder, ``appt train`` reruns the run's own resolved ``config.yaml`` in a temporary
folder, changed only in ``run_dir`` and ``train.stop_after_steps`` (one thread, offline, as the
queue's children run). Every training event the run logged up to that step (``train_step`` and
``train_epoch``: loss, accuracy, learning rate) must equal the rerun's exactly, as logged; times and
throughput are not compared. Exit 0 when every run matches, 1 otherwise; ``--out`` writes the
comparison with this tree's commit and dirty flag and the commits the runs recorded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_queue import appt_cmd, child_env, code_state, now, read_events, write_json

COMPARED_EVENTS = ("train_step", "train_epoch")
NOT_COMPARED = ("time", "samples_per_s")


def training_events(events: list[dict[str, Any]], steps: int) -> dict[tuple[str, int], dict[str, Any]]:
    """``(event, step) -> fields`` of the training events up to ``steps`` (a resumed run may log a
    step twice, identically when the resume is exact; the later one is kept)."""
    out = {}
    for e in events:
        if e.get("event") in COMPARED_EVENTS and e.get("step", steps + 1) <= steps:
            out[(e["event"], e["step"])] = {k: v for k, v in e.items() if k not in NOT_COMPARED}
    return out


def compare(run: dict[tuple[str, int], dict[str, Any]], rerun: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """The differences, one line each (empty: identical). The run's events must all be in the rerun."""
    if not run:
        return ["the run logged no training event up to that step"]
    problems = []
    for key, fields in sorted(run.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        other = rerun.get(key)
        if other is None:
            problems.append(f"{key[0]} at step {key[1]}: not logged by the rerun")
        elif other != fields:
            diff = {k: (fields.get(k), other.get(k)) for k in sorted(set(fields) | set(other)) if fields.get(k) != other.get(k)}
            problems.append(f"{key[0]} at step {key[1]}: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items()))
    return problems


def check(run_dir: Path, steps: int) -> dict[str, Any]:
    """Rerun ``run_dir``'s first ``steps`` steps here and compare (see the module docstring)."""
    run_events = read_events(run_dir)
    logged = [e["step"] for e in run_events if e.get("event") in COMPARED_EVENTS]
    steps = min(steps, max(logged, default=0))  # a partial run: compare what it has
    expected = training_events(run_events, steps)
    with tempfile.TemporaryDirectory(prefix="same_training_") as tmp:
        cmd = appt_cmd("train", "--config", str(run_dir / "config.yaml"), "--set", f"run_dir={tmp}/run",
                       "--set", f"train.stop_after_steps={steps}", "--no-progress")
        tic = time.time()
        proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, check=False)
        seconds = round(time.time() - tic, 1)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            problems = [f"the rerun failed (exit code {proc.returncode}): {tail[0]}"]
        else:
            problems = compare(expected, training_events(read_events(Path(tmp) / "run"), steps))
    record = run_dir.parent.parent / "sessions" / f"{run_dir.name}.json"  # a queue run's sessions
    sessions = json.loads(record.read_text()) if run_dir.parent.name == "runs" and record.is_file() else []
    return {"run_dir": str(run_dir), "steps": steps, "compared": len(expected),
            "identical": not problems, "problems": problems, "seconds": seconds,
            "run_commits": sorted({s["code"]["commit"] for s in sessions if "code" in s})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders made by appt train (a queue run: STATE/runs/ID)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps to rerun and compare (default 10)")
    parser.add_argument("--out", type=Path, help="write the comparison here (JSON)")
    args = parser.parse_args(argv)
    results = []
    for run_dir in args.runs:
        res = check(run_dir, args.steps)
        results.append(res)
        verdict = "identical" if res["identical"] else "DIFFERENT"
        print(f"{run_dir}: {res['compared']} training events up to step {res['steps']}: {verdict} ({res['seconds']:.0f} s)")
        for line in res["problems"]:
            print(f"  {line}")
    if args.out:
        env = child_env()
        settings = {k: env.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE", "HF_HUB_OFFLINE")}
        write_json(args.out, {"date": now(), "code": code_state(), "child_env": settings, "runs": results})
    return 0 if all(r["identical"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
