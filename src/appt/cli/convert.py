"""``appt convert --authors-checkpoint CKPT --config CONFIG --out DIR``: the authors' weights as an appt folder.

Reads a checkpoint saved by the authors' APPT code (GitHub wish254/APPT, their key names) into the
model of CONFIG (a paper preset, e.g. configs/scanobjectnn_pb_t50_rs_vit_b16_paper.yaml; their
segmentation model APF_Seg into configs/shapenetpart_vit_b16_paper.yaml, seg_model: authors) and writes
the folder ``appt eval --weights DIR --config CONFIG``, ``appt predict --weights DIR`` and
``APPTForClassification.from_pretrained(DIR)`` read. A missing, unexpected or misshapen tensor, or
frozen blocks unlike the backbone CONFIG names, stop it with one line naming the key.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert the authors' checkpoint into an appt weights folder",
                       description=__doc__)
    p.add_argument("--authors-checkpoint", required=True, metavar="CKPT",
                   help="a .pth saved by the authors' code ({'net': state_dict, ...}, {'model': ...} or a bare state dict)")
    p.add_argument("--config", required=True, help="the paper preset the weights belong to")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.backbone.checkpoint=vit_b16.pth")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from appt.tasks import get_task
    from appt.training.builders import build_data, build_model
    from appt.training.config import load_config
    from appt.training.checkpoint import data_info, publish_model_folder

    cfg = load_config(args.config, args.overrides)
    load_authors = get_task(cfg.task).authors_loader(cfg.model.get("seg_model"), args.config)
    data = build_data(cfg, with_train=False) if Path(cfg.data.root).exists() else None
    model = build_model(cfg, data).eval()
    load_authors(model, args.authors_checkpoint)
    out = Path(args.out)
    publish_model_folder(model, out, data_info(cfg, data, model.config.in_channels))
    trainable, _ = model.count_parameters()
    print(f"converted {args.authors_checkpoint} -> {out} ({model.config.backbone.identity()}, "
          f"{trainable:,} trained parameters{'' if data is not None else '; class names: none, data not found'})")
    return 0
