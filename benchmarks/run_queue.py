"""A resumable queue of training runs (and their robustness evaluations), for issue 14's regimes.

    python benchmarks/run_queue.py status            # done / running / partial / failed / pending
    python benchmarks/run_queue.py run [--hours H]   # work through the plan (one worker per state folder)
    python benchmarks/run_queue.py stop              # SIGTERM the worker; its run resumes next time
    python benchmarks/run_queue.py collect           # -> benchmarks/results/regimes_<date>.json
    python benchmarks/run_queue.py plan-regimes      # rewrite the committed plan (benchmarks/plans/regimes.yaml)
    python benchmarks/run_queue.py restore FILE      # a new machine: finished jobs back from a collect file

Not named ``queue.py``: ``python benchmarks/queue.py`` would put ``benchmarks/`` first on
``sys.path`` and shadow the standard library's ``queue`` module for everything imported after it.

The plan (YAML) lists jobs in the order they run. A ``train`` job is ``appt train`` on a config
with overrides (its ``variant`` and ``seed`` become ``model.variant`` / ``train.seed``), in its own
run folder ``STATE/runs/<id>``; a ``robustness`` job is ``appt eval --run <that folder>
--checkpoint last --corrupt SPEC`` for each SPEC of its ``corrupt`` list, one process each (default
``[all]``: every kind and level in one process, so the model loads and the clean test pass runs once;
per-kind processes cost 6 more of each for 35 corrupted passes). Every job runs
in a child process through the public ``appt`` commands of the installed (editable) source tree,
so each run uses the code as it is when it starts or resumes, and records that code: the commit,
whether ``src/``, ``configs/`` or ``pyproject.toml`` differ from it (``dirty``) and a SHA-256 of
that difference, per session.

Resuming: a run cut short (worker killed, machine rebooted, ``stop``) continues from its last
resumable checkpoint (``checkpoints/resume.pt``, written every epoch and every
``train.checkpoint_every`` steps) with ``appt train --resume``, which is exact (see
``appt.training.engine``). A robustness job redoes only the specs it has not written, and within
an unfinished one ``appt eval --corrupt`` skips the corrupted passes it had finished.
A finished job writes ``STATE/results/<id>.json`` and is skipped from then on. One worker per
state folder: ``STATE/worker.lock`` is held with ``flock`` while ``run`` works (released by the
kernel when the worker dies, so it is never stale); ``STATE/worker.json`` names its pid.

Two workers (one per core) share one plan: the second works from its own state folder whose
``runs``, ``logs``, ``sessions`` and ``results`` link to the first's. Each takes the first job in
plan order that no one holds: it claims a job with ``flock`` on ``runs/.claims/<id>.lock`` for as
long as it runs it (also released by the kernel), so no job runs twice and neither core idles while
the other has a share left. A robustness job whose run the other worker is training waits for it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from appt.training.kernels import AVX2_KERNELS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, kernel_isa

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "benchmarks" / "plans" / "regimes.yaml"
STATE = ROOT / "benchmarks" / "queue_state"
RESULTS = ROOT / "benchmarks" / "results"
CONTRASTS = (("appt", "encoder_only"), ("appt", "random_backbone"))
# A regime that changes one thing of another (same data, seeds and variants): each variant is also
# compared across the two, seed by seed (does the change help that variant?).
ACROSS = {"minilm_fewshot_10_paper_readout": "minilm_fewshot_10", "minilm_fewshot_10_120ep": "minilm_fewshot_10",
          "mpnet_fewshot_10_120ep": "mpnet_fewshot_10"}
PROVENANCE_PATHS = ("src", "configs", "pyproject.toml")
PASSES_DONE = "robustness_progress.jsonl"  # appt eval --corrupt's record of an unfinished sweep (resumed on rerun)
BACKOFF_S = (120, 300, 600)  # waits before the 2nd, 3rd, 4th attempt of a failing job
POLL_S = 60.0  # how often a worker with nothing to start looks again while the other one trains a run it waits for

# Two-sided 95 % critical values of Student's t, degrees of freedom 1..30 (used without scipy).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def say(msg: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# statistics


def t_critical(df: int, use_scipy: bool = True) -> float:
    """Two-sided 95 % critical value of Student's t with ``df`` degrees of freedom."""
    if use_scipy:
        try:
            from scipy import stats

            return float(stats.t.ppf(0.975, df))
        except ImportError:
            pass
    if 1 <= df <= len(T975):
        return T975[df - 1]
    if df > len(T975):
        return 1.960 + 2.4 / df  # within 0.002 of the exact value above 30
    raise ValueError(f"t_critical: df must be >= 1, got {df}")


def paired_interval(diffs: list[float], use_scipy: bool = True) -> dict[str, Any]:
    """Mean of paired differences with its 95 % t-interval (``None`` bounds for fewer than 2 pairs)."""
    n = len(diffs)
    out: dict[str, Any] = {"n": n, "diffs": list(diffs), "mean": statistics.mean(diffs) if n else None,
                           "sd": None, "se": None, "t": None, "ci95": None}
    if n >= 2:
        sd = statistics.stdev(diffs)
        se = sd / math.sqrt(n)
        t = t_critical(n - 1, use_scipy)
        out.update(sd=sd, se=se, t=t, ci95=[out["mean"] - t * se, out["mean"] + t * se])
    return out


# ----------------------------------------------------------------------------------------------
# the plan


def load_plan(path: str | os.PathLike) -> dict[str, Any]:
    """Read a plan; fill in each job's defaults; refuse duplicate ids and dangling robustness jobs."""
    plan = yaml.safe_load(Path(path).read_text())
    defaults = plan.get("defaults", {}) or {}
    jobs: dict[str, dict[str, Any]] = {}  # by id, in plan order
    for raw in plan["jobs"]:
        job = {"kind": "train", **raw}
        if job["id"] in jobs or not re.fullmatch(r"[A-Za-z0-9_.\-]+", job["id"]):
            raise SystemExit(f"{path}: job id {job['id']!r} is repeated or not a plain file name")
        if job["kind"] == "train":
            job["overrides"] = [*defaults.get("overrides", []), *job.get("overrides", []),
                                f"model.variant={job['variant']}", f"train.seed={job['seed']}"]
        elif job["kind"] == "robustness":
            train_job = jobs.get(job["of"])
            if train_job is None or train_job["kind"] != "train":
                raise SystemExit(f"{path}: robustness job {job['id']} names {job['of']!r}, not an earlier train job")
            job.setdefault("corrupt", ["all"])  # one process: one model load and one clean pass per job
            job["train_job"] = train_job  # trained again when its run folder is gone (see `restore`)
        else:
            raise SystemExit(f"{path}: job {job['id']}: unknown kind {job['kind']!r}")
        jobs[job["id"]] = job
    plan["jobs"] = list(jobs.values())
    return plan


