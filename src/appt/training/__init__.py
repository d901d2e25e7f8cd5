"""Training, evaluation and prediction: the YAML run config, the Accelerate engine, checkpoints, metrics.

>>> from appt.training import load_config, Trainer
>>> cfg = load_config("configs/demo_modelnet10_minilm.yaml", ["train.epochs=2"])
>>> summary = Trainer(cfg).fit()          # what `appt train` runs; see docs/cli.md

Names are imported on first use, so ``appt.evaluation.seg_metrics`` alone stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"RunConfig": "config", "load_config": "config", "save_config": "config", "Trainer": "engine"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"appt.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'appt.training' has no attribute {name!r}")
