"""The run config of ``appt train --data PATH`` (no ``--config``): data from the layout, the rest
from defaults a user can override.

Why defaults in code, not another YAML: they depend on what was found (a split or not) and on the
machine (a GPU or not). The resolved config is written into the run folder as for any run, so
``appt train --config RUN/config.yaml`` repeats it. Defaults:

- backbone: the offline all-MiniLM-L6-v2 (``appt:minilm``);
- embedding: on CPU the 3-stage one of ``configs/modelnet10_minilm.yaml`` (``appt:embed_cpu``), on
  a GPU the authors' 4-stage one (the ``APPTConfig`` defaults);
- recipe: that of ``configs/modelnet10_minilm.yaml`` (AdamW 1e-3, cosine, scale + translate),
  1,024 points, batch 32, 30 epochs on CPU / 100 on a GPU;
- no train/test split in the data: a seeded stratified hold-out (``val_fraction``, default 0.2) is
  evaluated after every epoch and picks the best epoch (``data.test_split: val``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appt.data.detect import DataLayout
from appt.errors import ConfigError
from appt.training.config import RunConfig, config_from_dict
from appt.training.config_files import (
    deep_merge,
    parse_override,
    read_bases,
    set_dotted,
)

SHIPPED_BACKBONES = ("minilm", "mpnet", "vit_b16", "point_mae")
DEFAULT_VAL_FRACTION = 0.2
RECIPE: dict[str, Any] = {
    "lr": 1.0e-3, "weight_decay": 0.05, "warmup_epochs": 1, "min_lr": 1.0e-5, "label_smoothing": 0.2,
    "grad_clip": 10.0, "seed": 0, "eval_every": 1,
}
TRAIN_TRANSFORMS = [{"name": "scale", "low": 0.8, "high": 1.25, "anisotropic": True}, {"name": "translate", "shift": 0.1}]


def backbone_config(name: str) -> tuple[list[str], dict[str, Any]]:
    """``(bases, model.backbone section)`` for ``--backbone name``: a shipped base (``minilm``,
    ``mpnet``, ``vit_b16``, ``point_mae``), a timm model name, a Hugging Face id ``org/name`` (from
    the local cache when offline) or a local model folder."""
    if name in SHIPPED_BACKBONES:
        return [f"appt:{name}"], {}
    if Path(name).expanduser().is_dir():
        return [], {"family": "hf_text", "name": str(Path(name).expanduser().absolute()), "pretrained": True}
    if _is_timm_model(name):
        return [], {"family": "timm_vit", "name": name, "pretrained": True}
    if name.count("/") == 1 and all(name.split("/")):
        return [], {"family": "hf_text", "name": name, "pretrained": True}
    raise ConfigError(f"--backbone {name!r}: unknown; give one of {', '.join(SHIPPED_BACKBONES)}, "
                      "a timm ViT name (vit_base_patch16_224), a Hugging Face id (org/name) or a model folder")


def _is_timm_model(name: str) -> bool:
    import timm

    return bool(timm.is_model(name.split(".", 1)[0]))


def quick_config(layout: DataLayout, *, backbone: str = "minilm", gpu: bool = False, epochs: int | None = None,
                 points: int | None = None, batch_size: int | None = None, val_fraction: float | None = None,
                 run_dir: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The full run config for ``layout`` (see module doc); ``overrides`` (``key=value``) last."""
    bases, spec = backbone_config(backbone)
    if not gpu:
        bases.append("appt:embed_cpu")
    raw = read_bases(bases, Path.cwd())
    if spec:
        raw = deep_merge(raw, {"model": {"backbone": spec, "variant": "appt"}})
    if val_fraction is None:
        val_fraction = 0.0 if layout.has_split else DEFAULT_VAL_FRACTION
    if not layout.has_split and not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {val_fraction}: the data has no train/test split, so a hold-out in (0, 1) is needed")
    raw = deep_merge(raw, {
        "name": layout.root.stem,
        "task": layout.task,
        "run_dir": run_dir,
        "data": {
            "dataset": layout.dataset, "root": str(layout.root),
            "train_split": "train", "test_split": "test" if layout.has_split else "val",
            "num_points": points or 1024, "batch_size": batch_size or 32, "val_fraction": float(val_fraction),
            "options": {"sampling": "fps", **layout.options},
            "train_transforms": TRAIN_TRANSFORMS, "test_transforms": [],
        },
        "train": {**RECIPE, "epochs": epochs or (100 if gpu else 30)},
    })
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return config_from_dict(raw, source=f"--data {layout.root}")


def describe_plan(cfg: RunConfig, layout: DataLayout, backbone: str, gpu: bool) -> list[str]:
    """The lines ``appt train --data`` prints before training: what was found and chosen, and why."""
    d, b = cfg.data, cfg.model.get("backbone", {})
    lines = [f"data: {layout.describe()}"]
    if d.test_split == "val":
        lines.append(f"split: no train/test split in the data -> a seeded (seed {cfg.train.seed}) stratified hold-out of "
                     f"{100 * d.val_fraction:g} % of each class is evaluated after every epoch and picks the best "
                     "(--val-fraction)")
    elif d.val_fraction > 0:
        lines.append(f"split: train/test from the data; {100 * d.val_fraction:g} % of each class of train held out "
                     "to pick the best epoch")
    else:
        lines.append("split: train/test from the data")
    from appt.models.config import APPTConfig

    centers = list(cfg.model.get("centers") or APPTConfig.centers)
    embedding = (f"embedding centres {centers} (default on a GPU: the authors')" if gpu else
                 f"embedding centres {centers} (default on CPU: appt:embed_cpu, no GPU found)")
    lines.append(f"backbone: {backbone} ({b.get('family')} {b.get('name')}, frozen); {embedding}")
    epochs = f"{cfg.train.epochs} epoch{'' if cfg.train.epochs == 1 else 's'}"
    lines.append(f"recipe: {epochs}, {d.num_points} points, batch {d.batch_size}{', class-weighted loss' if cfg.train.balanced else ''} "
                 "(--epochs, --points, --batch-size; --set key=value for anything else)")
    return lines
