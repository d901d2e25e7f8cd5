"""benchmarks/run_queue.py: the resumable queue of training runs, and its paired-difference math."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run_queue

DATA = ROOT.parent / "shared" / "data" / "modelnet10_pcd" / "ModelNet10" / "pcd"


def test_paired_interval_matches_a_hand_computed_example() -> None:
    # diffs 1, 2, 3, 6: mean 3, sd = sqrt(14 / 3) = 2.160247, se = sd / 2 = 1.080123,
    # t(0.975, 3 df) = 3.182446 -> half-width 3.437435, interval [-0.437435, 6.437435]
    for use_scipy, tol in ((True, 1e-5), (False, 1e-3)):  # scipy, and the built-in t table
        p = run_queue.paired_interval([1.0, 2.0, 3.0, 6.0], use_scipy=use_scipy)
        assert p["n"] == 4 and p["mean"] == 3.0
        assert math.isclose(p["sd"], 2.160247, abs_tol=1e-6) and math.isclose(p["se"], 1.080123, abs_tol=1e-6)
        assert math.isclose(p["t"], 3.182446, abs_tol=tol)
        assert p["ci95"][0] == pytest.approx(-0.437435, abs=tol) and p["ci95"][1] == pytest.approx(6.437435, abs=tol)
    assert run_queue.paired_interval([0.5])["ci95"] is None  # one pair: a mean, no interval
    assert run_queue.t_critical(1, use_scipy=False) == 12.706 and run_queue.t_critical(29, use_scipy=False) == 2.045


def test_regime_summary_pairs_variants_by_seed() -> None:
    def run(variant: str, seed: int, oa: float) -> dict:
        return {"id": f"{variant}-{seed}", "regime": "r", "variant": variant, "seed": seed, "overrides": ["data.subset=100"],
                "final": {"overall_acc": oa, "mean_class_acc": oa - 0.05}, "trainable_params": 1, "seconds": 1.0,
                "commits": ["abc"], "dirty": True}

    results = [run("appt", 0, 0.80), run("encoder_only", 0, 0.78), run("appt", 1, 0.82), run("encoder_only", 1, 0.83),
               run("appt", 2, 0.81), run("random_backbone", 2, 0.80)]  # encoder_only seed 2 missing: not paired
    for r, acc in zip(results[:3], (0.9, 1.0, 0.95)):  # appt's seeds 0, 1 (2 below), encoder_only's seed 0 only
        r["train_last_epoch"] = {"epoch": 60, "loss": 1.0, "acc": acc}
    results[4]["train_last_epoch"] = {"epoch": 60, "loss": 1.0, "acc": 1.0}
    def summary(corrupted: float, drop: float, jitter: float) -> dict:
        return {"mean_corrupted": corrupted, "mean_drop": drop, "per_kind_mean": {"jitter": jitter, "rotate": corrupted}}

    rob = [{"of": "appt-0", "regime": "r", "variant": "appt", "seed": 0, "summary": summary(0.6, 0.2, 0.7)},
           {"of": "encoder_only-0", "regime": "r", "variant": "encoder_only", "seed": 0, "summary": summary(0.5, 0.28, 0.4)}]
    cell = run_queue.summarize_regimes(results, rob)["r"]["data.subset=100"]
    enc = cell["paired"]["appt - encoder_only"]
    assert enc["seeds"] == [0, 1] and enc["overall_acc"]["diffs"] == pytest.approx([0.02, -0.01])
    assert enc["overall_acc"]["mean"] == pytest.approx(0.005)
    half = 12.7062 * statistics_sd([0.02, -0.01]) / math.sqrt(2)
    assert enc["overall_acc"]["ci95"] == pytest.approx([0.005 - half, 0.005 + half], abs=1e-5)
    assert enc["mean_corrupted_acc"]["diffs"] == pytest.approx([0.1]) and enc["robustness_seeds"] == [0]
    assert enc["mean_drop"]["diffs"] == pytest.approx([-0.08])
    assert enc["per_kind_corrupted_acc"]["jitter"]["diffs"] == pytest.approx([0.3])
    assert cell["variants"]["appt"]["mean_corrupted_acc"] == [0.6] and cell["variants"]["appt"]["robustness_seeds"] == [0]
    assert "mean_corrupted_acc" not in cell["variants"]["random_backbone"]
    assert cell["paired"]["appt - random_backbone"]["overall_acc"]["n"] == 1
    assert cell["variants"]["appt"]["overall_acc"] == [0.80, 0.82, 0.81] and cell["dirty_runs"] == 6
    assert cell["variants"]["appt"]["mean_train_acc_last_epoch"] == pytest.approx(0.95)  # (0.9 + 0.95 + 1) / 3
    assert cell["variants"]["encoder_only"]["mean_train_acc_last_epoch"] is None  # not every seed has one


def statistics_sd(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def test_committed_plan_is_the_generated_one_and_puts_the_decisive_runs_first() -> None:
    plan = run_queue.load_plan(run_queue.PLAN)
    assert run_queue.PLAN.read_text().split("jobs:\n", 1)[1] == \
        "\n".join("  - " + json.dumps(j) for j in run_queue.regimes_plan()["jobs"]) + "\n"
    first = [(j["seed"], j["variant"]) for j in plan["jobs"][:15]]
    assert first == [(s, v) for s in range(5) for v in ("appt", "encoder_only", "random_backbone")]
    assert all(j["regime"] == "minilm_fewshot_10" and "data.subset=10/class" in j["overrides"] for j in plan["jobs"][:15])
    jobs = plan["jobs"]
    regime = {j["id"]: j["regime"] for j in jobs if j["kind"] == "train"}
    assert sum(j["kind"] == "train" for j in jobs) == len(regime) == 108
    robust_of = [j["of"] for j in jobs if j["kind"] == "robustness"]
    assert sorted(robust_of) == sorted(regime)  # one robustness job per train job...
    seen = set()
    for j in jobs:  # ...after it
        assert j["kind"] == "train" or j["of"] in seen
        seen.add(j["id"])
    # the order, as runs of (kind, regime): what issue 14's done-when needs first (10 per class, its
    # robustness, the data-size regime with each run's robustness right after it, MPNet's robustness)
    blocks = [(j["kind"], regime[j["of"]] if j["kind"] == "robustness" else j["regime"]) for j in jobs]
    blocks = [b for i, b in enumerate(blocks) if i == 0 or b != blocks[i - 1]]

    def interleaved(*regimes: str) -> list[tuple[str, str]]:
        return [(kind, r) for r in regimes for _ in range(3) for kind in ("train", "robustness")]

    assert blocks == [("train", "minilm_fewshot_10"), ("train", "minilm_fewshot_10_paper_readout"),
                      ("robustness", "minilm_fewshot_10"), *interleaved("minilm_datasize_372steps") * 9,
                      ("robustness", "minilm_fewshot_10"), *interleaved("mpnet_fewshot_10") * 5,
                      *interleaved("minilm_fewshot_10_120ep") * 3, ("robustness", "minilm_fewshot_10_paper_readout"),
                      *interleaved("minilm_fewshot_5", "minilm_fewshot_20") * 3, *interleaved("mpnet_fewshot_10_120ep") * 3]
    # from the data-size regime on, every run's robustness job comes right after it
    later = jobs[[j["id"] for j in jobs].index("minilm-f010-s0-appt"):]
    trains = [j for j in later if j["kind"] == "train"]
    assert all(later[later.index(t) + 1].get("of") == t["id"] for t in trains)
    assert all(j["corrupt"] == ["all"] for j in jobs if j["kind"] == "robustness")  # one process per job


TINY = ["data.subset=20", "data.test_subset=10", "data.num_points=64", "data.batch_size=8",
        "model.centers=[32,16,8]", "train.epochs=2", "train.eval_every=1"]


@pytest.mark.skipif(not DATA.is_dir(), reason="needs the real ModelNet10 in ../shared/data")
def test_two_workers_share_the_plan_by_claims_and_one_waits_for_the_others_run(tmp_path: Path, monkeypatch,
                                                                                capsys) -> None:
    """A second worker (its own state folder, linked to the first's runs and results) holds job ``a``
    and trains it, a tiny real run, in a thread. The first worker meanwhile skips ``a`` (held), runs
    ``b``, then waits for ``a`` to finish before it runs ``a``'s robustness job; ``a`` runs once."""
    import threading

    config = "configs/modelnet10_minilm.yaml"
    jobs = [{"id": j, "regime": "tiny", "config": config, "variant": "encoder_only", "seed": 0, "overrides": TINY}
            for j in ("a", "b")] + [{"id": "robust-a", "kind": "robustness", "of": "a"}]
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps({"name": "t", "jobs": jobs}))
    first = run_queue.State(tmp_path / "state")
    (first.root / "worker_b").mkdir()
    for sub in ("runs", "logs", "sessions", "results"):
        (first.root / "worker_b" / sub).symlink_to(f"../{sub}")
    second = run_queue.State(first.root / "worker_b")
    held, release = threading.Event(), threading.Event()
    real_train = run_queue.run_train

    def other_worker() -> None:
        with second.lock(), second.claim("a") as mine:  # as `run` in worker_b would hold them
            assert mine
            held.set()
            release.wait(120)  # until the first worker has started b: it must not take a meanwhile
            assert real_train(second, run_queue.load_plan(plan)["jobs"][0])

    monkeypatch.setattr(run_queue, "POLL_S", 0.2)

    def train_and_let_the_other_go(state, job):  # the first worker's own training of b, then a goes on
        ok = real_train(state, job)
        release.set()
        return ok

    monkeypatch.setattr(run_queue, "run_train", train_and_let_the_other_go)
    thread = threading.Thread(target=other_worker)
    thread.start()
    assert held.wait(30)
    assert first.claimed("a") and not first.claimed("b")
    assert run_queue.main(["--plan", str(plan), "--state", str(first.root), "run", "--no-backoff"]) == 0
    thread.join(300)
    out = capsys.readouterr().out
    assert "robust-a: waiting for a, which another worker is training" in out and "] a: starting" not in out
    assert [s.get("retrain") for s in first.sessions("robust-a")] == [None]  # a's run folder, not a retrain
    assert len(first.sessions("a")) == 1 and len(first.sessions("b")) == 1
    assert first.result("robust-a")["summary"]["clean"] == first.result("a")["final"]["overall_acc"]
    assert not first.claimed("a")  # released with the thread's claim


