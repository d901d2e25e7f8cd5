"""The benchmark scripts (benchmarks/) run end to end in their --quick mode, so they cannot rot,
and the references they compare against are right."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_geometry  # noqa: E402
import common  # noqa: E402


def _run(cmd: list[str], **env: str) -> None:
    # PYTHON: the scripts must use the interpreter running the tests, not whichever `python` is on PATH.
    env = {**os.environ, "PYTHON": sys.executable, **env}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_gpu_script_runs_cost_and_geometry_benchmarks_on_cpu(tmp_path: Path) -> None:
    _run(["bash", str(BENCH / "gpu.sh")], DEVICE="cpu", QUICK="1", OUT=str(tmp_path))
    cost = json.loads((tmp_path / "cost_cpu_no.json").read_text())
    res = cost["results"]["tiny"]
    memory_rows = {"appt+ckpt_backbone", "appt+ckpt_all", "appt+ckpt_selective", "appt+ckpt_all+bf16"}  # issue 17's settings
    assert set(res["step_seconds"]) == {"appt", "full_finetune", "lora", "encoder_only"} | memory_rows
    assert set(res["vs_plain_variant"]) == memory_rows and res["vs_plain_variant"]["appt+ckpt_all"]["plain"] == "appt"
    assert res["memory"]["appt+ckpt_all+bf16"]["state"]["weights"] < res["memory"]["appt"]["state"]["weights"]
    assert all(s["median"] > 0 and s["n"] == 2 for s in res["step_seconds"].values())
    # full fine-tuning saves (about) the whole model, appt only its trained part
    ckpt = res["checkpoint"]
    assert 0.95 < ckpt["full_finetune"]["fraction_of_full"] < 1.05
    assert ckpt["appt"]["bytes"] < ckpt["full_finetune"]["bytes"]
    memory = res["memory"]
    assert all(m["peak_bytes"] > 0 for m in memory.values())
    assert memory["full_finetune"]["state"]["adamw_moments"] > memory["appt"]["state"]["adamw_moments"]
    # the reported ratios are those of the raw timings in the same file (paired: median over rounds)
    raw = res["step_seconds_raw"]
    for variant, ratio in res["vs_full_finetune"].items():
        assert res["step_seconds"][variant]["median"] == statistics.median(raw[variant])
        paired = statistics.median(f / v for f, v in zip(raw["full_finetune"], raw[variant]))
        assert ratio["throughput_ratio"] == pytest.approx(paired, rel=1e-12)
        medians = res["step_seconds"]["full_finetune"]["median"] / res["step_seconds"][variant]["median"]
        assert ratio["throughput_ratio_of_medians"] == pytest.approx(medians, rel=1e-12)
    assert "tiny" in cost["goals"] and cost["machine"]["torch"] == torch.__version__

    geometry = json.loads((tmp_path / "geometry_cpu_no.json").read_text())
    for size in geometry["results"]:
        assert set(size["seconds"]) == {"appt", "fpsample", "fpsample_bucket", "brute_force"}
        for name, check in size["checks"].items():
            assert check["fps_greedy_gap_max"] <= 1e-5, name
            assert check["knn_distance_gap_vs_brute_force"] <= 1e-5, name
        assert size["checks"]["brute_force"]["fps_same_indices_as_appt"] == 1.0
        # the ratios are those of the raw per-round timings in the same file
        rounds = {name: [t["fps"] + t["knn"] for t in ts] for name, ts in size["seconds_raw"].items()}
        medians = {name: statistics.median(r) for name, r in rounds.items()}
        fastest = min(medians, key=medians.get)
        total = size["ratios"]["total"]
        assert total["fastest"] == fastest
        assert total["appt_over_fastest"] == pytest.approx(medians["appt"] / medians[fastest], rel=1e-12)
        paired = statistics.median(a / f for a, f in zip(rounds["appt"], rounds[fastest]))
        assert total["appt_over_fastest_paired"] == pytest.approx(paired, rel=1e-12)


def test_gpu_learning_script_runs_paired_variants_from_a_bundle_on_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu_learning.sh (issue 14's decisive GPU run) end to end on CPU at tiny size: a
    bundle of the real config with 20 real shapes, 1 epoch, appt and random_backbone (its random
    twin built from the pretrained bundle) side by side for one seed; the collector's JSON and the
    runs' tarball are all that lands in $OUT."""
    from appt.training.bundle import create_bundle
    from appt.training.config import load_config

    bundle, out = tmp_path / "bundle", tmp_path / "out"
    cfg = load_config(ROOT / "configs" / "modelnet10_minilm.yaml",
                      ["data.subset=2/class", "data.test_subset=10", "data.num_points=256", "data.batch_size=8",
                       f"data.options.cache_dir={tmp_path / 'cache'}"])
    create_bundle(cfg, bundle, progress=False)
    _run(["bash", str(BENCH / "gpu_learning.sh"), "--max-minutes", "5"], APPT_BUNDLE=str(bundle), OUT=str(out),
         WORK=str(tmp_path / "work"), EPOCHS="1", SEEDS="0", VARIANTS="appt random_backbone", EVAL_EVERY="1",
         NUM_WORKERS="0", OMP_NUM_THREADS="1")
    assert sorted(p.name for p in out.iterdir()) == ["gpu_learning.json", "gpu_learning_runs.tar.gz"]
    result = json.loads((out / "gpu_learning.json").read_text())
    assert result["complete"] and result["runs_finished"] == result["runs_planned"] == 2 and not result["runs_unfinished"]
    assert result["settings"]["precision"] == "no" and result["bundle"]["splits"]["train"]["shapes"] == 20
    runs = {r["id"]: r for r in result["runs"]}
    assert set(runs) == {"appt-s0", "random_backbone-s0"}
    for r in runs.values():
        assert r["rc"] == 0 and r["finished"] and len(r["evals"]) == 1 and r["summary"]["epochs"] == 1
        assert r["resolved_config"]["model"]["variant"] == r["variant"] and r["resolved_config"]["bundle"] == str(bundle)
    summary = result["summary"]
    assert set(summary["variants"]) == {"appt", "random_backbone"} and set(summary["paired"]) == {"appt - random_backbone"}
    diff = runs["appt-s0"]["final"]["overall_acc"] - runs["random_backbone-s0"]["final"]["overall_acc"]
    assert summary["paired"]["appt - random_backbone"]["overall_acc"]["diffs"] == [diff]
    with tarfile.open(out / "gpu_learning_runs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"./{i}/{f}" for i in runs for f in ("summary.json", "metrics.jsonl", "config.yaml")} <= names
    assert {f"./{i}.log" for i in runs} <= names and not any("checkpoints" in n for n in names)


def test_inference_benchmark_runs_appt_predict(tmp_path: Path) -> None:
    out = tmp_path / "inference.json"
    _run([sys.executable, str(BENCH / "bench_inference.py"), "--quick", "--out", str(out)], HF_HUB_OFFLINE="1")
    res = json.loads(out.read_text())["results"]
    assert res["cli_top1_agrees_with_library"] == 1.0  # the CLI ran on every file, as the library did
    assert res["cli_clouds_per_second_end_to_end"] > 0 and res["library_clouds_per_second"] > 0


def test_brute_force_reference_matches_appt_geometry_on_a_real_cloud() -> None:
    from appt.geometry import farthest_point_sample, gather, knn

    cloud = bench_geometry.load_clouds(512, 1, seed=3)[0]
    ours = farthest_point_sample(torch.from_numpy(cloud)[None], 64)
    ref = bench_geometry.fps_brute(cloud, 64, bench_geometry.start_index(cloud))
    assert np.array_equal(ours[0].numpy(), ref)
    nbr = knn(gather(torch.from_numpy(cloud)[None], ours), torch.from_numpy(cloud)[None], 8)[0].numpy()
    ref_nbr = bench_geometry.knn_brute(cloud, cloud[ref], 8)
    d = lambda idx: ((cloud[idx] - cloud[ref][:, None]) ** 2).sum(-1)  # noqa: E731
    assert np.allclose(d(nbr), d(ref_nbr), atol=1e-6)
    assert bench_geometry.greedy_gap(cloud, ref) == 0.0
    assert bench_geometry.greedy_gap(cloud, ref[::-1].copy()) > 0.1  # a wrong order is caught


def test_interleaved_rotates_the_order_and_drops_warmup_rounds() -> None:
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n) or len(calls)) for name in "abc"}
    times = common.interleaved(fns, repeats=2, warmup=1)
    assert calls == list("abc" "bca" "cab")
    assert times == {"a": [6, 8], "b": [4, 9], "c": [5, 7]}
    assert common.paired_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 1.0]) == 3.0


