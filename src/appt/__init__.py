"""appt: Adaptive Point-Prompt Tuning of frozen foundation models for 3D point clouds.

>>> from appt import APPTConfig, APPTForClassification, BackboneSpec
>>> model = APPTForClassification(APPTConfig(backbone=BackboneSpec("hf_text", "minilm"), num_classes=10))
>>> print(model.summary())

Top-level names are imported lazily, so ``import appt.geometry`` or ``appt.data`` (e.g. in data
loader workers) does not pull in transformers and timm.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "APPTConfig": "appt.models",
    "APPTForClassification": "appt.models",
    "APPTForPartSegmentation": "appt.models",
    "APPTModel": "appt.models",
    "AuthorsPartSegmentation": "appt.models",
    "BackboneSpec": "appt.backbones.base",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'appt' has no attribute {name!r}")
