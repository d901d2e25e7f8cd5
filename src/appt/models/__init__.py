"""APPT task models, their config, and trained-weights-only checkpoints."""

from appt.models.authors_segmentation import AuthorsPartSegmentation
from appt.models.base import APPTModel
from appt.models.classification import APPTForClassification
from appt.models.config import VARIANTS, APPTConfig
from appt.models.io import load_trained, save_trained, trained_state_dict
from appt.models.segmentation import APPTForPartSegmentation

__all__ = [
    "VARIANTS",
    "APPTConfig",
    "APPTForClassification",
    "APPTForPartSegmentation",
    "APPTModel",
    "AuthorsPartSegmentation",
    "load_trained",
    "save_trained",
    "trained_state_dict",
]