def test_reproduce_script_trains_configs_on_real_data_and_writes_the_table(tmp_path: Path) -> None:
    """reproduce.sh end to end, one epoch, on the real ModelNet40 'bench' subset (all it has is
    one class, so the figure itself means nothing); a config whose data is absent gets a row
    that says so instead of vanishing from the table."""
    table = tmp_path / "results.md"
    shrink = ("model.centers=[64,32] model.neighbors=[8] model.widths=[64,-1] model.blocks=[1,1] "
              "data.num_points=256 data.batch_size=8 train.checkpoint_every=0")
    _run(["bash", "benchmarks/reproduce.sh", str(ROOT.parent / "shared" / "data"), str(tmp_path / "runs")],
         CONFIGS="modelnet40_minilm scanobjectnn_obj_bg_minilm", EPOCHS="1", SET=shrink, RESULTS=str(table))
    rows = [line for line in table.read_text().splitlines() if line.startswith("| modelnet40_minilm")
            or line.startswith("| scanobjectnn_obj_bg_minilm")]
    assert len(rows) == 2, table.read_text()
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2] == "hf_text:minilm" and cells[3] == "appt" and cells[4] == "1" and cells[5] == "overall_acc"
    summary = json.loads((tmp_path / "runs" / "modelnet40_minilm" / "summary.json").read_text())
    assert cells[7] == f"{100 * summary['last_epoch']['overall_acc']:.2f}"
    assert cells[8] == f"{summary['trainable_params']:,} / {summary['total_params']:,}"
    missing = [c.strip() for c in rows[1].strip("|").split("|")]
    assert missing[6] == "not run" and "ScanObjectNN" in missing[7]


