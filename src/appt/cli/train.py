"""``appt train --config FILE [--set key=value ...]``, ``appt train --resume RUN_DIR`` and
``appt train --bundle DIR`` (a folder made by ``appt bundle``: data and frozen backbone from it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from appt.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a config file", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="YAML config (see configs/)")
    src.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run where it stopped")
    src.add_argument("--bundle", metavar="DIR", help="train from a folder made by appt bundle (no data files needed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines still print)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from appt.training.config import load_config
    from appt.training.engine import Trainer

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir}: not a run folder (no config.yaml)")
        # The stop that simulated the interruption is not repeated unless asked for again.
        cfg = load_config(run_dir / "config.yaml", ["train.stop_after_steps=null", *args.overrides])
        cfg.run_dir = str(run_dir.absolute())
        trainer = Trainer(cfg, resume=True, progress=not args.no_progress)
    elif args.bundle:
        from appt.training.bundle import load_bundle_config

        cfg = load_bundle_config(args.bundle, args.overrides)
        trainer = Trainer(cfg, progress=not args.no_progress)
    else:
        cfg = load_config(args.config, args.overrides)
        trainer = Trainer(cfg, progress=not args.no_progress)
    trainer.fit()
    return 0
