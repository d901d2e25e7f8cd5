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
    from appt.training.inference import run_folder_of, weights_folder

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
    from appt.models.io import load_trained
    from appt.training.builders import build_data, build_model
    from appt.training.config import load_config
    from appt.training.engine import make_accelerator
    from appt.training.evaluate import collect_outputs, format_figures, format_per_class, summarize, write_report
    from appt.training.inference import weights_folder
    from appt.training.loaders import make_loader, resolve_workers
    from appt.training.tasks import get_task

    if args.vote < 0:
        raise ConfigError(f"--vote must be >= 0, got {args.vote}")
    specs = _parse_corruptions(args.corrupt)
    weights, run_dir, config = _locate(args)
    cfg = load_config(config, args.overrides)
    accelerator = make_accelerator(cfg.train.precision)
    data = build_data(cfg, with_train=False)
    task = get_task(cfg.task, data.category_parts)
    model = build_model(cfg, data)
    load_trained(model, weights)  # refuses weights of another backbone / variant / shape
    loader = make_loader(data.test, cfg.data.eval_batch_size or cfg.data.batch_size, cfg.train.seed, False,
                         resolve_workers(cfg.data.num_workers, accelerator.device))
    model, loader = accelerator.prepare(model, loader)
    outputs = collect_outputs(accelerator.unwrap_model(model), loader, task, accelerator, vote=args.vote,
                              seed=cfg.train.seed, progress=not args.no_progress, desc="test")
    summary = summarize(task, outputs, data.classes)
    summary.update({"weights": str(weights), "vote": args.vote, "split": cfg.data.test_split})
    if accelerator.is_main_process:
        out = Path(args.out) if args.out else (
            run_dir / "eval" / weights_folder(weights).name if run_dir else Path("appt_eval"))
        written = write_report(summary, data.classes, out, title=f"{cfg.name}: {weights_folder(weights).name}")
        if "instance_miou" in summary:
            written.append(_render_parts(accelerator.unwrap_model(model), data.test, task, out / "parts.png"))
        print(f"{cfg.data.test_split}: {format_figures(summary)}" + (f" [vote x{args.vote}]" if args.vote else ""))
        print(format_per_class(summary))
        print("written: " + ", ".join(str(p) for p in written))
    if specs:
        result = _robustness(accelerator.unwrap_model(model), data, task, accelerator, cfg, specs, summary, args)
        if accelerator.is_main_process:
            from appt.training.robustness import format_table, write_robustness_report

            metric = "instance mIoU" if "instance_miou" in summary else "overall accuracy"
            written = write_robustness_report(result, out, metric)
            print(format_table(result))
            s = result["summary"]
            print(f"clean {100 * s['clean']:.2f} %, mean under corruption {100 * s['mean_corrupted']:.2f} %, "
                  f"mean drop {100 * s['mean_drop']:.2f} points"
                  + (f", mCE vs clean {s['mce_vs_clean']:.3f}" if "mce_vs_clean" in s else ""))
            print("written: " + ", ".join(str(p) for p in written))
    return 0


def _render_parts(model, dataset, task, path: Path, count: int = 4) -> Path:
    """A PNG of the first ``count`` test shapes coloured by predicted and by true parts."""
    import torch

    from appt.data import collate
    from appt.training.plots import render_part_comparison

    batch = collate([dataset[i] for i in range(min(count, len(dataset)))])
    device = next(model.parameters()).device
    on_device = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    model.eval()
    with torch.no_grad():
        pred = task.predict(task.forward(model, on_device), on_device["category"]).cpu().numpy()
    shapes = [(Path(name).stem, pts.numpy(), p, true.numpy())
              for name, pts, p, true in zip(batch["path"], batch["points"], pred, batch["seg"])]
    render_part_comparison(shapes, path)
    return path


def _parse_corruptions(items: list[str]) -> list[tuple[str, int]]:
    """``["jitter:2", "rotate"]`` -> ``[("jitter", 2), ("rotate", 1..5)]``; unknown names -> ConfigError."""
    from appt.data.corruptions import parse_corruption

    return [spec for item in items for spec in parse_corruption(item)]


def _robustness(model, data, task, accelerator, cfg, specs, clean_summary, args) -> dict:
    """The main score on every corrupted copy of the test split (seeded by ``train.seed``)."""
    from appt.training.evaluate import collect_outputs, summarize
    from appt.training.loaders import make_loader, resolve_workers
    from appt.training.robustness import CorruptedDataset, robustness_summary

    table: dict[str, dict[int, float]] = {}
    for kind, level in specs:
        dataset = CorruptedDataset(data.test, kind, level, seed=cfg.train.seed)
        loader = accelerator.prepare(make_loader(dataset, cfg.data.eval_batch_size or cfg.data.batch_size,
                                                 cfg.train.seed, False,
                                                 resolve_workers(cfg.data.num_workers, accelerator.device)))
        outputs = collect_outputs(model, loader, task, accelerator, progress=not args.no_progress,
                                  desc=f"{kind}:{level}")
        table.setdefault(kind, {})[level] = float(summarize(task, outputs, data.classes)["main"])
    return {"weights": str(args.weights or args.run), "seed": cfg.train.seed, "table": table,
            "summary": robustness_summary(float(clean_summary["main"]), table)}
