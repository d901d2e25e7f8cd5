"""The training loop, on Hugging Face Accelerate (one CPU/GPU, or ``accelerate launch`` / torchrun).

Resuming is exact on one device because every source of randomness is a function of the step:
the data order of ``(seed, epoch)`` (:mod:`appt.training.loaders`), the augmentation of
``(seed, epoch, index)`` (the datasets), and torch's global RNG — used by dropout — reseeded from
``(seed, process, step)`` before every step. The resumable checkpoint then only needs the weights,
optimizer, scheduler, and the position in the epoch.

Why one file of over 300 lines: the loop and the code that saves and restores its state
(``_save_resume`` / ``_load_resume``) must change together for resuming to stay exact, so they
are read side by side; the pieces without loop state live beside it (``builders``, ``loaders``,
``checkpoint``, ``evaluate``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from appt.data.warm import warm_cache
from appt.errors import CheckpointError, ConfigError
from appt.models.io import load_trained, trained_state_dict
from appt.models.summary import count_parameters, format_parameters
from appt.tasks import Task, get_task
from appt.training.builders import build_data, build_model, build_optimizer, build_scheduler
from appt.training.checkpoint import (
    data_info,
    load_trained_state,
    load_training_state,
    publish_model_folder,
    remove_stale_temps,
    save_training_state,
)
from appt.training.config import RunConfig, save_config
from appt.training.evaluate import collect_outputs
from appt.training.kernels import describe_change, kernel_signature
from appt.training.loaders import make_loader, resolve_workers
from appt.training.precision import apply_memory_settings
from appt.evaluation.metrics import MetricsLog

RESUME_FILE = "resume.pt"


def make_accelerator(precision: str) -> Accelerator:
    """The Accelerate runtime; on a machine without CUDA, processes started by ``accelerate launch
    --multi_gpu`` / torchrun join one CPU (gloo) group instead of each training alone."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(mixed_precision=precision, cpu=distributed and not torch.cuda.is_available())


