"""Finding trained weights and what was saved beside them, for ``appt eval`` / ``appt predict``.

A weights folder (``RUN_DIR/checkpoints/best``) holds the model's ``appt_weights.safetensors`` and
``appt_config.json`` plus ``appt_data.json`` (class names and the test-time pipeline, written by
:func:`appt.training.checkpoint.data_info`); the run's ``config.yaml`` sits two levels up.
``--weights`` may name the folder or the safetensors file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appt.errors import CheckpointError
from appt.models.io import DATA_INFO, WEIGHTS_NAME


def weights_folder(path: str | Path) -> Path:
    """The folder of a weights file or folder; CheckpointError if there are no weights."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / WEIGHTS_NAME).is_file() and not (path.is_file() and path.suffix == ".safetensors"):
        raise CheckpointError(f"{path}: no appt weights here (expected {WEIGHTS_NAME})")
    return folder


def run_folder_of(weights: str | Path) -> Path | None:
    """The run folder a weights folder belongs to (``<run>/checkpoints/<name>``), if any."""
    run = weights_folder(weights).parent.parent
    return run if (run / "config.yaml").is_file() else None


def read_data_info(weights: str | Path) -> dict[str, Any]:
    """``appt_data.json`` beside the weights ({} when the weights were saved outside ``appt train``)."""
    path = weights_folder(weights) / DATA_INFO
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: not valid JSON") from None