def regimes_plan() -> dict[str, Any]:
    """Issue 14's plan, most decisive runs first (see the header this writes into the YAML)."""
    minilm, mpnet = "configs/modelnet10_minilm.yaml", "configs/modelnet10_mpnet.yaml"
    paper_readout = "configs/modelnet10_minilm_paper_readout.yaml"
    variants = ("appt", "encoder_only", "random_backbone")
    jobs: list[dict[str, Any]] = []

    def add(regime: str, config: str, seed: int, overrides: list[str], tag: str, robust: bool = False) -> None:
        """The three variants of one seed; with ``robust``, each one's robustness job right after it:
        a run folder then has to outlive one job, not many (a new machine loses the folders)."""
        for v in variants:
            jobs.append({"id": f"{tag}-s{seed}-{v}", "regime": regime, "config": config, "variant": v,
                         "seed": seed, "overrides": overrides})
            if robust:
                robustness_of(jobs[-1:])

    fewshot = {  # shapes per class: (epochs, eval_every); 10 classes, batch 32, the partial batch dropped
        10: (60, 20),   # 100 shapes: 3 steps / epoch -> 180 steps
        5: (120, 40),   # 50 shapes: 1 step / epoch -> 120 steps
        20: (40, 20),   # 200 shapes: 6 steps / epoch -> 240 steps
    }

    def fs(shots: int) -> list[str]:
        epochs, every = fewshot[shots]
        return [f"data.subset={shots}/class", f"train.epochs={epochs}", f"train.eval_every={every}"]

    def robustness_of(trained: list[dict[str, Any]]) -> None:  # one robustness job for each of these train jobs
        jobs.extend([{"id": f"robust-{j['id']}", "kind": "robustness", "of": j["id"]} for j in trained])

    for seed in range(5):  # 1. the decisive regime: interleaved by seed, so pairs complete early
        add("minilm_fewshot_10", minilm, seed, fs(10), "minilm-k10")
    k10 = jobs[:]
    for seed in range(5):  # 1b. the same with the authors' readout: the head sees only the backbone's output
        add("minilm_fewshot_10_paper_readout", paper_readout, seed, fs(10), "minilm-k10pr")
    k10pr = jobs[len(k10):]
    # 1c. robustness of the first 15 runs next (where clean accuracy ties, the frozen backbone may
    # still buy robustness); seeds 3-4 after the data-size regime since 2026-12-02, when a new
    # machine lost their run folders (they train again first) and that regime had no result yet
    robustness_of(k10[:9])
    # 2. data size at equal optimizer steps: 3,991 training shapes, batch 32, partial batch dropped:
    # 10 % = 399 shapes = 12 steps / epoch, 30 % = 1,197 = 37, 100 % = 124. 31 x 12 = 372,
    # 10 x 37 = 370, 3 x 124 = 372 steps; warm-up 124 steps everywhere (1 epoch of the full split).
    # Each run's robustness job follows it (issue 14's done-when needs these, not 5 and 20 per class).
    datasize = {"f010": (0.1, 31, 10, 124 / 12), "f030": (0.3, 10, 3, 124 / 37), "f100": (1.0, 3, 1, 1.0)}
    for seed in range(3):
        for tag, (fraction, epochs, every, warmup) in datasize.items():
            add("minilm_datasize_372steps", minilm, seed,
                [f"data.subset={fraction}", f"train.epochs={epochs}", f"train.eval_every={every}",
                 f"train.warmup_epochs={warmup:.4f}"], f"minilm-{tag}", robust=True)
    robustness_of(k10[9:])
    # 3. the paper-width backbone: 10 per class with each run's robustness (issue 14's done-when needs
    # both; the runs were trained by 2026-12-02, their robustness jobs train them again first)
    for seed in range(5):
        add("mpnet_fewshot_10", mpnet, seed, fs(10), "mpnet-k10", robust=True)
    # 4. the 10-per-class schedule doubled (120 epochs, same seeds 0-2): at 60 epochs MiniLM's three
    # variants still gained 1.4-2.3 points of test OA from epoch 40 to 60, and MPNet's appt more than
    # its encoder alone (2.1 against 0.5), so a longer schedule is where a slower-learning backbone
    # might catch up
    long10 = ["data.subset=10/class", "train.epochs=120", "train.eval_every=40"]
    for seed in range(3):
        add("minilm_fewshot_10_120ep", minilm, seed, long10, "minilm-k10e120", robust=True)
    robustness_of(k10pr)  # 5. then the robustness of the authors' readout (done-when needs those above, not these)
    for seed in range(3):  # 6. 5 and 20 shapes per class
        add("minilm_fewshot_5", minilm, seed, fs(5), "minilm-k5", robust=True)
        add("minilm_fewshot_20", minilm, seed, fs(20), "minilm-k20", robust=True)
    for seed in range(3):  # 7. MPNet's doubled schedule with its robustness
        add("mpnet_fewshot_10_120ep", mpnet, seed, long10, "mpnet-k10e120", robust=True)
    return {"name": "regimes", "issue": 14,
            "defaults": {"overrides": ["train.checkpoint_every=20", "train.log_every=10"]}, "jobs": jobs}