@pytest.mark.skipif(not DATA.is_dir(), reason="needs the real ModelNet10 in ../shared/data")
def test_queue_runs_stops_resumes_and_skips_finished_runs(tmp_path: Path) -> None:
    """Two tiny real runs; the first stops after step 3 of 4 (as a killed worker would leave it),
    the next `run` resumes it from its checkpoint and skips the finished one (and the robustness
    evaluation of that one: every corruption kind and level, in one process); a second worker on the
    same state is refused."""
    tiny = TINY
    config = "configs/modelnet10_minilm.yaml"
    jobs = [{"id": "a", "regime": "tiny", "config": config, "variant": "appt", "seed": 0,
             "overrides": [*tiny, "train.stop_after_steps=3"]},
            {"id": "b", "regime": "tiny", "config": config, "variant": "encoder_only", "seed": 0, "overrides": tiny},
            {"id": "robust-b", "kind": "robustness", "of": "b"}]
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps({"name": "t", "defaults": {"overrides": ["train.checkpoint_every=1"]}, "jobs": jobs}))
    state = tmp_path / "state"
    common = ["--plan", str(plan), "--state", str(state)]

    assert run_queue.main([*common, "run", "--no-backoff"]) == 0
    st = run_queue.State(state)
    jobs = run_queue.load_plan(plan)["jobs"]
    assert [run_queue.job_state(st, j, None, 4) for j in jobs] == ["partial", "done", "done"]
    rob = st.result("robust-b")  # appt eval --checkpoint last --corrupt all on b's run, one process
    assert len(rob["table"]) == 7 and all(list(levels) == ["1", "2", "3", "4", "5"] for levels in rob["table"].values())
    assert [s["corrupt"] for s in rob["sessions"]] == ["all"]
    assert rob["summary"]["clean"] == st.result("b")["final"]["overall_acc"] and rob["variant"] == "encoder_only"
    b_result = st.result_path("b").read_text()

    assert run_queue.main([*common, "run", "--no-backoff"]) == 0
    assert [run_queue.job_state(st, j, None, 4) for j in jobs] == ["done", "done", "done"]
    assert st.result_path("b").read_text() == b_result and len(st.sessions("b")) == 1  # skipped
    a = st.result("a")
    assert a["resumed"] == 1 and a["steps"] == 4 and a["variant"] == "appt" and a["seed"] == 0
    assert [s["resumed"] for s in a["sessions"]] == [False, True]
    import torch  # each session records the kernels' instruction set: AVX2 wherever the CPU has it (see AVX2_KERNELS)

    here = torch.backends.cpu.get_cpu_capability()
    assert {s["machine"]["torch_cpu_capability"] for s in a["sessions"]} == {"AVX2" if here in ("AVX2", "AVX512") else here}
    assert any(e.get("event") == "resume" for e in run_queue.read_events(st.run_dir("a")))
    assert [e["epoch"] for e in a["evals"]] == [1, 2] and a["final"]["epoch"] == 2
    assert a["resolved_config"]["train"]["seed"] == 0 and a["resolved_config"]["model"]["variant"] == "appt"
    assert len(a["commit"]) == 40 and isinstance(a["dirty"], bool) and a["trainable_params"] > 0
    last = [e for e in run_queue.read_events(st.run_dir("a")) if e.get("event") == "train_epoch"][-1]
    assert a["train_last_epoch"] == {"epoch": 2, "loss": last["loss"], "acc": last["acc"]}

    with st.lock(), pytest.raises(SystemExit, match="another worker"):  # one worker per state
        run_queue.main([*common, "run"])
    assert run_queue.main([*common, "run"]) == 0 and len(st.sessions("a")) == 2  # nothing left to start

    out = tmp_path / "summary.json"
    assert run_queue.main([*common, "collect", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["complete"] and summary["summary"]["tiny"]["data.subset=20"]["paired"]["appt - encoder_only"]["overall_acc"]["n"] == 1
    fit = summary["summary"]["tiny"]["data.subset=20"]["variants"]["appt"]["mean_train_acc_last_epoch"]
    assert fit == a["train_last_epoch"]["acc"]
    old = {k: v for k, v in a.items() if k != "train_last_epoch"}  # a result written before the field existed
    st.result_path("a").write_text(json.dumps(old))
    assert run_queue.main([*common, "collect", "--out", str(out)]) == 0  # ...gets it from the run folder
    assert json.loads(out.read_text())["summary"]["tiny"]["data.subset=20"]["variants"]["appt"]["mean_train_acc_last_epoch"] == fit


def test_worker_stops_after_its_hours_and_leaves_the_job_resumable(tmp_path: Path, monkeypatch, capsys) -> None:
    """``run --hours H`` ends the batch after H hours the way ``stop`` does (the job is interrupted)."""
    import time

    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps({"name": "t", "jobs": [
        {"id": "slow", "regime": "r", "config": "c.yaml", "variant": "appt", "seed": 0}]}))

    def slow_job(state, job):
        time.sleep(30)
        return True

    monkeypatch.setattr(run_queue, "run_train", slow_job)
    tic = time.time()
    assert run_queue.main(["--plan", str(plan), "--state", str(tmp_path / "s"), "run", "--hours", str(1 / 3600)]) == 0
    assert time.time() - tic < 10 and "worker stopped by SIGALRM" in capsys.readouterr().out
    assert not run_queue.State(tmp_path / "s").result_path("slow").exists()


@pytest.mark.skipif(not DATA.is_dir(), reason="needs the real ModelNet10 in ../shared/data")
def test_same_training_finds_a_run_repeated_and_a_changed_loss(tmp_path: Path, capsys) -> None:
    """benchmarks/same_training.py reruns a real tiny run's first steps: identical here; after one
    logged loss is changed in its last digit, it reports that event and exits 1."""
    import subprocess

    import same_training

    run = tmp_path / "run"
    tiny = ["data.subset=16", "data.test_subset=8", "data.num_points=64", "data.batch_size=8",
            "model.centers=[32,16,8]", "train.epochs=2", "train.eval_every=2", "train.log_every=1"]
    cmd = run_queue.appt_cmd("train", "--config", "configs/modelnet10_minilm.yaml", "--set", f"run_dir={run}",
                             *[a for o in tiny for a in ("--set", o)], "--no-progress")
    subprocess.run(cmd, env=run_queue.child_env(), cwd=ROOT, check=True, capture_output=True)
    assert same_training.main([str(run), "--steps", "3", "--out", str(tmp_path / "same.json")]) == 0
    report = json.loads((tmp_path / "same.json").read_text())
    assert report["runs"][0]["identical"] and report["runs"][0]["compared"] == 4  # steps 1-3, epoch 1 (2 steps)

    lines = (run / "metrics.jsonl").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if '"train_step"' in line and '"step": 3' in line)
    event = json.loads(lines[i])
    event["loss"] = math.nextafter(event["loss"], math.inf)  # one unit in the last place
    lines[i] = json.dumps(event)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert same_training.main([str(run), "--steps", "3"]) == 1
    assert "train_step at step 3: loss" in capsys.readouterr().out


