"""Corruption robustness: evaluate one model on ModelNet-C-style corrupted copies of a test set.

Each (kind, level) corrupts every test cloud *after* its usual preparation (centred, unit sphere,
N points), with a generator seeded by ``(seed, kind, level, index)``, so a report is reproducible
and independent of batch size or worker count. Part labels follow the points they belong to
(``corrupt_with_source``), so segmentation models are scored the same way.

Scores: ModelNet-C's corruption error (CE, mCE) and relative corruption error (RCE, RmCE), with
the published DGCNN reference table; :func:`robustness_summary` applies them to a report.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from appt.data.corruptions import CORRUPTIONS, corrupt_with_source
from appt.errors import ConfigError


class CorruptedDataset(Dataset):
    """``base[i]`` with its points corrupted by ``kind`` at ``level`` (per-point fields follow)."""

    def __init__(self, base: Dataset, kind: str, level: int, seed: int = 0) -> None:
        self.base, self.kind, self.level, self.seed = base, kind, level, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.base[index])
        rng = np.random.default_rng([self.seed, CORRUPTIONS.index(self.kind), self.level, index])
        points, source = corrupt_with_source(sample["points"].numpy(), self.kind, self.level, rng)
        sample["points"] = torch.from_numpy(points)
        if "seg" in sample:
            sample["seg"] = sample["seg"][torch.from_numpy(source)]
        return sample


# Published ModelNet-C reference: DGCNN's overall accuracy on ModelNet40-C, averaged over the five
# levels (Ren et al. 2022), as error rates; the values are those of the ``DGCNN_OA`` table in
# ``modelnetc_utils/eval.py`` of github.com/jiawei-ren/ModelNet-C (checked 2026-12-01). Only a
# valid reference for ModelNet40-C evaluations.
MODELNET_C_DGCNN_CLEAN_ERROR = 1.0 - 0.926
MODELNET_C_DGCNN_ERROR: dict[str, float] = {
    kind: 1.0 - acc
    for kind, acc in {
        "jitter": 0.684,
        "dropout_global": 0.752,
        "dropout_local": 0.793,
        "add_global": 0.705,
        "add_local": 0.725,
        "scale": 0.906,
        "rotate": 0.785,
    }.items()
}


ErrorTable = Mapping[str, float | Sequence[float]]


def _mean_error(value: float | Sequence[float], what: str) -> float:
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ConfigError(f"corruption error {what}: expected finite error rates, got {value!r}")
    return float(values.mean())


def corruption_error(errors: float | Sequence[float], reference_errors: float | Sequence[float]) -> float:
    """ModelNet-C's CE of one kind: ``sum_l E_l / sum_l E^ref_l`` (error = 1 - accuracy).

    Each argument is the per-level errors (levels 1..5) or their mean; with equally many levels
    the ratio of sums equals the ratio of means, which is what is computed. CE < 1: more robust
    than the reference model.
    """
    ref = _mean_error(reference_errors, "reference")
    if ref <= 0:
        raise ConfigError(f"corruption error: reference error must be > 0, got {reference_errors!r}")
    return _mean_error(errors, "model") / ref


def relative_corruption_error(
    errors: float | Sequence[float],
    clean_error: float,
    reference_errors: float | Sequence[float],
    reference_clean_error: float,
) -> float:
    """ModelNet-C's RCE of one kind: the *drop* from the clean score, relative to the reference's.

    ``sum_l (E_l - E_clean) / sum_l (E^ref_l - E^ref_clean)``; it separates robustness from clean
    accuracy (a model can have a low CE just by being accurate).
    """
    ref_drop = _mean_error(reference_errors, "reference") - float(reference_clean_error)
    if ref_drop == 0:
        raise ConfigError("relative corruption error: reference error equals its clean error (division by 0)")
    return (_mean_error(errors, "model") - float(clean_error)) / ref_drop


def _check_kinds(errors: ErrorTable, reference: ErrorTable) -> list[str]:
    if not errors:
        raise ConfigError("corruption error: no corruption kinds given")
    missing = sorted(set(errors) - set(reference))
    if missing:
        raise ConfigError(f"corruption error: reference has no entry for {', '.join(missing)}")
    return list(errors)


def mean_corruption_error(errors: ErrorTable, reference: ErrorTable) -> float:
    """ModelNet-C's mCE: the mean over kinds of :func:`corruption_error`.

    ``errors`` / ``reference``: kind -> per-level error rates (or their mean). Every kind in
    ``errors`` must be in ``reference`` (e.g. ``MODELNET_C_DGCNN_ERROR`` for ModelNet40-C).
    """
    kinds = _check_kinds(errors, reference)
    return float(np.mean([corruption_error(errors[k], reference[k]) for k in kinds]))


def relative_mean_corruption_error(
    errors: ErrorTable, clean_error: float, reference: ErrorTable, reference_clean_error: float
) -> float:
    """ModelNet-C's RmCE: the mean over kinds of :func:`relative_corruption_error`."""
    kinds = _check_kinds(errors, reference)
    return float(
        np.mean(
            [relative_corruption_error(errors[k], clean_error, reference[k], reference_clean_error) for k in kinds]
        )
    )


