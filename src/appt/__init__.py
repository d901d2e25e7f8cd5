"""appt: Adaptive Point-Prompt Tuning of frozen foundation models for 3D point clouds."""

__version__ = "0.1.0"