def test_queue_reads_the_progress_file_appt_eval_writes() -> None:
    from appt.training.evaluate import PROGRESS_FILE

    assert run_queue.PASSES_DONE == PROGRESS_FILE


def test_status_shows_the_job_a_second_worker_folder_is_running(tmp_path: Path, capsys) -> None:
    """A second worker works from its own state folder inside the main one (its own lock); the main
    folder's ``status`` lists that worker and marks its job running, not pending."""
    jobs = [{"id": j, "regime": "r", "config": "c.yaml", "variant": "appt", "seed": 0} for j in ("a", "b")]
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps({"name": "t", "jobs": jobs}))
    main_state = run_queue.State(tmp_path / "state")
    second = run_queue.State(main_state.root / "worker_b")
    with second.lock():
        second.set_current("b", child=123)
        assert run_queue.main(["--plan", str(plan), "--state", str(main_state.root), "status", "--all"]) == 0
    out = capsys.readouterr().out
    assert "running b (child 123)" in out and str(second.root) in out
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("  ")] == [["pending", "a"], ["running", "b"]]
    assert run_queue.main(["--plan", str(plan), "--state", str(main_state.root), "status"]) == 0  # lock released
    assert "worker: none running" in capsys.readouterr().out


def test_time_left_adds_medians_of_finished_jobs_alike_and_the_training_a_lost_run_needs(tmp_path: Path) -> None:
    """a1 and a3 trained (100 s and 300 s: median 200 s), robust-a1 took 250 s of which 100 s
    retraining; a2 and its robustness pass are left (200 + 150 s), and robust-a3, whose run folder is
    gone, trains a3 again first (+ 200 s). Nothing like c (another variant) has finished."""
    jobs = [{"id": j, "regime": "r", "config": "c.yaml", "variant": "appt", "seed": i} for i, j in enumerate(("a1", "a2", "a3"))]
    jobs = [x for j in jobs for x in (j, {"id": f"robust-{j['id']}", "kind": "robustness", "of": j["id"]})]
    jobs.append({"id": "c", "regime": "r", "config": "c.yaml", "variant": "encoder_only", "seed": 0})
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps({"name": "t", "jobs": jobs}))
    st = run_queue.State(tmp_path / "state")
    for job_id, payload in {"a1": {"seconds": 100.0}, "a3": {"seconds": 300.0},
                            "robust-a1": {"seconds": 250.0, "retrained": {"seconds": 100.0}}}.items():
        run_queue.write_json(st.result_path(job_id), payload)
    planned = run_queue.load_plan(plan)["jobs"]
    left = run_queue.time_left(st, planned, {j["id"]: st.result(j["id"]) for j in planned})
    assert left == {"seconds": 200.0 + 150.0 + (150.0 + 200.0), "unmeasured": ["c"]}