def step_seed(seed: int, process: int, step: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, process, step)``."""
    return int(np.random.SeedSequence([seed, process, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def new_run_dir(cfg: RunConfig, accelerator: Accelerator) -> Path:
    """``cfg.run_dir``, or ``runs/<name>-<time>``, agreed by all processes; refuses a used folder."""
    name = [cfg.run_dir or str(Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")]
    broadcast_object_list(name)
    run_dir = Path(name[0]).absolute()
    if (run_dir / "checkpoints").exists() or (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"{run_dir}: already holds a run; continue it with --resume {run_dir} or set another run_dir")
    return run_dir


@dataclass
class Progress:
    """Where the run stands; saved in the resumable checkpoint."""

    epoch: int = 0  # the epoch in progress
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps done in total
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss*n, correct, n of this epoch
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": -1, "main": -1.0})
    last_eval: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Builds everything from a config and runs :meth:`fit`. ``resume=True`` continues ``cfg.run_dir``."""

    def __init__(self, cfg: RunConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.progress_bars = cfg, progress
        t = cfg.train
        self.accelerator = acc = make_accelerator(t.precision)
        if t.deterministic or (t.deterministic is None and acc.device.type == "cpu"):
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it, before CUDA starts
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.run_dir = Path(cfg.run_dir) if resume else new_run_dir(cfg, acc)
        cfg.run_dir = str(self.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.data = build_data(cfg)
        model = build_model(cfg, self.data)  # seeds itself: its weights do not depend on the warm-up below
        workers = resolve_workers(cfg.data.num_workers, acc.device)
        # The first use of a dataset: prepare and cache its clouds (each process a share), with a
        # progress bar; a cloud needs at least the first stage's neighbours.
        warm_cache([self.data.train, self.data.eval, self.data.test], workers, progress,
                   min_points=model.config.neighbors[0], shard=(acc.process_index, acc.num_processes))
        acc.wait_for_everyone()
        self.task = get_task(cfg.task, self.data.classes)
        self.task.prepare_training(cfg.train, self.data.train, acc.device)
        apply_memory_settings(model, t.activation_checkpointing, t.frozen_dtype, t.precision, acc.device.type)
        self.trainable, self.total = count_parameters(model)
        self.bs = cfg.data.eval_batch
        train_loader = make_loader(self.data.train, cfg.data.batch_size, t.seed, True, workers)
        eval_loader = make_loader(self.data.eval, self.bs, t.seed, False, workers)
        optimizer = build_optimizer(model, cfg)
        self.model, self.optimizer, self.train_loader, self.eval_loader = acc.prepare(
            model, optimizer, train_loader, eval_loader
        )
        # Not prepared: Accelerate would step it once per process; ours counts optimizer steps.
        self.scheduler = build_scheduler(optimizer, cfg, len(self.train_loader))
        self.state = Progress()
        # The kernels of each session of this run, in order (one entry: the same throughout).
        self.kernels: list[dict[str, Any]] = [kernel_signature(acc.device)]
        self.kernel_change: str | None = None
        if resume:
            self._load_resume()
        if acc.is_main_process:  # on resume: the config this session runs with (--set applied)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        acc.wait_for_everyone()
        self.log = MetricsLog(self.run_dir, enabled=acc.is_main_process)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------------------------------
    # checkpoints

    def data_info(self) -> dict[str, Any]:
        """What ``appt predict`` needs besides the weights: class names and the test-time pipeline."""
        return data_info(self.cfg, self.data, self.data.in_channels)

    def _publish(self, name: str) -> None:
        publish_model_folder(self.unwrapped, self.ckpt_dir / name, self.data_info())

    def _save_resume(self) -> None:
        acc = self.accelerator
        sums = acc.reduce(torch.tensor(self.state.sums, dtype=torch.float64, device=acc.device), "sum")
        if acc.is_main_process:
            s = self.state
            state = {
                "model": trained_state_dict(self.unwrapped),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "progress": {"epoch": s.epoch, "batch": s.batch, "step": s.step, "sums": sums.cpu().tolist(),
                             "best": s.best, "last_eval": s.last_eval},
                "num_processes": acc.num_processes,
                "seed": self.cfg.train.seed,
                "kernels": self.kernels,
            }
            save_training_state(self.ckpt_dir / RESUME_FILE, state)
        acc.wait_for_everyone()

    def _load_resume(self) -> None:
        acc = self.accelerator
        path = self.ckpt_dir / RESUME_FILE
        if acc.is_main_process:
            remove_stale_temps(self.ckpt_dir)
        state = load_training_state(path)
        p = state["progress"]
        if p["batch"] and state["num_processes"] != acc.num_processes:
            raise CheckpointError(
                f"{path}: stopped mid-epoch with {state['num_processes']} process(es); resume with the same number"
            )
        load_trained_state(self.unwrapped, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if acc.scaler is not None and state.get("scaler"):
            acc.scaler.load_state_dict(state["scaler"])
        sums = p["sums"] if acc.is_main_process else [0.0, 0.0, 0.0]
        self.state = Progress(p["epoch"], p["batch"], p["step"], list(sums), p["best"], p["last_eval"])
        seen = state.get("kernels") or []  # absent in checkpoints older than this record
        if seen:
            self.kernel_change = describe_change(seen[-1], self.kernels[0])
            self.kernels = seen + self.kernels if self.kernel_change else seen

    # ------------------------------------------------------------------------------------------
    # loop

    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs`` (or ``train.stop_after_steps``); returns the run's summary."""
        cfg, acc, s = self.cfg, self.accelerator, self.state
        if acc.is_main_process:
            print(f"run folder: {self.run_dir}")
            print(f"device: {acc.device} x {acc.num_processes} process(es), precision {cfg.train.precision}")
            print(format_parameters(self.trainable, self.total))
            if s.step:
                print(f"resuming at epoch {s.epoch + 1}, batch {s.batch}, step {s.step}")
        if s.step:
            self.log.log("resume", s.step, epoch=s.epoch + 1, batch=s.batch, kernels=self.kernels[-1])
        if self.kernel_change and acc.is_main_process:
            print(self.kernel_change)
        start = time.time()
        try:
            while s.epoch < cfg.train.epochs:
                if not self._train_epoch():
                    self.log.log("stopped", s.step, epoch=s.epoch + 1)
                    return {"stopped_at_step": s.step, "run_dir": str(self.run_dir)}
                self._end_epoch()
            return self._finish(time.time() - start)
        except KeyboardInterrupt:
            if acc.is_main_process:
                print(f"\ninterrupted; continue from the last checkpoint with: appt train --resume {self.run_dir}")
            raise
        finally:
            self.log.close()

    def _train_epoch(self) -> bool:
        """Run the rest of epoch ``state.epoch``; False if stopped by ``train.stop_after_steps``."""
        acc, s, t = self.accelerator, self.state, self.cfg.train
        loader = self.train_loader
        loader.set_epoch(s.epoch)
        self.data.train.set_epoch(s.epoch)
        batches = acc.skip_first_batches(loader, s.batch) if s.batch else loader
        self.model.train()
        bar = tqdm(total=len(loader), initial=s.batch, desc=f"epoch {s.epoch + 1}/{t.epochs}",
                   disable=not (self.progress_bars and acc.is_main_process), dynamic_ncols=True)
        tic, seen = time.time(), 0
        # The epoch's running sums stay on the device: reading a loss on the host every step would
        # make the CPU wait for the GPU. They are read every ``log_every`` steps (bar, metrics log)
        # and at the epoch's end / a resumable checkpoint.
        sums = torch.tensor(s.sums[:2], dtype=torch.float64, device=acc.device)  # loss * n, correct
        count = s.sums[2]  # n, known on the host
        for batch in batches:
            torch.manual_seed(step_seed(t.seed, acc.process_index, s.step))
            with acc.autocast():
                logits = self.task.forward(self.model, batch)
                loss = self.task.loss(logits, batch, t.label_smoothing)
            acc.backward(loss)
            if t.grad_clip:
                acc.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            correct, n = self.task.correct(logits.detach(), batch)
            sums += torch.stack((loss.detach().double() * n, correct.double()))
            count += n
            s.batch += 1
            s.step += 1
            seen += len(batch["points"]) * acc.num_processes
            bar.update(1)
            log_now = bool(t.log_every) and s.step % t.log_every == 0
            checkpoint_now = bool(t.checkpoint_every) and s.step % t.checkpoint_every == 0
            if log_now or checkpoint_now:
                s.sums = [*sums.tolist(), count]  # the one host sync
            if log_now:
                speed = seen / max(time.time() - tic, 1e-9)
                bar.set_postfix(loss=f"{s.sums[0] / s.sums[2]:.4f}", acc=f"{100 * s.sums[1] / s.sums[2]:.1f}%",
                                speed=f"{speed:.1f}/s")
                self.log.log("train_step", s.step, epoch=s.epoch + 1, loss=float(loss.detach()),
                             lr=self.scheduler.get_last_lr()[0], samples_per_s=speed)
            if checkpoint_now:
                self._save_resume()
            if t.stop_after_steps is not None and s.step >= t.stop_after_steps:
                s.sums = [*sums.tolist(), count]
                bar.close()
                if acc.is_main_process:
                    print(f"stopped after step {s.step} (train.stop_after_steps); "
                          f"continue with: appt train --resume {self.run_dir}")
                return False
        s.sums = [*sums.tolist(), count]
        bar.close()
        return True

    def evaluate(self, loader: Any = None, desc: str = "eval") -> dict[str, Any]:
        outputs = collect_outputs(self.unwrapped, loader or self.eval_loader, self.task, self.accelerator,
                                  progress=self.progress_bars, desc=desc)
        return self.task.summarize(outputs)

    def _end_epoch(self) -> None:
        cfg, acc, s = self.cfg, self.accelerator, self.state
        sums = acc.reduce(torch.tensor(s.sums, dtype=torch.float64, device=acc.device), "sum").tolist()
        train = {"loss": sums[0] / max(sums[2], 1), "acc": sums[1] / max(sums[2], 1)}
        self.log.log("train_epoch", s.step, epoch=s.epoch + 1, **train)
        last = s.epoch + 1 == cfg.train.epochs
        record = ""
        if (s.epoch + 1) % cfg.train.eval_every == 0 or last:
            result = self.evaluate()
            figures = scalars(result)
            s.last_eval = {"epoch": s.epoch + 1, **figures}
            split = "test" if self.data.eval_is_test else "val"
            self.log.log(f"eval_{split}", s.step, epoch=s.epoch + 1, **figures)
            record = f"; {split}: {self.task.format_figures(result)}"
            if result["main"] > s.best["main"]:
                s.best = {"epoch": s.epoch + 1, **figures}
                if acc.is_main_process:
                    self._publish("best")
        if acc.is_main_process:
            self._publish("last")
            tqdm.write(f"epoch {s.epoch + 1}: train loss {train['loss']:.4f}, acc {100 * train['acc']:.2f} %{record}")
        s.epoch, s.batch, s.sums = s.epoch + 1, 0, [0.0, 0.0, 0.0]
        self._save_resume()

    def _finish(self, seconds: float) -> dict[str, Any]:
        """Report the last-epoch and best-epoch figures (on the test set; with a validation split,
        the best epoch is chosen on validation and its weights are then tested)."""
        acc, s = self.accelerator, self.state
        summary: dict[str, Any] = {
            "run_dir": str(self.run_dir), "trainable_params": self.trainable, "total_params": self.total,
            "epochs": self.cfg.train.epochs, "steps": s.step, "train_seconds_this_session": round(seconds, 1),
            "last_epoch": s.last_eval, "best_epoch": s.best, "kernels": self.kernels,
        }
        if not self.data.eval_is_test:
            test_loader = acc.prepare(make_loader(self.data.test, self.bs, self.cfg.train.seed, False))
            last_test = self.evaluate(test_loader, desc="test (last)")
            load_trained(self.unwrapped, self.ckpt_dir / "best")
            best_test = self.evaluate(test_loader, desc="test (best)")
            summary["test_last"] = scalars(last_test)
            summary["test_at_best_val"] = scalars(best_test)
        self.log.log("summary", s.step, **{k: v for k, v in summary.items() if k != "run_dir"})
        if acc.is_main_process:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(format_summary(summary, self.task))
        acc.wait_for_everyone()
        return summary


def scalars(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of an evaluation result (no confusion matrix, no per-class tables)."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def format_summary(summary: dict[str, Any], task: Task) -> str:
    """The end-of-run lines: parameters, last-epoch and best-epoch figures (the task's best figure)."""
    last, best = summary["last_epoch"], summary["best_epoch"]
    key, label = task.best_key, task.best_label
    lines = [format_parameters(summary["trainable_params"], summary["total_params"])]
    if "test_last" in summary:
        lines.append(f"{label} (last epoch {last['epoch']}): {100 * summary['test_last'][key]:.2f} %")
        lines.append(f"{label} (best validation epoch {best['epoch']}): {100 * summary['test_at_best_val'][key]:.2f} %")
    else:
        lines.append(f"{label} (last epoch {last['epoch']}): {100 * last[key]:.2f} %")
        lines.append(f"{label} (best epoch {best['epoch']}): {100 * best[key]:.2f} %")
    lines.append(f"run folder: {summary['run_dir']}")
    return "\n".join(lines)
