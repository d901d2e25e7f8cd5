"""Training, evaluation and prediction: the YAML run config, the Accelerate engine, checkpoints, metrics.

>>> from appt.training import load_config, Trainer
>>> cfg = load_config("configs/demo_modelnet10_minilm.yaml", ["train.epochs=2"])
>>> summary = Trainer(cfg).fit()          # what `appt train` runs; see docs/cli.md
"""

from appt.training.config import RunConfig, load_config, save_config
from appt.training.engine import Trainer

__all__ = ["RunConfig", "Trainer", "load_config", "save_config"]
