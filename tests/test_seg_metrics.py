"""Part-segmentation metrics: hand-computed cases, the absent-part rule, a loop reference, real labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from appt.errors import ConfigError, DataError
from appt.evaluation.seg_metrics import PartSegMeter, part_iou, part_ious, restrict_to_parts

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAP_DIR = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal" / "02954340"
# four of ShapeNetPart's 16 categories with their standard part ids (of 50)
PARTS = {"Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 7], "Motorbike": [30, 31, 32, 33, 34, 35]}
NUM_PARTS = 50


def test_part_iou_hand_computed() -> None:
    # part 0: pred {0,1}, target {0} -> 1/2; part 1: pred {2,3}, target {1,2,3} -> 2/3
    pred, target = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    np.testing.assert_allclose(part_ious(pred, target, [0, 1]), [1 / 2, 2 / 3])
    assert part_iou(pred, target, [0, 1]) == pytest.approx(7 / 12)


def test_part_absent_from_prediction_and_target_counts_one() -> None:
    assert part_iou(np.array([0, 0, 1]), np.array([0, 0, 1]), [0, 1, 2]) == pytest.approx(1.0)
    # part 0: 2/3, part 1: predicted nowhere but present -> 0, part 2 absent from both -> 1
    assert part_iou(np.array([0, 0, 0]), np.array([0, 0, 1]), [0, 1, 2]) == pytest.approx(5 / 9)
    # a part present only in the prediction scores 0, not 1
    assert part_iou(np.array([0, 2, 2]), np.array([0, 0, 0]), [0, 2]) == pytest.approx((1 / 3 + 0) / 2)


def test_logits_are_restricted_to_the_category_parts() -> None:
    logits = np.zeros((3, NUM_PARTS))
    logits[:, 40] = 9.0  # globally best part belongs to another category
    logits[0, 7], logits[1, 6], logits[2, 7] = 2.0, 1.0, 0.5
    np.testing.assert_array_equal(restrict_to_parts(logits, PARTS["Cap"]), [7, 6, 7])
    meter = PartSegMeter(PARTS)
    meter.update(logits, np.array([7, 6, 7]), "Cap")
    assert meter.compute()["instance_miou"] == pytest.approx(1.0)


def test_instance_and_class_miou_hand_computed() -> None:
    meter = PartSegMeter(PARTS)
    meter.update(np.array([6, 7, 7, 6]), np.array([6, 7, 7, 6]), "Cap")  # IoU 1
    meter.update(np.array([6, 6, 6, 6]), np.array([6, 6, 7, 7]), 2)  # part 6: 2/4, part 7: 0 -> 0.25
    meter.update(np.array([5, 5]), np.array([4, 4]), "Bag")  # both parts 0 -> 0
    out = meter.compute()
    assert out["instance_miou"] == pytest.approx((1.0 + 0.25 + 0.0) / 3)
    assert out["class_miou"] == pytest.approx((0.625 + 0.0) / 2)  # only categories seen count
    assert out["per_category_miou"] == pytest.approx({"Bag": 0.0, "Cap": 0.625})
    assert out["point_acc"] == pytest.approx((4 + 2 + 0) / 10)
    assert out["num_samples"] == 3
    meter.reset()
    assert meter.compute()["num_samples"] == 0


def loop_reference(preds, targets, categories) -> dict[str, object]:
    """Point-by-point loops, written independently of the vectorised meter."""
    names = list(PARTS)
    shape_scores: list[tuple[str, float]] = []
    for pred, target, cat in zip(preds, targets, categories):
        parts = PARTS[names[cat]]
        if pred.ndim == 2:  # logits: best part of this category at each point
            labels = []
            for row in pred:
                best = parts[0]
                for part in parts:
                    if row[part] > row[best]:
                        best = part
                labels.append(best)
            pred = np.array(labels)
        ious = []
        for part in parts:
            inter = union = 0
            for p, t in zip(pred, target):
                inter += p == part and t == part
                union += p == part or t == part
            ious.append(1.0 if union == 0 else inter / union)
        shape_scores.append((names[cat], sum(ious) / len(ious)))
    by_cat: dict[str, list[float]] = {}
    for name, iou in shape_scores:
        by_cat.setdefault(name, []).append(iou)
    per_cat = {name: sum(v) / len(v) for name, v in by_cat.items()}
    return {
        "instance_miou": sum(i for _, i in shape_scores) / len(shape_scores),
        "class_miou": sum(per_cat.values()) / len(per_cat),
        "per_category_miou": per_cat,
    }


def random_batch(rng: np.random.Generator, num_shapes: int, num_points: int, logits: bool):
    categories = rng.integers(0, 3, size=num_shapes)  # Motorbike never appears
    targets, preds = [], []
    for cat in categories:
        parts = np.array(PARTS[list(PARTS)[cat]])
        present = parts[: rng.integers(1, len(parts) + 1)]  # some parts absent from the shape
        target = rng.choice(present, size=num_points)
        if logits:
            pred = rng.standard_normal((num_points, NUM_PARTS))
        else:  # mostly right, some other in-category parts, some parts of other categories
            pred = np.where(rng.random(num_points) < 0.6, target, rng.choice(parts, size=num_points))
            pred = np.where(rng.random(num_points) < 0.1, rng.integers(0, NUM_PARTS, size=num_points), pred)
        targets.append(target)
        preds.append(pred)
    return np.stack(preds), np.stack(targets), categories


@pytest.mark.parametrize("logits", [False, True])
def test_meter_matches_a_loop_implementation_on_random_data(logits: bool) -> None:
    rng = np.random.default_rng(0)
    preds, targets, categories = random_batch(rng, num_shapes=40, num_points=64, logits=logits)
    meter = PartSegMeter(PARTS)
    meter.update(preds[:25], targets[:25], categories[:25])  # batches of uneven size
    meter.update(torch.from_numpy(preds[25:]), torch.from_numpy(targets[25:]), torch.from_numpy(categories[25:]))
    got, want = meter.compute(), loop_reference(preds, targets, categories)
    assert got["instance_miou"] == pytest.approx(want["instance_miou"])
    assert got["class_miou"] == pytest.approx(want["class_miou"])
    assert got["per_category_miou"] == pytest.approx(want["per_category_miou"])
    assert got["num_samples"] == 40
    assert 0.0 < got["instance_miou"] < 1.0 and got["class_miou"] != got["instance_miou"]


def test_real_cap_labels_scored_against_themselves_and_a_constant_guess() -> None:
    meter, constant = PartSegMeter(PARTS), PartSegMeter(PARTS)
    expected = []
    for path in sorted(CAP_DIR.glob("cap_*.txt")):
        seg = np.loadtxt(path, dtype=np.float32)[:, 6].astype(np.int64)
        meter.update(seg, seg, "Cap")
        constant.update(np.full_like(seg, 6), seg, "Cap")
        share = float((seg == 6).mean())  # part 6 IoU = its share; part 7 is never predicted -> 0
        expected.append((share + (1.0 if share == 1.0 else 0.0)) / 2)
    assert meter.compute()["num_samples"] == 16
    assert meter.compute()["instance_miou"] == pytest.approx(1.0)
    assert constant.compute()["instance_miou"] == pytest.approx(np.mean(expected))
    assert constant.compute()["instance_miou"] < 0.75


def test_bad_inputs_raise() -> None:
    meter = PartSegMeter(PARTS)
    with pytest.raises(ConfigError, match="unknown category 'Lamp'"):
        meter.update(np.array([0]), np.array([0]), "Lamp")
    with pytest.raises(ConfigError, match="category id 7"):
        meter.update(np.array([0]), np.array([0]), 7)
    with pytest.raises(DataError, match="target parts \\[0\\] not in category Cap"):
        meter.update(np.array([6]), np.array([0]), "Cap")
    with pytest.raises(DataError, match="does not match"):
        meter.update(np.array([6, 7]), np.array([6, 7, 7]), "Cap")
    with pytest.raises(DataError, match="2 categories for 1 shapes"):
        meter.update(np.array([[6, 7]]), np.array([[6, 7]]), [2, 2])
    with pytest.raises(ConfigError, match="empty"):
        PartSegMeter({})
