"""Evaluation: run a model over a loader (optionally with test-time voting), score it with its task,
write the report; ``appt eval`` (:func:`evaluate_weights`, :func:`evaluate_corruptions`) on top."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from appt.tasks import Task


def vote_scale(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The field's test-time-voting augmentation: anisotropic xyz scaling in [0.85, 1.15]
    (``(B, N, C) -> (B, N, C)``; extra channels such as normals or height are left alone)."""
    b = points.shape[0]
    scale = torch.empty(b, 1, 3).uniform_(0.85, 1.15, generator=generator).to(points)
    out = points.clone()
    out[..., :3] = out[..., :3] * scale
    return out


@torch.no_grad()
def collect_outputs(
    model: nn.Module, loader: Any, task: Task, accelerator: Any,
    vote: int = 0, seed: int = 0, progress: bool = False, desc: str = "eval",
) -> dict[str, np.ndarray]:
    """Predictions and targets of every sample of ``loader`` (gathered across processes).

    ``vote > 0``: the logits are the mean over ``vote`` passes on randomly scaled copies of the
    clouds (the field's test-time voting), drawn from a generator seeded with ``seed``.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    gathered: dict[str, list[np.ndarray]] = defaultdict(list)
    bar = tqdm(loader, desc=desc, leave=False, disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    for batch in bar:
        with accelerator.autocast():
            if vote > 0:
                logits = torch.stack(
                    [task.forward(model, batch, vote_scale(batch["points"], generator)).float() for _ in range(vote)]
                ).mean(0)
            else:
                logits = task.forward(model, batch)
        outputs = accelerator.gather_for_metrics(task.outputs(logits, batch))
        for k, v in outputs.items():
            gathered[k].append(v.cpu().numpy())
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in gathered.items()}


def write_report(summary: dict[str, Any], task: Task, out_dir: str | os.PathLike, title: str,
                 model: nn.Module, dataset: Any) -> list[Path]:
    """``metrics.json`` in ``out_dir`` and the task's figures (confusion matrix, part renders)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in summary.items() if not isinstance(v, np.ndarray)}  # not the confusion matrix
    (out_dir / "metrics.json").write_text(json.dumps(public, indent=2) + "\n")
    return [out_dir / "metrics.json", *task.write_figures(summary, out_dir, title, model, dataset)]


@dataclass
class Evaluation:
    """One evaluation of trained weights on the test split, and what it was run with."""

    cfg: Any
    task: Task
    data: Any
    model: nn.Module
    accelerator: Any
    summary: dict[str, Any]
    written: list[Path]

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


def evaluate_weights(cfg: Any, weights: Path, out_dir: Path, title: str, vote: int = 0,
                     progress: bool = True) -> Evaluation:
    """Build the run's model, load ``weights``, score the test split (``vote`` test-time-voting passes)
    and write the report to ``out_dir`` (main process only)."""
    from appt.models.io import load_trained
    from appt.tasks import get_task
    from appt.training.builders import build_data, build_model
    from appt.training.engine import make_accelerator
    from appt.training.kernels import kernel_signature

    accelerator = make_accelerator(cfg.train.precision)
    data = build_data(cfg, with_train=False)
    task = get_task(cfg.task, data.classes)
    model = build_model(cfg, data)
    load_trained(model, weights)  # refuses weights of another backbone / variant / shape
    model, loader = accelerator.prepare(model, _test_loader(data.test, cfg, accelerator))
    model = accelerator.unwrap_model(model)
    outputs = collect_outputs(model, loader, task, accelerator, vote=vote, seed=cfg.train.seed,
                              progress=progress, desc="test")
    summary = task.summarize(outputs)
    # kernels: what rounded these figures (AVX2 and AVX-512 sums round differently, so scores can differ)
    summary.update({"weights": str(weights), "vote": vote, "split": cfg.data.test_split,
                    "kernels": kernel_signature(accelerator.device)})
    written = write_report(summary, task, out_dir, title, model, data.test) if accelerator.is_main_process else []
    return Evaluation(cfg, task, data, model, accelerator, summary, written)