PLAN_HEADER = """\
# Issue 14's regimes, for benchmarks/run_queue.py (regenerate: python benchmarks/run_queue.py plan-regimes).
# Real ModelNet10 (../shared/data), 1,024 points, test on the whole official test split (908 shapes),
# appt / encoder_only / random_backbone of the same config, paired by seed (train.seed: data draw,
# initialisation, augmentation; random_backbone's weights come from the backbone spec, the same for all seeds).
# Few-shot: data.subset=K/class draws exactly K seeded shapes of every class (tags k5 / k10 / k20).
# Order: MiniLM 10 per class x 5 seeds first, the same with the authors' embedding and readout options
# (configs/modelnet10_minilm_paper_readout.yaml, tag k10pr; added 2026-12-01 after the first 15 runs),
# the robustness pass (appt eval --corrupt all on a run's last checkpoint) of the first 9 runs, the
# data-size regime at equal optimizer steps (3 seeds), the robustness pass of 10 per class seeds 3-4,
# MPNet 10 per class (5 seeds; trained by 2026-12-02) with its robustness passes, 10 per class with the
# schedule doubled to 120 epochs (tag k10e120, 3 seeds; added 2026-12-02: at 60 epochs the test OA was
# still rising), the robustness pass of the k10pr runs, 5 and 20 per class (3 seeds), MPNet's
# 120-epoch schedule (3 seeds). From the data-size regime on, each run's robustness pass comes right
# after it, so that a run folder has to outlive one job only (a new machine on 2026-12-02 lost the
# folders; `run_queue.py restore` brought the finished results back, and a robustness job whose run
# folder is gone trains that run again first). The order changed three times on 2026-12-02 and once
# on 2026-12-07, each time so that what issue 14's done-when needs comes first. Two workers share the
# plan in this order, each claiming the next job no one holds (see run_queue.py).
# The final figures are the last epoch's; best-epoch figures look at the test split and are recorded
# for completeness only.
"""


def write_plan(path: Path, plan: dict[str, Any]) -> None:
    lines = [PLAN_HEADER, f"name: {plan['name']}", f"issue: {plan['issue']}",
             "defaults:", f"  overrides: {json.dumps(plan['defaults']['overrides'])}", "jobs:"]
    for job in plan["jobs"]:
        lines.append("  - " + json.dumps(job))  # JSON is YAML: one job per line
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# state


class State:
    """The queue's folder: ``runs/<id>`` (run folders), ``logs/<id>.log``, ``sessions/<id>.json``
    (one entry per process started for the job), ``results/<id>.json`` (finished jobs)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).absolute()
        for sub in ("runs", "logs", "sessions", "results"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def run_dir(self, job_id: str) -> Path:
        return self.root / "runs" / job_id

    def result_path(self, job_id: str) -> Path:
        return self.root / "results" / f"{job_id}.json"

    def result(self, job_id: str) -> dict[str, Any] | None:
        p = self.result_path(job_id)
        return json.loads(p.read_text()) if p.is_file() else None

    def sessions(self, job_id: str) -> list[dict[str, Any]]:
        p = self.root / "sessions" / f"{job_id}.json"
        return json.loads(p.read_text()) if p.is_file() else []

    def add_session(self, job_id: str, session: dict[str, Any]) -> None:
        sessions = [s for s in self.sessions(job_id) if s.get("started") != session["started"]] + [session]
        write_json(self.root / "sessions" / f"{job_id}.json", sessions)

    def failures(self, job_id: str) -> int:
        return sum(1 for s in self.sessions(job_id) if s.get("rc") not in (0, None) and not s.get("interrupted"))

    def worker(self) -> dict[str, Any] | None:
        """The live worker's record, or None when no worker holds the lock."""
        lock = self.root / "worker.lock"
        if not lock.exists():
            return None
        with open(lock, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = self.root / "worker.json"
                return json.loads(info.read_text()) if info.is_file() else {"pid": None}
            fcntl.flock(f, fcntl.LOCK_UN)
        return None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        f = open(self.root / "worker.lock", "a")  # noqa: SIM115 - held (locked) until the worker ends
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            other = self.worker() or {}
            raise SystemExit(f"{self.root}: another worker (pid {other.get('pid')}) is working on this state; "
                             "`run_queue.py stop` ends it") from None
        try:
            write_json(self.root / "worker.json", {"pid": os.getpid(), "started": now(), "current": None})
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    def claim_path(self, job_id: str) -> Path:
        return self.root / "runs" / ".claims" / f"{job_id}.lock"

    @contextlib.contextmanager
    def claim(self, job_id: str) -> Iterator[bool]:
        """Hold ``job_id`` for this worker while the block runs; yields False (holding nothing) when
        another worker on the same ``runs`` folder holds it."""
        path = self.claim_path(job_id)
        path.parent.mkdir(exist_ok=True)
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def claimed(self, job_id: str) -> bool:
        """Does another worker hold ``job_id`` now?"""
        with self.claim(job_id) as mine:
            return not mine

    def set_current(self, job_id: str | None, child: int | None = None) -> None:
        info = json.loads((self.root / "worker.json").read_text())
        info.update(current=job_id, child_pid=child, since=now() if job_id else None)
        write_json(self.root / "worker.json", info)


def write_json(path: Path, payload: Any) -> None:
    """Atomic: a reader (``status``) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    p = run_dir / "metrics.jsonl"
    if not p.is_file():
        return []
    events = []
    for line in p.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
            events.append(json.loads(line))
    return events


def job_state(state: State, job: dict[str, Any], worker: dict[str, Any] | None, max_attempts: int) -> str:
    if state.result_path(job["id"]).is_file():
        return "done"
    if worker and worker.get("current") == job["id"]:
        return "running"
    if state.failures(job["id"]) >= max_attempts:
        return "failed"
    if job["kind"] == "robustness":
        if not state.result_path(job["of"]).is_file():
            return "waiting"
        run_dir = state.run_dir(job["of"])
        retraining = not (run_dir / "summary.json").is_file() and (run_dir / "checkpoints" / "resume.pt").is_file()
        started = retraining or any(
            (robustness_dir(run_dir, k) / name).is_file() for k in job["corrupt"] for name in ("robustness.json", PASSES_DONE))
        return "partial" if started else "pending"
    return "partial" if (state.run_dir(job["id"]) / "checkpoints" / "resume.pt").is_file() else "pending"


# ----------------------------------------------------------------------------------------------
# provenance


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), *args], capture_output=True,
                              text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def code_state() -> dict[str, Any]:
    """The commit and whether the code a run imports differs from it (read-only git commands)."""
    diff = git("diff", "HEAD", "--", *PROVENANCE_PATHS)
    untracked = git("ls-files", "--others", "--exclude-standard", "--", *PROVENANCE_PATHS)
    digest = hashlib.sha256(diff.encode())
    for name in sorted(untracked.split()):
        with contextlib.suppress(OSError):
            digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes())
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(diff.strip() or untracked.strip()),
            "diff_sha256": digest.hexdigest() if diff.strip() or untracked.strip() else None,
            "untracked": untracked.split()}


def machine() -> dict[str, Any]:
    return {"host": platform.node(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()), "nice": os.nice(0),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), **cpu_arithmetic()}


@functools.lru_cache(maxsize=1)
def cpu_arithmetic() -> dict[str, Any]:
    """The CPU, and the instruction set torch's kernels use in the children (their environment)."""
    return {"cpu_model": cpu_model(), "torch_cpu_capability": kernel_isa(child_env())}


# ----------------------------------------------------------------------------------------------
# running jobs


class Stop(Exception):
    """SIGTERM / SIGINT reached the worker."""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    # torch's CPU allocator asks for transparent huge pages for tensors of 2 MiB and more: the
    # embedding's (B, G, k, C) tensors then fault in 2 MiB at a time, not 4 KiB (fewer page faults,
    # less system time; the arithmetic, and so every figure, is the same)
    env.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    env.setdefault("APPT_DATA", str(ROOT.parent / "shared" / "data"))
    env["PYTHONUNBUFFERED"] = "1"
    # AVX2 kernels on every machine: a run trained again on an AVX-512 machine had drifted (2026-12-07,
    # MiniLM 30 % seed 0 `appt`); with AVX2_KERNELS it gave the recorded run's bits (docs/benchmarks.md 8).
    env.update(AVX2_KERNELS)
    return env



def _die_with_parent() -> None:
    """In the child: SIGTERM when the worker dies, so no orphan keeps writing a run folder."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_child(state: State, job_id: str, cmd: list[str], note: dict[str, Any]) -> dict[str, Any]:
    """Run ``cmd`` for ``job_id``, its output appended to the job's log; returns the session record."""
    session = {"started": now(), **note, "code": code_state(), "machine": machine(), "command": cmd}
    with open(state.root / "logs" / f"{job_id}.log", "a") as log:
        log.write(f"\n===== {session['started']} {' '.join(cmd)}\n")
        log.flush()
        tic = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509 - the worker has one thread
        state.set_current(job_id, proc.pid)
        state.add_session(job_id, session)
        try:
            rc = proc.wait()
        except Stop:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            session.update(ended=now(), seconds=round(time.time() - tic, 1), rc=proc.returncode, interrupted=True)
            state.add_session(job_id, session)
            raise
        finally:
            state.set_current(None)
    session.update(ended=now(), seconds=round(time.time() - tic, 1), rc=rc)
    state.add_session(job_id, session)
    return session


def appt_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "appt.cli.main", *args]


