"""Write the reproduction table (``docs/results.md``) from the run folders of ``reproduce.sh``.

    python benchmarks/results_table.py RUNS_DIR NAME [NAME ...] --out docs/results.md

One row per config name: dataset, backbone, variant, epochs, best- and last-epoch figure (test
accuracy, or instance mIoU for part segmentation), trained / total parameters. A run that did not
finish gets a row with the last line of its log, so the table never hides a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from appt.backbones.base import BackboneSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table  # noqa: E402

HEADER = ["config", "dataset", "backbone", "variant", "epochs", "metric", "best epoch", "last epoch",
          "trained / total params"]


def last_log_line(log: Path) -> str:
    if not log.exists():
        return "no log"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "empty log"


def row(runs: Path, name: str) -> list[str]:
    """The table row of config ``name`` (its run folder is ``runs/name``)."""
    run = runs / name
    summary_file, config_file = run / "summary.json", run / "config.yaml"
    if not summary_file.exists() or not config_file.exists():
        return [name, "-", "-", "-", "-", "-", "not run", last_log_line(runs / f"{name}.log").replace("|", "/"), "-"]
    cfg = yaml.safe_load(config_file.read_text())
    summary = json.loads(summary_file.read_text())
    last, best = summary["last_epoch"], summary["best_epoch"]
    key = "overall_acc" if "overall_acc" in last else "instance_miou"
    if "test_last" in summary:  # best epoch chosen on a validation split, then tested
        last_value, best_value = summary["test_last"][key], summary["test_at_best_val"][key]
    else:
        last_value, best_value = last[key], best[key]
    data = cfg["data"]
    return [
        name, f"{data['dataset']} ({Path(data['root']).name})", BackboneSpec(**cfg["model"]["backbone"]).identity(),
        cfg["model"].get("variant", "appt"), str(summary["epochs"]), key,
        f"{100 * best_value:.2f} (epoch {best['epoch']})", f"{100 * last_value:.2f}",
        f"{summary['trainable_params']:,} / {summary['total_params']:,}",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="the RUNS_DIR of reproduce.sh")
    p.add_argument("names", nargs="+", help="config names, in table order")
    p.add_argument("--out", type=Path, default=Path("docs/results.md"))
    args = p.parse_args(argv)
    machine = machine_info("cpu")
    text = "\n".join([
        "# Reproduction results",
        "",
        f"Written by `benchmarks/reproduce.sh` on {time.strftime('%Y-%m-%d')} ({machine['cpu']}, "
        f"{machine['cpu_cores']} cores). Figures are test-split percentages; \"best epoch\" is the best "
        "evaluated epoch (chosen on the validation split where the config holds one out).",
        "",
        markdown_table(HEADER, [row(args.runs, name) for name in args.names]),
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
