"""The task registry and what a task decides: unknown names refused, part predictions kept to the
parts of the shape's category."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from appt.errors import ConfigError
from appt.tasks import TASKS, get_task


def test_unknown_task_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_task("detection")
    assert "detection" in str(err.value)
    for name in TASKS:
        assert name in str(err.value)
    assert {"classification", "part_segmentation"} <= set(TASKS)


class FixedLogits(nn.Module):
    """``points (B, N, C), category (B,) -> logits (B, N, P)``: the same logits for every point."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits, requires_grad=False)

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(points.shape[0], points.shape[1], -1)


def test_part_predictions_are_restricted_to_the_category_parts() -> None:
    task = get_task("part_segmentation", ["Airplane", "Bag", "Cap"])  # parts 0-3, 4-5, 6-7
    logits = torch.zeros(8)
    logits[2] = 9.0  # an Airplane part: the winner without the mask
    logits[7] = 1.0  # the best of Cap's parts
    model = FixedLogits(logits)
    points = torch.zeros(2, 5, 3)
    cap = task.predict_category("Cap")
    results = task.predictions(model, points, ["a.ply", "b.ply"], top_k=3, category=cap)
    assert [r.label for r in results] == ["Cap", "Cap"]
    assert all(r.parts == [7] * 5 for r in results)
    assert results[0].confidence == pytest.approx(torch.tensor([0.0, 1.0]).softmax(-1)[1].item())
    # the training/evaluation path applies the same mask
    batch = {"category": torch.full((2,), cap), "seg": torch.full((2, 5), 7)}
    assert (task.outputs(model(points, batch["category"]), batch)["pred"] == 7).all()
    with pytest.raises(ConfigError, match="--category"):
        task.predict_category("Chair")


def test_evaluation_imports_neither_the_engine_nor_models_nor_tasks() -> None:
    """``appt.evaluation`` is the scoring room shared by tasks, ``appt eval`` and ``appt predict``:
    importing it must not load the trainer, the models, the tasks or Accelerate (design.md)."""
    code = (
        "import sys\n"
        "import appt.evaluation.metrics, appt.evaluation.seg_metrics, appt.evaluation.robustness, appt.evaluation.plots\n"
        "print(sorted(m for m in sys.modules if m.startswith(('appt.training', 'appt.models', 'appt.tasks', 'accelerate'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
