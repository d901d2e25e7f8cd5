"""Tasks: what differs between classification and part segmentation, in one object per task.

The engine, evaluation, prediction and the CLI only ask the task of a run (``get_task(cfg.task,
classes)``): which model class to build, the loss, the figures and the one that picks the best
epoch, the report lines, and what ``appt predict`` returns. Adding a task is one new module here
whose class is decorated with :func:`register_task`; this package imports every module beside it,
so no list of tasks is kept by hand.

>>> from appt.tasks import TASKS, get_task
>>> list(TASKS)
['classification', 'part_segmentation']
"""

from __future__ import annotations

import importlib
import pkgutil

from appt.tasks.base import TASKS, Prediction, Task, get_task, register_task

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Prediction", "Task", "get_task", "register_task"]