def train_in_run_folder(state: State, job: dict[str, Any], session_of: str) -> bool:
    """Start or resume ``appt train`` for a train job in its run folder (sessions recorded under
    ``session_of``); True once the run has finished (``summary.json``)."""
    run_dir = state.run_dir(job["id"])
    if (run_dir / "summary.json").is_file():
        return True
    if (run_dir / "checkpoints" / "resume.pt").is_file():
        cmd, note = appt_cmd("train", "--resume", str(run_dir), "--no-progress"), {"resumed": True}
    else:
        if run_dir.exists():  # killed before its first resumable checkpoint: nothing to keep
            shutil.rmtree(run_dir)
        sets = [a for o in [*job["overrides"], f"run_dir={run_dir}"] for a in ("--set", o)]
        cmd, note = appt_cmd("train", "--config", str(ROOT / job["config"]), *sets, "--no-progress"), {"resumed": False}
    if session_of != job["id"]:
        note["retrain"] = job["id"]
    session = run_child(state, session_of, cmd, note)
    return session["rc"] == 0 and (run_dir / "summary.json").is_file()


def run_train(state: State, job: dict[str, Any]) -> bool:
    """Start, resume or just record a train job; True when it has finished."""
    if not train_in_run_folder(state, job, job["id"]):
        return False
    write_json(state.result_path(job["id"]), train_result(state, job))
    return True