def _shard(variant: str, accs: list[float], overrides: list[str]) -> dict:
    runs = [{"variant": variant, "seed": seed, "seconds": 1.0, "trainable_params": 5, "total_params": 9,
             "curve": [{"epoch": 1, "overall_acc": a / 2, "mean_class_acc": a / 3}, {"epoch": 2, "overall_acc": a, "mean_class_acc": a / 2}],
             "last": {"epoch": 2, "overall_acc": a, "mean_class_acc": a / 2}, "best_overall_acc": a}
            for seed, a in enumerate(accs)]
    settings = {"config": "c.yaml", "epochs": 2, "train_subset": 8, "test": "all 908", "seeds": [0, 1],
                "overrides": overrides, "variants": [variant], "scored_on": "test"}
    return {"machine": {"cpu": "x"}, "settings": settings, "runs": runs}


def test_learning_benchmark_merges_shards_and_refuses_unlike_ones(tmp_path: Path) -> None:
    import bench_learning

    for name, shard in {"a": _shard("encoder_only", [0.5, 0.7], []), "b": _shard("appt", [0.8, 0.9], []),
                        "c": _shard("appt", [0.8, 0.9], ["model.tune_norms=true"])}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(shard))
    out = tmp_path / "merged.json"
    plots = ["--plot", str(tmp_path / "p.png"), "--plot-backbone", str(tmp_path / "q.png")]
    assert bench_learning.main(["--merge", str(tmp_path / "b.json"), str(tmp_path / "a.json"), "--out", str(out), *plots]) == 0
    merged = json.loads(out.read_text())
    assert list(merged["summary"]) == ["appt", "encoder_only"]  # the order of appt.models.VARIANTS
    mean, std = merged["summary"]["encoder_only"]["last_overall_acc"]
    assert abs(mean - 0.6) < 1e-12 and abs(std - 0.1414213562) < 1e-9
    assert (tmp_path / "p.png").exists() and not (tmp_path / "q.png").exists()  # no random_backbone: no trio plot
    with pytest.raises(SystemExit, match="settings differ"):
        bench_learning.main(["--merge", str(tmp_path / "b.json"), str(tmp_path / "c.json"), "--out", str(out), *plots])
