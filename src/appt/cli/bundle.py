"""``appt bundle --config FILE [--set key=value ...] --out DIR``: stage a run for an offline GPU node.

Writes the prepared clouds of every split the run uses (float16 coordinates after the cached FPS),
the frozen backbone's tensors that APPT drives (float16 by default), what rebuilds its blocks with
transformers / timm, the resolved config and a manifest with the size and sha256 of every file.
On the node: ``appt train --bundle DIR`` (needs only torch, transformers/timm, accelerate,
safetensors, numpy). See docs/cli.md, "Runs on offline GPU nodes".
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="stage data + frozen backbone + config into one folder for offline nodes",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.subset=500 (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="the bundle folder to create (must not exist or be empty)")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16",
                   help="storage type of the backbone's tensors (default fp16; computed in fp32 after loading)")
    p.add_argument("--points-dtype", choices=("fp16", "fp32"), default="fp16",
                   help="storage type of the coordinates (default fp16; fp32 reproduces a run without bundle exactly)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from appt.training.bundle import create_bundle, format_manifest
    from appt.training.config import load_config

    cfg = load_config(args.config, args.overrides)
    manifest = create_bundle(cfg, args.out, dtype=args.dtype, points_dtype=args.points_dtype,
                             progress=not args.no_progress)
    print(format_manifest(manifest, args.out))
    print(f"on the node: appt train --bundle {args.out}   (or: PYTHONPATH=src python -m appt train --bundle ...)")
    return 0