def last_train_epoch(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last epoch's training loss and accuracy (train mode, augmented, label-smoothed loss): does a
    variant fit its training shapes? With all fitting, a test-OA gap is one of generalisation."""
    epochs = [e for e in events if e.get("event") == "train_epoch"]
    return {k: epochs[-1][k] for k in ("epoch", "loss", "acc")} if epochs else None


def train_result(state: State, job: dict[str, Any]) -> dict[str, Any]:
    run_dir = state.run_dir(job["id"])
    summary = json.loads((run_dir / "summary.json").read_text())
    events = read_events(run_dir)
    # by epoch, the last one: a run killed between an evaluation and its checkpoint evaluates again
    evals = list({e["epoch"]: {k: e[k] for k in ("epoch", "step", "overall_acc", "mean_class_acc", "loss") if k in e}
                  for e in events if e.get("event") in ("eval_test", "eval_val")}.values())
    sessions = [s for s in state.sessions(job["id"])]
    codes = [s["code"] for s in sessions]
    return {
        "id": job["id"], "kind": "train", "regime": job["regime"], "config": job["config"], "variant": job["variant"],
        "seed": job["seed"], "overrides": job["overrides"], "run_dir": str(run_dir.relative_to(state.root)),
        "commit": codes[0]["commit"] if codes else None, "dirty": any(c["dirty"] for c in codes) if codes else None,
        "commits": sorted({c["commit"] for c in codes}), "resumed": sum(1 for s in sessions if s.get("resumed")),
        "trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
        "epochs": summary["epochs"], "steps": summary["steps"],
        "final": summary["last_epoch"], "best_epoch_on_test": summary["best_epoch"], "evals": evals,
        "train_last_epoch": last_train_epoch(events),
        "seconds": round(sum(s.get("seconds", 0.0) for s in sessions), 1),
        "finished": now(), "resolved_config": yaml.safe_load((run_dir / "config.yaml").read_text()),
        "sessions": sessions,
    }


def robustness_dir(run_dir: Path, spec: str) -> Path:
    return run_dir / "robustness" / spec.replace(":", "_")


def run_robustness(state: State, job: dict[str, Any]) -> bool:
    """``appt eval --corrupt SPEC`` on the run's last checkpoint, one process per spec; True when done."""
    run_dir = state.run_dir(job["of"])
    trained = state.result(job["of"]) or {}
    # a train job's result restored (`restore`) with its run folder lost with the machine: train it
    # again, same config and seed, before evaluating (whether it comes out the same is recorded below;
    # ``checkpoints/last`` alone is no sign of a finished run: it is written every epoch)
    if not train_in_run_folder(state, job["train_job"], job["id"]):
        return False
    for spec in job["corrupt"]:  # all, KIND (levels 1-5) or KIND:LEVEL
        out = robustness_dir(run_dir, spec)
        if (out / "robustness.json").is_file():
            continue
        cmd = appt_cmd("eval", "--run", str(run_dir), "--checkpoint", "last", "--corrupt", spec,
                       "--out", str(out), "--no-progress")
        session = run_child(state, job["id"], cmd, {"corrupt": spec})
        if session["rc"] != 0 or not (out / "robustness.json").is_file():
            return False
    table: dict[str, dict[int, float]] = {}
    clean = None
    for spec in job["corrupt"]:
        part = json.loads((robustness_dir(run_dir, spec) / "robustness.json").read_text())
        for kind, levels in part["table"].items():
            table.setdefault(kind, {}).update({int(level): float(v) for level, v in levels.items()})
        clean = part["summary"]["clean"]
    sessions = state.sessions(job["id"])
    retrained = [s for s in sessions if s.get("retrain")]
    write_json(state.result_path(job["id"]), {
        "id": job["id"], "kind": "robustness", "of": job["of"], "regime": trained.get("regime"),
        "variant": trained.get("variant"), "seed": trained.get("seed"), "checkpoint": "last",
        "table": table, "summary": merged_robustness_summary(float(clean), table),
        "commits": sorted({s["code"]["commit"] for s in sessions}), "dirty": any(s["code"]["dirty"] for s in sessions),
        "seconds": round(sum(s.get("seconds", 0.0) for s in sessions), 1), "finished": now(), "sessions": sessions,
        **({"retrained": retrain_check(run_dir, trained, retrained)} if retrained else {}),
    })
    return True


def retrain_check(run_dir: Path, trained: dict[str, Any], sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """Is the model trained again the one the restored result describes? Its last-epoch test OA beside
    the recorded one (equal to the last bit when the training is reproduced), and the time it took."""
    final = json.loads((run_dir / "summary.json").read_text())["last_epoch"]["overall_acc"]
    recorded = (trained.get("final") or {}).get("overall_acc")
    return {"final_overall_acc": final, "recorded_overall_acc": recorded, "same": final == recorded,
            "seconds": round(sum(s.get("seconds", 0.0) for s in sessions), 1),
            "commits": sorted({s["code"]["commit"] for s in sessions})}


def merged_robustness_summary(clean: float, table: dict[str, dict[int, float]]) -> dict[str, Any]:
    """appt's own summary of the merged table (mCE vs clean, ModelNet-C mCE, ...) when it imports;
    otherwise (the module moved while the queue runs) its three plain means, computed here."""
    try:
        from appt.evaluation.robustness import robustness_summary

        return robustness_summary(clean, table)
    except ImportError:
        scores = [v for levels in table.values() for v in levels.values()]
        return {"clean": clean, "mean_corrupted": statistics.mean(scores),
                "mean_drop": statistics.mean(clean - v for v in scores),
                "per_kind_mean": {k: statistics.mean(levels.values()) for k, levels in table.items()}}


def cmd_run(args: argparse.Namespace) -> int:
    state, plan = State(args.state), load_plan(args.plan)
    only = re.compile(args.only) if args.only else None
    jobs = [j for j in plan["jobs"] if not only or only.search(j["id"])]

    def stop(signum: int, _frame: Any) -> None:
        raise Stop(signal.Signals(signum).name)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    with state.lock(), restore_signals(previous):
        for sig in previous:
            signal.signal(sig, stop)
        if args.hours:  # a batch of limited length: stop then, as `stop` would (the run resumes later)
            signal.setitimer(signal.ITIMER_REAL, args.hours * 3600)
        say(f"worker {os.getpid()}: plan {args.plan}, state {state.root}, python {sys.executable}")
        tried: set[str] = set()  # started by this worker in this pass: not started again
        try:
            while not (args.max_jobs and len(tried) >= args.max_jobs):
                if next_job(state, jobs, tried, args):
                    continue
                waits = [j for j in jobs if j["id"] not in tried and j["kind"] == "robustness"
                         and job_state(state, j, None, args.attempts) == "waiting" and state.claimed(j["of"])]
                if not waits:
                    break
                say(f"{waits[0]['id']}: waiting for {waits[0]['of']}, which another worker is training")
                while state.claimed(waits[0]["of"]):
                    time.sleep(POLL_S)
        except Stop as exc:
            say(f"worker stopped by {exc}; the interrupted job resumes on the next run")
            return 0
        say("worker: nothing left to start in this pass")
    return 0


def next_job(state: State, jobs: list[dict[str, Any]], tried: set[str], args: argparse.Namespace) -> bool:
    """Claim and run the first job in plan order that is startable and held by no other worker;
    False when there is none."""
    for job in jobs:
        if job["id"] in tried or not startable(state, job, args):
            continue
        with state.claim(job["id"]) as mine:
            # checked again once held: the other worker may have finished it since
            if not mine or not startable(state, job, args):
                continue
            tried.add(job["id"])
            run_with_retries(state, job, args)
            return True
    return False


def startable(state: State, job: dict[str, Any], args: argparse.Namespace) -> bool:
    status = job_state(state, job, None, args.attempts)
    return status in ("pending", "partial") or (status == "failed" and args.retry_failed)


def run_with_retries(state: State, job: dict[str, Any], args: argparse.Namespace) -> None:
    """Run one job until it succeeds, stops on purpose, or has failed ``--attempts`` times."""
    while True:
        tic = time.time()
        say(f"{job['id']}: {'resuming' if job_state(state, job, None, args.attempts) == 'partial' else 'starting'}")
        ok = (run_train if job["kind"] == "train" else run_robustness)(state, job)
        if ok:
            res = state.result(job["id"]) or {}
            acc = res.get("final", {}).get("overall_acc")
            say(f"{job['id']}: done in {time.time() - tic:.0f} s" +
                (f", last-epoch test OA {100 * acc:.2f} %" if acc is not None else ""))
            return
        last = (state.sessions(job["id"]) or [{}])[-1]
        if last.get("rc") == 0:  # stopped on purpose (train.stop_after_steps): resumable later
            say(f"{job['id']}: stopped before the end (resumes on the next run)")
            return
        fails = state.failures(job["id"])
        if fails >= args.attempts:
            say(f"{job['id']}: failed {fails} times; see {state.root / 'logs' / (job['id'] + '.log')}")
            return
        wait = BACKOFF_S[min(fails, len(BACKOFF_S)) - 1] if not args.no_backoff else 0
        say(f"{job['id']}: exit code {last.get('rc')} (failure {fails}); retrying in {wait} s")
        time.sleep(wait)


@contextlib.contextmanager
def restore_signals(previous: dict[Any, Any]) -> Iterator[None]:
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_stop(args: argparse.Namespace) -> int:
    worker = State(args.state).worker()
    if not worker or not worker.get("pid"):
        print("no worker is running")
        return 0
    os.kill(worker["pid"], signal.SIGTERM)
    print(f"sent SIGTERM to worker {worker['pid']} (running {worker.get('current')})")
    return 0


# ----------------------------------------------------------------------------------------------
# status and collect


def progress_note(state: State, job: dict[str, Any]) -> str:
    if job["kind"] != "train":
        dirs = [robustness_dir(state.run_dir(job["of"]), k) for k in job["corrupt"]]
        done = sum((d / "robustness.json").is_file() for d in dirs)
        passes = sum(len((d / PASSES_DONE).read_text().splitlines()) for d in dirs if (d / PASSES_DONE).is_file())
        return f"{done}/{len(job['corrupt'])} parts ({', '.join(job['corrupt'])})" + (
            f", {passes} corrupted passes of an unfinished part kept" if passes else "")
    events = read_events(state.run_dir(job["id"]))
    last = last_train_epoch(events)
    steps = [e.get("step", 0) for e in events if "step" in e]
    if not last and not steps:
        return ""
    note = f"epoch {last['epoch'] if last else 0}, step {max(steps) if steps else 0}"
    evals = [e for e in events if e.get("event") == "eval_test"]
    if evals:
        note += f", test OA {100 * evals[-1]['overall_acc']:.2f} % @ epoch {evals[-1]['epoch']}"
    return note


def live_workers(state: State) -> list[dict[str, Any]]:
    """The live workers of ``state`` and of any second state folder inside it (one per core, e.g.
    ``worker_b/`` whose runs, logs, sessions and results link to this folder's)."""
    roots = [state.root, *sorted(d for d in state.root.iterdir() if d.is_dir() and (d / "worker.lock").exists())]
    workers = []
    for root in roots:
        info = State(root).worker()
        if info:
            workers.append({**info, "state": str(root)})
    return workers


def time_left(state: State, jobs: list[dict[str, Any]], results: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Core-seconds the unfinished jobs will take, guessed from finished jobs of the same kind, regime
    and variant (median), plus the training a robustness job redoes when its run folder is gone.
    Partial jobs count in full, so it errs long; jobs nothing alike has finished are listed apart.
    ``results``: each job's finished result or None, by id (as ``status`` read them)."""
    def key(job: dict[str, Any]) -> tuple[str, str, str]:
        train = job.get("train_job", job)
        return job["kind"], train["regime"], train["variant"]

    measured: dict[tuple[str, str, str], list[float]] = {}
    for job in jobs:
        res = results[job["id"]]
        if res:  # a robustness job's own seconds, without the training it redid
            own = res["seconds"] - (res.get("retrained") or {}).get("seconds", 0.0)
            measured.setdefault(key(job), []).append(own)
    seconds, unmeasured = 0.0, []
    for job in jobs:
        if results[job["id"]]:
            continue
        parts = [key(job)]
        if job["kind"] == "robustness" and results[job["of"]] \
                and not (state.run_dir(job["of"]) / "summary.json").is_file():
            parts.append(key(job["train_job"]))
        if all(k in measured for k in parts):
            seconds += sum(statistics.median(measured[k]) for k in parts)
        else:
            unmeasured.append(job["id"])
    return {"seconds": seconds, "unmeasured": unmeasured}


def cmd_status(args: argparse.Namespace) -> int:
    state, plan = State(args.state), load_plan(args.plan)
    workers = live_workers(state)
    running = {w["current"]: w for w in workers if w.get("current")}
    counts: dict[str, int] = {}
    rows = []
    results = {job["id"]: state.result(job["id"]) for job in plan["jobs"]}
    for job in plan["jobs"]:
        st = job_state(state, job, running.get(job["id"]), args.attempts)
        counts[st] = counts.get(st, 0) + 1
        res = results[job["id"]]
        if res and job["kind"] == "train":
            note = f"test OA {100 * res['final']['overall_acc']:.2f} %, {res['seconds']:.0f} s" + \
                   (", dirty" if res.get("dirty") else "")
        elif res:
            note = f"mean corrupted OA {100 * res['summary']['mean_corrupted']:.2f} %, {res['seconds']:.0f} s"
        else:
            note = progress_note(state, job)
        if args.all or st not in ("pending", "waiting"):
            rows.append(f"  {st:8s} {job['id']:36s} {note}")
    print(f"plan {args.plan}: {len(plan['jobs'])} jobs; state {state.root}")
    for w in workers or [None]:
        print("worker: " + (f"pid {w.get('pid')}, running {w.get('current')} (child {w.get('child_pid')}), "
                            f"since {w.get('started')}, state {w['state']}" if w else "none running"))
    print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print("\n".join(rows))
    hidden = counts.get("pending", 0) + counts.get("waiting", 0)
    if not args.all and hidden:
        print(f"  ... and {hidden} pending or waiting for their training run (--all lists them)")
    left = time_left(state, plan["jobs"], results)
    if left["seconds"] or left["unmeasured"]:
        print(f"left: about {left['seconds'] / 3600:.1f} core-hours (medians of finished jobs alike)" +
              (f"; not estimated, nothing alike finished: {len(left['unmeasured'])} jobs "
               f"({', '.join(left['unmeasured'][:3])}{', ...' if len(left['unmeasured']) > 3 else ''})"
               if left["unmeasured"] else ""))
    return 0


def summarize_regimes(results: list[dict[str, Any]], robustness: list[dict[str, Any]],
                      use_scipy: bool = True) -> dict[str, Any]:
    """Per regime: per-variant figures and the paired differences (per seed) with 95 % t-intervals."""
    out: dict[str, Any] = {}
    for regime in dict.fromkeys(r["regime"] for r in results):
        runs = [r for r in results if r["regime"] == regime]
        # a regime may hold several settings per seed and variant (the data-size fractions): one cell each
        cells: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            cell = "/".join(o for o in r["overrides"] if o.startswith("data.subset="))
            cells.setdefault(cell, []).append(r)
        entry: dict[str, Any] = {}
        for cell, rs in cells.items():
            by = {(r["variant"], r["seed"]): r for r in rs}
            rob = {(x["variant"], x["seed"]): x for x in robustness if x.get("regime") == regime
                   and (x["variant"], x["seed"]) in by and x["of"] == by[(x["variant"], x["seed"])]["id"]}
            variants = {}
            for v in dict.fromkeys(r["variant"] for r in rs):
                mine = [r for r in rs if r["variant"] == v]
                oa = {r["seed"]: r["final"]["overall_acc"] for r in mine}
                fit = [r["train_last_epoch"]["acc"] for r in mine if r.get("train_last_epoch")]
                variants[v] = {"seeds": sorted(oa), "overall_acc": [oa[s] for s in sorted(oa)],
                               "mean_overall_acc": statistics.mean(oa.values()),
                               "sd_overall_acc": statistics.stdev(oa.values()) if len(oa) > 1 else None,
                               "mean_class_acc": statistics.mean(r["final"]["mean_class_acc"] for r in mine),
                               "trainable_params": mine[0]["trainable_params"],
                               "seconds_per_run": statistics.mean(r["seconds"] for r in mine),
                               "mean_train_acc_last_epoch": statistics.mean(fit) if len(fit) == len(mine) else None}
                curve: dict[int, list[float]] = {}  # test OA at each evaluation, for "has the curve flattened?"
                for r in mine:
                    for e in r.get("evals", []):
                        curve.setdefault(e["epoch"], []).append(e["overall_acc"])
                variants[v]["curve"] = {ep: statistics.mean(xs) for ep, xs in sorted(curve.items())
                                        if len(xs) == len(oa)}  # epochs every seed reached
                corrupted = {s: rob[(v, s)]["summary"]["mean_corrupted"] for s in sorted(oa) if (v, s) in rob}
                if corrupted:  # the robustness pass's mean OA over every kind and level, per seed
                    variants[v].update(robustness_seeds=list(corrupted), mean_corrupted_acc=list(corrupted.values()))
            paired = {}
            for a, b in CONTRASTS:
                seeds = sorted(s for (v, s) in by if v == a and (b, s) in by)
                if not seeds:
                    continue
                pair = {"seeds": seeds, "overall_acc": paired_interval(
                    [by[(a, s)]["final"]["overall_acc"] - by[(b, s)]["final"]["overall_acc"] for s in seeds], use_scipy),
                    "mean_class_acc": paired_interval(
                    [by[(a, s)]["final"]["mean_class_acc"] - by[(b, s)]["final"]["mean_class_acc"] for s in seeds], use_scipy)}
                rseeds = [s for s in seeds if (a, s) in rob and (b, s) in rob]
                if rseeds:
                    pair["robustness_seeds"] = rseeds
                    pair.update(paired_robustness([rob[(a, s)]["summary"] for s in rseeds],
                                                  [rob[(b, s)]["summary"] for s in rseeds], use_scipy))
                paired[f"{a} - {b}"] = pair
            entry[cell or "all"] = {"variants": variants, "paired": paired,
                                    "commits": sorted({c for r in rs for c in r["commits"]}),
                                    "dirty_runs": sum(1 for r in rs if r["dirty"])}
        out[regime] = entry
    for regime, base in ACROSS.items():
        for cell, entry in out.get(regime, {}).items():
            if cell in out.get(base, {}):
                entry["across"] = across_regimes(entry, out[base][cell], f"{regime} - {base}", use_scipy)
    return out


def paired_robustness(mine: list[dict[str, Any]], theirs: list[dict[str, Any]], use_scipy: bool = True) -> dict[str, Any]:
    """Paired differences of two variants' robustness summaries (one per seed, same order):
    ``mean_corrupted_acc`` (OA over every kind and level; above 0: the first variant keeps more),
    ``mean_drop`` (clean minus corrupted OA; *below* 0: the first variant loses fewer points, i.e. it
    is more robust whatever its clean OA) and ``per_kind_corrupted_acc`` (each kind's mean over its
    levels; seven intervals, so one of them may exclude 0 by chance alone)."""
    def diffs(key: str) -> list[float]:
        return [m[key] - t[key] for m, t in zip(mine, theirs)]

    kinds = [k for k in mine[0]["per_kind_mean"] if all(k in x["per_kind_mean"] for x in [*mine, *theirs])]
    return {"mean_corrupted_acc": paired_interval(diffs("mean_corrupted"), use_scipy),
            "mean_drop": paired_interval(diffs("mean_drop"), use_scipy),
            "per_kind_corrupted_acc": {k: paired_interval([m["per_kind_mean"][k] - t["per_kind_mean"][k]
                                                           for m, t in zip(mine, theirs)], use_scipy) for k in kinds}}


def across_regimes(entry: dict[str, Any], base: dict[str, Any], label: str, use_scipy: bool = True) -> dict[str, Any]:
    """Per variant, the per-seed OA difference ``entry - base`` over the seeds both cells hold."""
    out: dict[str, Any] = {}
    for v, figures in entry["variants"].items():
        if v not in base["variants"]:
            continue
        mine = dict(zip(figures["seeds"], figures["overall_acc"]))
        theirs = dict(zip(base["variants"][v]["seeds"], base["variants"][v]["overall_acc"]))
        seeds = sorted(set(mine) & set(theirs))
        if seeds:
            out[f"{v}: {label}"] = {"seeds": seeds,
                                    "overall_acc": paired_interval([mine[s] - theirs[s] for s in seeds], use_scipy)}
    return out


def cmd_collect(args: argparse.Namespace) -> int:
    state, plan = State(args.state), load_plan(args.plan)
    results = [r for j in plan["jobs"] if (r := state.result(j["id"]))]
    train = [r for r in results if r["kind"] == "train"]
    for r in train:  # results written before train_last_epoch existed: read it from the run folder
        if "train_last_epoch" not in r:
            r["train_last_epoch"] = last_train_epoch(read_events(state.root / r["run_dir"]))
    rob = [r for r in results if r["kind"] == "robustness"]
    pending = [j["id"] for j in plan["jobs"] if not state.result_path(j["id"]).is_file()]
    strip = ("sessions", "resolved_config") if args.brief else ()
    payload = {
        "benchmark": "regimes (issue 14)", "written": now(), "plan": os.path.relpath(args.plan, ROOT),
        "complete": not pending, "jobs_done": len(results), "jobs_pending": pending,
        "metric": "last-epoch test overall accuracy (fraction) on the whole official test split; paired "
                  "differences per seed, mean and 95 % Student-t interval (n - 1 degrees of freedom)",
        "summary": summarize_regimes(train, rob),
        "runs": [{k: v for k, v in r.items() if k not in strip} for r in train],
        "robustness": [{k: v for k, v in r.items() if k not in strip} for r in rob],
    }
    out = Path(args.out or RESULTS / f"regimes_{time.strftime('%Y-%m-%d')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, payload)
    print(f"{len(results)} finished jobs ({len(pending)} pending) -> {out}")
    for regime, cells in payload["summary"].items():
        for cell, e in cells.items():
            for name, p in e["paired"].items():
                oa = p["overall_acc"]
                ci = f"[{100 * oa['ci95'][0]:+.2f}, {100 * oa['ci95'][1]:+.2f}]" if oa["ci95"] else "(n = 1)"
                print(f"  {regime} {cell}: {name}: {100 * oa['mean']:+.2f} points OA, 95 % CI {ci}, n = {oa['n']}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Finished jobs back from a committed collect file, for a new machine whose state folder is gone:
    their results are written as they were (with ``restored_from``), so ``run`` skips them and
    ``collect`` includes them. Only a job the plan still defines the same way comes back; a robustness
    job whose run folder is gone trains it again first (``run_robustness``)."""
    state, plan = State(args.state), load_plan(args.plan)
    jobs = {j["id"]: j for j in plan["jobs"]}
    source = Path(args.file).resolve()
    collected = json.loads(source.read_text())
    if "runs" not in collected or "robustness" not in collected:
        raise SystemExit(f"{args.file}: not a run_queue.py collect file (no 'runs' / 'robustness')")
    same = {"train": ("config", "variant", "seed", "overrides"), "robustness": ("of",)}
    restored, skipped = 0, []
    for record in [*collected["runs"], *collected["robustness"]]:
        job = jobs.get(record["id"])
        if job is None or any(record.get(k) != job.get(k) for k in same[job["kind"]]) or "sessions" not in record:
            skipped.append(record["id"])  # gone from the plan, defined differently now, or a --brief collect
            continue
        if not state.result_path(record["id"]).is_file():
            write_json(state.result_path(record["id"]), {**record, "restored_from": os.path.relpath(source, ROOT)})
            restored += 1
    print(f"restored {restored} finished jobs from {args.file} into {state.root / 'results'}" +
          (f"; not restored (not in the plan as recorded): {', '.join(skipped)}" if skipped else ""))
    return 1 if skipped else 0


def cmd_plan_regimes(args: argparse.Namespace) -> int:
    write_plan(Path(args.plan), regimes_plan())
    print(f"wrote {args.plan} ({len(regimes_plan()['jobs'])} jobs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", default=str(PLAN))
    p.add_argument("--state", default=str(STATE))
    p.add_argument("--attempts", type=int, default=4, help="failures before a job is given up (default 4)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="work through the plan")
    r.add_argument("--only", help="regular expression on job ids")
    r.add_argument("--max-jobs", type=int, default=0, help="start at most this many jobs (0 = all)")
    r.add_argument("--retry-failed", action="store_true", help="also retry jobs given up earlier")
    r.add_argument("--hours", type=float, default=0.0,
                   help="stop after this many hours (the interrupted run resumes on the next run; 0 = no limit)")
    r.add_argument("--no-backoff", action="store_true", help="retry failures at once (tests)")
    s = sub.add_parser("status", help="done / running / partial / failed / pending")
    s.add_argument("--all", action="store_true", help="list pending jobs too")
    sub.add_parser("stop", help="SIGTERM the worker (the run resumes later)")
    c = sub.add_parser("collect", help="summary JSON with paired differences")
    c.add_argument("--out")
    c.add_argument("--brief", action="store_true", help="leave out sessions and resolved configs")
    sub.add_parser("plan-regimes", help="write issue 14's plan to --plan")
    rs = sub.add_parser("restore", help="finished jobs back from a committed collect file (a new machine)")
    rs.add_argument("file", help="a JSON written by `collect` (not --brief)")
    args = p.parse_args(argv)
    return {"run": cmd_run, "status": cmd_status, "stop": cmd_stop, "collect": cmd_collect,
            "plan-regimes": cmd_plan_regimes, "restore": cmd_restore}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