PROGRESS_FILE = "robustness_progress.jsonl"


def evaluate_corruptions(ev: Evaluation, specs: Sequence[tuple[str, int]], source: str, out_dir: Path,
                         progress: bool = True) -> tuple[dict[str, Any], list[Path]]:
    """The task's main figure on every corrupted copy (``specs``: (kind, level)) of the test split,
    seeded by ``train.seed``; the robustness report is written to ``out_dir`` (main process only).

    Resumable: each finished (kind, level) is appended to ``out_dir/robustness_progress.jsonl`` with a
    fingerprint of what was evaluated (see ``_sweep_key``); an interrupted sweep run again into the same
    folder skips the passes already done for the same fingerprint (a full sweep is 35 test passes). The
    file is removed once the report is written.
    """
    from appt.evaluation.robustness import (
        CorruptedDataset,
        robustness_summary,
        write_robustness_report,
    )

    cfg, table = ev.cfg, {}
    log = Path(out_dir) / PROGRESS_FILE
    key = _sweep_key(ev)
    done = _read_progress(log, key)
    if done and ev.is_main:
        print(f"resuming: {sum((k, lv) in done for k, lv in specs)} of {len(specs)} corrupted passes already "
              f"done ({log})")
    for kind, level in specs:
        if (kind, level) in done:
            table.setdefault(kind, {})[level] = done[(kind, level)]
            continue
        dataset = CorruptedDataset(ev.data.test, kind, level, seed=cfg.train.seed)
        loader = ev.accelerator.prepare(_test_loader(dataset, cfg, ev.accelerator))
        outputs = collect_outputs(ev.model, loader, ev.task, ev.accelerator, progress=progress, desc=f"{kind}:{level}")
        table.setdefault(kind, {})[level] = score = float(ev.task.summarize(outputs)["main"])
        if ev.is_main:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(json.dumps({**key, "kind": kind, "level": level, "score": score}) + "\n")
    result = {"weights": source, "seed": cfg.train.seed, "kernels": ev.summary["kernels"], "table": table,
              "summary": robustness_summary(float(ev.summary["main"]), table)}
    written = write_robustness_report(result, out_dir, ev.task.metric_name) if ev.is_main else []
    if ev.is_main:
        log.unlink(missing_ok=True)
    return result, written


def _sweep_key(ev: Evaluation) -> dict[str, Any]:
    """What a saved pass must match to be reused: the weights' bytes, the corruption seed, the data
    settings, the clean score just measured (it moves if the model's code or the data changed) and the
    source of the corruptions themselves (which the clean score cannot see)."""
    import hashlib

    import appt.data.corruptions
    import appt.evaluation.robustness

    weights = Path(ev.summary["weights"])  # a weights file, or a weights folder (all its files)
    digest = hashlib.sha256()
    for f in [weights] if weights.is_file() else sorted(p for p in weights.iterdir() if p.is_file()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    code = hashlib.sha256(b"".join(Path(m.__file__).read_bytes()
                                   for m in (appt.data.corruptions, appt.evaluation.robustness)))
    return {"weights_sha256": digest.hexdigest(), "seed": ev.cfg.train.seed, "clean": float(ev.summary["main"]),
            "data": json.loads(json.dumps(asdict(ev.cfg.data), default=str)), "corruption_code_sha256": code.hexdigest()}


def _read_progress(log: Path, key: dict[str, Any]) -> dict[tuple[str, int], float]:
    """The (kind, level) -> score lines of ``log`` made with ``key`` (others, and a line cut short, ignored)."""
    done: dict[tuple[str, int], float] = {}
    if not log.is_file():
        return done
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if all(entry.get(k) == v for k, v in key.items()):
            done[(entry["kind"], int(entry["level"]))] = float(entry["score"])
    return done


def _test_loader(dataset: Any, cfg: Any, accelerator: Any) -> Any:
    from appt.training.loaders import make_loader, resolve_workers

    return make_loader(dataset, cfg.data.eval_batch, cfg.train.seed, False,
                       resolve_workers(cfg.data.num_workers, accelerator.device))