def robustness_summary(clean: float, table: dict[str, dict[int, float]]) -> dict[str, Any]:
    """Scores of a robustness table (``kind -> level -> main score``, e.g. OA; ``clean`` the same score).

    ``mce_vs_clean``: mean over kinds of (mean corrupted error / clean error), i.e. the model is its
    own reference (1.0 = corruption costs nothing). ``mean_drop``: mean over kinds and levels of
    ``clean - corrupted`` score. ``modelnet_c_mce`` / ``_rmce``: ModelNet-C's mCE / RmCE against
    the published DGCNN figures; comparable to the literature only on ModelNet40 test clouds.
    """
    errors = {k: [1.0 - v for _, v in sorted(levels.items())] for k, levels in table.items()}
    clean_error = 1.0 - clean
    out: dict[str, Any] = {
        "clean": clean,
        "mean_corrupted": float(np.mean([v for levels in table.values() for v in levels.values()])),
        "mean_drop": float(np.mean([clean - v for levels in table.values() for v in levels.values()])),
        "per_kind_mean": {k: float(np.mean(list(levels.values()))) for k, levels in table.items()},
    }
    if clean_error > 0:
        out["mce_vs_clean"] = mean_corruption_error(errors, {k: clean_error for k in errors})
    full = all(len(levels) == 5 for levels in table.values())
    if full and set(errors) <= set(MODELNET_C_DGCNN_ERROR):
        out["modelnet_c_mce"] = mean_corruption_error(errors, MODELNET_C_DGCNN_ERROR)
        out["modelnet_c_rmce"] = relative_mean_corruption_error(
            errors, clean_error, MODELNET_C_DGCNN_ERROR, MODELNET_C_DGCNN_CLEAN_ERROR
        )
    return out


def write_robustness_report(result: dict[str, Any], out_dir: str | os.PathLike, metric: str) -> list[Path]:
    """``robustness.json``, ``robustness.csv`` (kind, level, score), ``robustness.md`` (a table) and
    ``robustness.png`` (score against severity, one line per kind, the clean score dashed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table: dict[str, dict[int, float]] = result["table"]
    paths = [out_dir / f"robustness.{ext}" for ext in ("json", "csv", "md", "png")]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    with open(paths[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["corruption", "level", metric])
        w.writerow(["clean", 0, f"{result['summary']['clean']:.6f}"])
        for kind, levels in table.items():
            for level, value in sorted(levels.items()):
                w.writerow([kind, level, f"{value:.6f}"])
    all_levels = sorted({lv for levels in table.values() for lv in levels})
    lines = [f"| corruption | {' | '.join(f'level {lv}' for lv in all_levels)} | mean |",
             "|---|" + "---|" * (len(all_levels) + 1)]
    for kind, levels in table.items():
        cells = [f"{100 * levels[lv]:.2f}" if lv in levels else "–" for lv in all_levels]
        lines.append(f"| {kind} | {' | '.join(cells)} | {100 * np.mean(list(levels.values())):.2f} |")
    s = result["summary"]
    lines.append("")
    lines.append(f"{metric} in %; clean {100 * s['clean']:.2f} %, mean corrupted {100 * s['mean_corrupted']:.2f} %, "
                 f"mean drop {100 * s['mean_drop']:.2f} points" +
                 (f", mCE vs clean {s['mce_vs_clean']:.3f}" if "mce_vs_clean" in s else ""))
    paths[2].write_text("\n".join(lines) + "\n")
    _plot(table, s["clean"], paths[3], metric)
    return paths


def _plot(table: dict[str, dict[int, float]], clean: float, path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind, levels in table.items():
        xs = sorted(levels)
        ax.plot(xs, [100 * levels[x] for x in xs], marker="o", label=kind)
    ax.axhline(100 * clean, color="black", linestyle="--", linewidth=1, label="clean")
    ax.set_xlabel("severity")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(result: dict[str, Any]) -> str:
    """One line per corruption kind with its score at each level, in percent (for the terminal)."""
    table: dict[str, dict[int, float]] = result["table"]
    rows = [f"{kind:16s} " + "  ".join(f"L{lv}: {100 * v:6.2f}" for lv, v in sorted(levels.items()))
            for kind, levels in table.items()]
    return "\n".join(rows)

