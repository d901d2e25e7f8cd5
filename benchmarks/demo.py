"""The README's demo figures, from a real run of the README's own demo command.

Runs ``appt train --config configs/demo_modelnet10_minilm.yaml`` in a subprocess exactly as the
README shows it (a fresh run folder), then writes ``results/demo_<date>.json``: the run's summary
(trained / total parameters, last- and best-epoch test figures), the fully resolved config the run
wrote, the commit and whether the tree was dirty, the machine and the wall time. The README quotes
the newest such file, and ``tests/test_readme.py`` fails when the two differ.

    python benchmarks/demo.py            # about 5 minutes on 2 CPU cores with the data cache warm
    python benchmarks/demo.py --avx2     # AVX2 kernels even on an AVX-512 CPU (the README's figures were made so)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from appt.training.kernels import AVX2_KERNELS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, kernel_isa, machine_info, write_results

CONFIG = "configs/demo_modelnet10_minilm.yaml"


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(RESULTS / f"demo_{datetime.date.today().isoformat()}.json"))
    p.add_argument("--avx2", action="store_true",
                   help="hold torch, MKL and oneDNN to AVX2 kernels (the bits of an AVX2 machine on an AVX-512 one)")
    args = p.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(AVX2_KERNELS if args.avx2 else {})}
    info = {**machine_info("cpu"), "torch_cpu_capability": kernel_isa(env), "avx2_kernels_forced": args.avx2}
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "demo"
        cmd = [sys.executable, "-m", "appt", "train", "--config", CONFIG, "--no-progress", "--set", f"run_dir={run_dir}"]
        start = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.time() - start
        if proc.returncode:
            sys.exit(f"demo run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary.pop("run_dir", None)
    config.pop("run_dir", None)
    write_results(args.out, {
        "benchmark": "readme_demo", "command": f"appt train --config {CONFIG}", "machine": info,
        "commit": git("rev-parse", "HEAD"), "dirty": dirty, "wall_seconds": round(seconds, 1),
        "summary": summary, "resolved_config": config, "stdout_tail": proc.stdout[-1500:],
    })
    last = summary["last_epoch"]
    print(f"test OA {100 * last['overall_acc']:.2f} %, mean class acc {100 * last['mean_class_acc']:.2f} %, "
          f"{summary['trainable_params']:,} / {summary['total_params']:,} trained, {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
