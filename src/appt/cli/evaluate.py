"""``appt eval --run RUN_DIR | --weights FILE [--config FILE]``: test figures, confusion matrix (CSV, PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate trained weights on the test split", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_DIR", help="a folder made by appt train")
    src.add_argument("--weights", metavar="FILE", help="appt weights (folder or .safetensors file)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="with --run: which weights")
    p.add_argument("--config", help="data and model config (default: the run's config.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.root=/data/modelnet")
    p.add_argument("--vote", type=int, default=0, metavar="N",
                   help="test-time voting: average the logits of N randomly scaled copies (field: 10)")
    p.add_argument("--corrupt", nargs="+", default=[], metavar="KIND[:LEVEL]",
                   help="also evaluate on ModelNet-C-style corrupted copies (jitter, dropout_global, "
                        "dropout_local, add_global, add_local, scale, rotate, or all; levels 1-5, default all five)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/eval/<checkpoint>, else ./appt_eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def _locate(args: argparse.Namespace) -> tuple[Path, Path | None, Path]:
    """(weights, run folder or None, config file) named by ``--run`` / ``--weights`` / ``--config``."""
    from appt.errors import ConfigError
    from appt.inference.weights import run_folder_of, weights_folder

    if args.run:
        run_dir: Path | None = Path(args.run)
        weights = run_dir / "checkpoints" / args.checkpoint
        weights_folder(weights)
    else:
        weights = Path(args.weights)
        run_dir = run_folder_of(weights)
    config = Path(args.config) if args.config else (run_dir / "config.yaml" if run_dir else None)
    if config is None:
        raise ConfigError(f"{weights}: not inside a run folder; pass --config for the data and model")
    return weights, run_dir, config


def run(args: argparse.Namespace) -> int:
    from appt.errors import ConfigError
    from appt.inference.weights import weights_folder
    from appt.training.config import load_config
    from appt.training.evaluate import evaluate_corruptions, evaluate_weights
    from appt.evaluation.robustness import format_table

    if args.vote < 0:
        raise ConfigError(f"--vote must be >= 0, got {args.vote}")
    specs = _parse_corruptions(args.corrupt)
    weights, run_dir, config = _locate(args)
    cfg = load_config(config, args.overrides)
    name = weights_folder(weights).name
    out = Path(args.out) if args.out else (run_dir / "eval" / name if run_dir else Path("appt_eval"))
    ev = evaluate_weights(cfg, weights, out, f"{cfg.name}: {name}", vote=args.vote, progress=not args.no_progress)
    if ev.is_main:
        print(f"{cfg.data.test_split}: {ev.task.format_figures(ev.summary)}" + (f" [vote x{args.vote}]" if args.vote else ""))
        print(ev.task.format_per_class(ev.summary))
        print("written: " + ", ".join(str(p) for p in ev.written))
    if specs:
        result, written = evaluate_corruptions(ev, specs, str(args.weights or args.run), out,
                                               progress=not args.no_progress)
        if ev.is_main:
            print(format_table(result))
            s = result["summary"]
            print(f"clean {100 * s['clean']:.2f} %, mean under corruption {100 * s['mean_corrupted']:.2f} %, "
                  f"mean drop {100 * s['mean_drop']:.2f} points"
                  + (f", mCE vs clean {s['mce_vs_clean']:.3f}" if "mce_vs_clean" in s else ""))
            print("written: " + ", ".join(str(p) for p in written))
    return 0


def _parse_corruptions(items: list[str]) -> list[tuple[str, int]]:
    """``["jitter:2", "rotate"]`` -> ``[("jitter", 2), ("rotate", 1..5)]``; unknown names -> ConfigError."""
    from appt.data.corruptions import parse_corruption

    return [spec for item in items for spec in parse_corruption(item)]
