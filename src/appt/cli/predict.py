"""``appt predict --weights FILE PATH...``: classify files or folders; table, CSV/JSON, optional PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify your own point-cloud files", description=__doc__)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    p.add_argument("--weights", required=True, metavar="FILE", help="appt weights (folder or .safetensors file)")
    p.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    p.add_argument("--render", action="store_true", help="save a PNG of each cloud coloured by its prediction")
    p.add_argument("--top-k", type=int, default=3, help="classes listed per file (default 3)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--category", help="part segmentation: the object category of the files (e.g. Cap)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from appt.errors import ConfigError
    from appt.inference.predict import (collect_files, format_predictions, prepare_files, render_predictions,
                                        run_model, write_part_labels, write_predictions)
    from appt.inference.weights import read_data_info, weights_folder
    from appt.tasks import get_task

    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError("--top-k and --batch-size must be >= 1")
    weights = weights_folder(args.weights)
    files = collect_files(args.paths)
    info = read_data_info(weights)
    task_name = info.get("task", "classification")
    torch.manual_seed(int(info.get("seed", 0)))
    from appt.models.io import read_config_dict

    model = get_task(task_name).model_class(read_config_dict(weights).get("seg_model", "appt")).from_pretrained(weights)
    classes = info.get("classes") or [str(i) for i in range(model.config.num_classes)]
    task = get_task(task_name, classes)
    category = task.predict_category(args.category)  # part segmentation: the files' object category
    points, xyz = prepare_files(files, info, model.config.in_channels, min_points=model.config.neighbors[0])
    if torch.cuda.is_available():
        model = model.cuda()
    results = run_model(model, task, points, files, args.batch_size, args.top_k, category)
    out = Path(args.out)
    written = write_predictions(results, out)
    if category is not None:
        written += write_part_labels(results, xyz, out / "parts")
    if args.render:
        written += render_predictions(results, xyz, classes, out / "renders")
    print(format_predictions(results))
    print(f"written: {out / 'predictions.csv'}, {out / 'predictions.json'}"
          + (f", per-point parts (PLY + CSV) in {out / 'parts'}" if category is not None else "")
          + (f", {len(results)} PNGs in {out / 'renders'}" if args.render else ""))
    return 0
