"""``appt train --data PATH`` (your own point clouds: class folders, a .csv/.json list or a benchmark
root, everything else defaulted), ``appt train --config FILE [--set key=value ...]``, ``appt train
--resume RUN_DIR`` and ``appt train --bundle DIR`` (a folder made by ``appt bundle``)."""

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
    src.add_argument("--data", metavar="PATH",
                     help="your data, no config needed: <class>/[train|test/]<files>, a .csv/.json file list, or a benchmark root")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    add_plain_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines still print)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from appt.training.config import load_config
    from appt.training.engine import Trainer

    if args.data:
        return run_on_data(args)
    if args.backbone is not None:
        raise ConfigError("--backbone goes with --data; with --config use --set model.backbone.name=...")
    args.overrides = [*plain_overrides(args), *args.overrides]
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
    print_next_steps(trainer.fit())
    return 0


def add_plain_flags(p: argparse.ArgumentParser) -> None:
    """The flags a user of ``--data`` sets most; with ``--config`` they are ``--set`` shortcuts."""
    p.add_argument("--backbone", help="with --data: minilm (default), mpnet, vit_b16, point_mae, a timm name or a HF id/folder")
    p.add_argument("--epochs", type=int, help="training epochs (--data default: 30 on CPU, 100 on a GPU)")
    p.add_argument("--points", type=int, help="points per cloud (--data default 1024)")
    p.add_argument("--batch-size", type=int, help="batch size (--data default 32)")
    p.add_argument("--val-fraction", type=float,
                   help="share of each class held out (--data without a train/test split: default 0.2)")
    p.add_argument("--run-dir", help="the run folder (default runs/<name>-<date-time>)")
    p.add_argument("--balanced", action="store_true",
                   help="class-weighted loss for imbalanced data (train.balanced=true)")


def plain_overrides(args: argparse.Namespace) -> list[str]:
    """``--epochs 5`` -> ``train.epochs=5`` and so on, for the flags given."""
    keys = {"epochs": "train.epochs", "points": "data.num_points", "batch_size": "data.batch_size",
            "val_fraction": "data.val_fraction", "run_dir": "run_dir"}
    given = [f"{key}={getattr(args, flag)}" for flag, key in keys.items() if getattr(args, flag) is not None]
    return given + (["train.balanced=true"] if args.balanced else [])


def run_on_data(args: argparse.Namespace) -> int:
    """``appt train --data PATH``: detect the layout, build a config with defaults, train, report."""
    import torch

    from appt.data.detect import detect_layout
    from appt.training.engine import Trainer
    from appt.training.quickstart import backbone_config, describe_plan, quick_config

    backbone = args.backbone or "minilm"
    backbone_config(backbone)  # an unknown name is reported before the data is read
    layout = detect_layout(args.data)
    gpu = torch.cuda.is_available()
    cfg = quick_config(layout, backbone=backbone, gpu=gpu, epochs=args.epochs, points=args.points,
                       batch_size=args.batch_size, val_fraction=args.val_fraction, run_dir=args.run_dir,
                       overrides=(["train.balanced=true"] if args.balanced else []) + args.overrides)
    for line in describe_plan(cfg, layout, backbone, gpu):
        print(line)
    trainer = Trainer(cfg, progress=not args.no_progress)
    data = trainer.data
    what = "held out" if cfg.data.test_split == "val" else "test"
    print(f"shapes: {len(data.train):,} train / {len(data.test):,} {what}"
          + ("" if data.eval_is_test else f" / {len(data.eval):,} validation"))
    print_next_steps(trainer.fit())
    return 0


def print_next_steps(summary: dict) -> None:
    """After a finished run: the commands that use its weights (nothing after a deliberate stop)."""
    if "stopped_at_step" in summary or "run_dir" not in summary:
        return
    run = summary["run_dir"]
    print(f"next: appt predict --weights {Path(run) / 'checkpoints' / 'best'} FILE_OR_FOLDER ...   "
          f"(evaluate again: appt eval --run {run})")
