"""Scoring, apart from training: classification and part-segmentation metrics, robustness (mCE)
scoring and the plots of an evaluation.

Plain NumPy / torch functions of predictions and targets; nothing here imports the engine, the
models or Accelerate, so the tasks, ``appt eval`` and ``appt predict`` share them without loading a
trainer. Running a model over a test set is the engine's job (``appt.training.evaluate``).
"""