@pytest.mark.skipif(not DATA.is_dir(), reason="needs the real ModelNet10 in ../shared/data")
def test_a_new_machine_restores_finished_jobs_and_trains_a_lost_run_again(tmp_path: Path, capsys) -> None:
    """A state folder lost with its machine: ``restore`` brings the finished train job back from a
    collect file (skipped by ``run`` from then on); its robustness job finds no run folder, trains the
    run again (the same model to the last bit on this CPU) and then evaluates it. A job the plan now
    defines differently is not restored."""
    tiny = TINY
    jobs = [{"id": "b", "regime": "tiny", "config": "configs/modelnet10_minilm.yaml", "variant": "appt", "seed": 0,
             "overrides": tiny}, {"id": "robust-b", "kind": "robustness", "of": "b"}]
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps({"name": "t", "jobs": jobs}))
    old, new = tmp_path / "old", tmp_path / "new"
    assert run_queue.main(["--plan", str(plan), "--state", str(old), "run", "--only", "^b$", "--no-backoff"]) == 0
    collected = tmp_path / "collected.json"
    assert run_queue.main(["--plan", str(plan), "--state", str(old), "collect", "--out", str(collected)]) == 0
    recorded = run_queue.State(old).result("b")

    common = ["--plan", str(plan), "--state", str(new)]
    assert run_queue.main([*common, "restore", str(collected)]) == 0
    st = run_queue.State(new)
    assert {k: v for k, v in st.result("b").items() if k != "restored_from"} == recorded
    assert [run_queue.job_state(st, j, None, 4) for j in run_queue.load_plan(plan)["jobs"]] == ["done", "pending"]
    assert run_queue.main([*common, "run", "--no-backoff"]) == 0
    assert st.sessions("b") == []  # the train job itself was not run again...
    rob = st.result("robust-b")  # ...its robustness job trained it, then evaluated it
    assert [s.get("retrain") for s in rob["sessions"]] == ["b", None]
    assert rob["retrained"]["same"] and rob["retrained"]["final_overall_acc"] == recorded["final"]["overall_acc"]
    assert rob["summary"]["clean"] == recorded["final"]["overall_acc"]
    assert run_queue.main([*common, "restore", str(collected)]) == 0  # already there: nothing written
    assert "restored 0 finished jobs" in capsys.readouterr().out

    jobs[0]["overrides"] = [*tiny, "train.lr=0.01"]  # b means another run now
    plan.write_text(json.dumps({"name": "t", "jobs": jobs}))
    assert run_queue.main(["--plan", str(plan), "--state", str(tmp_path / "other"), "restore", str(collected)]) == 1
    assert "not restored (not in the plan as recorded): b" in capsys.readouterr().out
    assert not run_queue.State(tmp_path / "other").result_path("b").exists()
