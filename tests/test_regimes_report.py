"""benchmarks/regimes_report.py: the regimes page is the script's output from a committed JSON."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import regimes_report
import run_queue

PAGE = ROOT / "docs" / "regimes.md"


def _run(variant: str, seed: int, oa: float) -> dict:
    return {"id": f"{variant}-{seed}", "regime": "minilm_x", "variant": variant, "seed": seed,
            "overrides": ["data.subset=10/class"], "final": {"overall_acc": oa, "mean_class_acc": oa},
            "trainable_params": 725196, "seconds": 10.0, "commits": ["4b0a2aa5"], "dirty": False}


def _payload(results: list[dict]) -> dict:
    return {"written": "now", "complete": False, "jobs_done": len(results), "jobs_pending": ["x"],
            "metric": "test OA", "summary": run_queue.summarize_regimes(results, [], use_scipy=False)}


def _paired_row(text: str, contrast: str) -> list[str]:
    line = next(l for l in text.splitlines() if l.startswith(f"| `{contrast}`"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_states_the_paired_differences_and_which_side_of_zero() -> None:
    # appt beats encoder_only by 2, 2.5, 3 points (95 % CI [+1.26, +3.74]) and loses to random_backbone by 1, 1.5, 2
    results = [_run("appt", s, 0.80 + 0.01 * s) for s in range(3)]
    results += [_run("encoder_only", s, 0.80 + 0.01 * s - 0.02 - 0.005 * s) for s in range(3)]
    results += [_run("random_backbone", s, 0.80 + 0.01 * s + 0.01 + 0.005 * s) for s in range(3)]
    text = regimes_report.report(_payload(results), "benchmarks/results/regimes_test.json")
    enc = _paired_row(text, "appt - encoder_only")
    assert enc[1] == "3" and enc[2] == "+2.00 / +2.50 / +3.00" and enc[3] == "+2.50 [+1.26, +3.74]" and enc[4] == "above 0"
    rnd = _paired_row(text, "appt - random_backbone")
    assert rnd[2] == "-1.00 / -1.50 / -2.00" and rnd[4] == "below 0"
    two = regimes_report.report(_payload([r for r in results if r["seed"] < 2]), "benchmarks/results/regimes_test.json")
    assert _paired_row(two, "appt - encoder_only")[4] == "2 pair(s): no verdict"


def test_a_regime_that_changes_one_thing_is_compared_with_its_base_variant_by_variant() -> None:
    # run_queue.ACROSS: the paper-readout regime against appt's readout; appt gains 2, 2.5, 3 points,
    # encoder_only has seed 1 in both (one pair), random_backbone is absent from the base regime
    changed, base = next(iter(run_queue.ACROSS.items()))
    results = [{**_run("appt", s, 0.82 + 0.005 * s), "regime": changed} for s in range(3)]
    results += [{**_run("encoder_only", 1, 0.84), "regime": changed}, {**_run("random_backbone", 0, 0.8), "regime": changed}]
    results += [{**_run("appt", s, 0.80), "regime": base} for s in range(3)] + [{**_run("encoder_only", 1, 0.85), "regime": base}]
    payload = _payload(results)
    assert "across" not in payload["summary"][base]["data.subset=10/class"]
    text = regimes_report.report(payload, "benchmarks/results/regimes_test.json")
    row = _paired_row(text, f"appt: {changed} - {base}")
    assert row[1] == "3" and row[2] == "+2.00 / +2.50 / +3.00" and row[4] == "above 0"
    assert _paired_row(text, f"encoder_only: {changed} - {base}")[2:] == ["-1.00", "-1.00 (n = 1)", "1 pair(s): no verdict"]
    assert f"`random_backbone: {changed}" not in text


def test_variant_rows_show_the_mean_learning_curve_over_the_seeds_that_reached_each_evaluation() -> None:
    # appt seeds 0-2 evaluated at epochs 20 and 40; seed 2 also at 30 (left out: not every seed has it)
    results = [{**_run("appt", s, 0.80), "evals": [{"epoch": 20, "overall_acc": 0.70 + 0.01 * s},
                                                  *([{"epoch": 30, "overall_acc": 0.9}] if s == 2 else []),
                                                  {"epoch": 40, "overall_acc": 0.80}]} for s in range(3)]
    results += [_run("encoder_only", s, 0.79) for s in range(3)]
    payload = json.loads(json.dumps(_payload(results)))  # as read back from the collect file
    text = regimes_report.report(payload, "benchmarks/results/regimes_test.json")
    assert _paired_row(text, "appt")[4] == "71.00 @ 20 / 80.00 @ 40"
    assert _paired_row(text, "encoder_only")[4] == "-"


def test_variant_rows_show_how_well_each_variant_fits_its_training_shapes() -> None:
    results = [{**_run("appt", s, 0.80), "train_last_epoch": {"epoch": 60, "loss": 1.0, "acc": 0.97 + 0.01 * s}}
               for s in range(3)]
    results += [_run("encoder_only", s, 0.79) for s in range(3)]  # no training figure: "-"
    text = regimes_report.report(json.loads(json.dumps(_payload(results))), "benchmarks/results/regimes_test.json")
    assert _paired_row(text, "appt")[6] == "98.00" and _paired_row(text, "encoder_only")[6] == "-"


def test_answer_names_the_settings_where_appt_beats_both_and_where_it_is_below() -> None:
    # regime minilm_x: appt above both (+2 to +3 points); regime minilm_y: level with random_backbone (+-0.5),
    # below encoder_only (-2, -1.5, -1); regime minilm_z: two seeds only
    def regime(name: str, enc: float, rnd: float, seeds: int = 3) -> list[dict]:
        out = []
        for s in range(seeds):
            out += [{**_run("appt", s, 0.80 + 0.01 * s), "regime": name},
                    {**_run("encoder_only", s, 0.80 + 0.01 * s - enc - 0.005 * s), "regime": name},
                    {**_run("random_backbone", s, 0.80 + 0.01 * s - rnd + 0.005 * (s % 2 * 2 - 1)), "regime": name}]
        return out

    results = (regime("minilm_x", 0.02, 0.025) + regime("minilm_y", -0.02, 0.0) + regime("minilm_z", 0.02, 0.02, seeds=2)
               + regime("minilm_w", 0.02, 0.0))  # w: above encoder_only only
    text = regimes_report.report(_payload(results), "benchmarks/results/regimes_test.json")
    answer = text.split("## Answer so far", 1)[1].split("###", 1)[0]
    both = next(line for line in answer.splitlines() if line.startswith("Where the pretrained"))
    assert "minilm_x 10/class, test OA: `appt - encoder_only` +2.50 [" in both
    assert "minilm_y" not in both and "minilm_w" not in both
    below = next(line for line in answer.splitlines() if line.startswith("Where it is *below*"))
    assert "minilm_y 10/class, test OA: `appt - encoder_only` -1.50 [" in below and "random_backbone" not in below
    assert "minilm_z 10/class, test OA: `appt - encoder_only` (2 pair(s))" in answer
    none = regimes_report.report(_payload(regime("minilm_y", -0.02, 0.0)), "benchmarks/results/regimes_test.json")
    assert "intervals above 0): **nowhere** among the settings measured." in none


def test_robustness_pass_is_reported_as_paired_differences_with_the_drop_and_each_kind(tmp_path: Path) -> None:
    # appt keeps 3, 4, 5 points more under corruption than encoder_only and loses 1, 1.5, 2 points less
    # of its clean OA; on jitter it keeps 1 point more for every seed (zero-width interval)
    results = [_run(v, s, 0.80) for v in ("appt", "encoder_only", "random_backbone") for s in range(3)]

    def rob(variant: str, seed: int, corrupted: float, drop: float, jitter: float) -> dict:
        return {"of": f"{variant}-{seed}", "regime": "minilm_x", "variant": variant, "seed": seed,
                "summary": {"mean_corrupted": corrupted, "mean_drop": drop, "per_kind_mean": {"jitter": jitter, "rotate": 0.5}}}

    robs = [rob("appt", s, 0.60 + 0.01 * s, 0.10, 0.70) for s in range(3)]
    robs += [rob("encoder_only", s, 0.57, 0.11 + 0.005 * s, 0.69) for s in range(3)]
    payload = {**_payload(results), "summary": run_queue.summarize_regimes(results, robs, use_scipy=False)}
    text = regimes_report.report(payload, "benchmarks/results/regimes_test.json")
    row = _paired_row(text.split("Under corruption", 1)[1], "appt - encoder_only")
    assert row[1] == "3" and row[2].startswith("+4.00 [") and row[3] == "above 0"
    assert row[4].startswith("-1.50 [") and row[5] == "below 0"
    jitter = next(l for l in text.splitlines() if l.startswith("| jitter"))
    assert "+1.00" in jitter and "above 0" in jitter
    assert "`appt - random_backbone`" not in text.split("Under corruption", 1)[1]  # no robustness pass for it
    variants = _paired_row(text, "appt")
    assert variants[7] == "60.00 / 61.00 / 62.00 (seeds 0, 1, 2)" and _paired_row(text, "random_backbone")[7] == "not run yet"
    regimes_report.plot(payload, tmp_path / "paired.png")  # clean and corrupted rows
    assert (tmp_path / "paired.png").read_bytes()[:4] == b"\x89PNG"


def test_committed_regimes_page_is_the_scripts_output_of_the_json_it_names() -> None:
    assert PAGE.is_file(), "docs/regimes.md missing: run benchmarks/regimes_report.py"
    text = PAGE.read_text()
    source = re.search(r"\]\(\.\./(benchmarks/results/regimes_[^)]+\.json)\)", text)
    assert source, "docs/regimes.md does not name its JSON"
    payload = json.loads((ROOT / source.group(1)).read_text())
    assert text == regimes_report.report(payload, source.group(1)), "docs/regimes.md is stale: rerun regimes_report.py"


def test_a_collect_file_outside_the_repository_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the page links to its JSON by a repository path; one outside cannot be linked (was a ValueError traceback)
    outside = tmp_path / "regimes_x.json"
    outside.write_text(json.dumps(_payload([_run("appt", 0, 0.8)])))
    with pytest.raises(SystemExit) as stop:
        regimes_report.main([str(outside)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(outside) in err and "not inside the repository" in err


def test_page_says_which_robustness_passes_evaluated_a_retrained_run_and_whether_it_matched() -> None:
    results = [_run(v, 0, 0.80) for v in ("appt", "encoder_only")]
    payload = {**_payload(results), "robustness": [
        {"of": "appt-0", "retrained": {"same": True, "final_overall_acc": 0.80, "recorded_overall_acc": 0.80}},
        {"of": "encoder_only-0", "retrained": {"same": False, "final_overall_acc": 0.81, "recorded_overall_acc": 0.80}},
        {"of": "random_backbone-0"}]}
    text = regimes_report.report(payload, "benchmarks/results/regimes_test.json")
    note = next(line for line in text.splitlines() if "trained again" in line)
    assert note.startswith("2 robustness pass(es)") and "1 of them reproduced" in note
    assert "`encoder_only-0` 80.00 % recorded, 81.00 % again" in note and "appt-0" not in note
    assert "trained again" not in regimes_report.report(_payload(results), "benchmarks/results/regimes_test.json")


def test_page_says_which_cpu_kernels_the_jobs_ran_on() -> None:
    def job(*isas: str | None) -> dict:
        return {"sessions": [{"machine": {"torch_cpu_capability": isa} if isa else {}} for isa in isas]}

    payload = {**_payload([]), "runs": [job("AVX2"), job("AVX2", "AVX2"), job(None), job("AVX2", "AVX512")],
               "robustness": [job("AVX2")]}
    note = regimes_report.arithmetic_note(payload)
    assert note.startswith("CPU kernels") and "3 job(s) on AVX2 kernels" in note
    assert "1 job(s) on AVX2 + AVX512 kernels" in note and "1 job(s) not recorded" in note
    assert note.index("AVX2 kernels") < note.index("not recorded")
    assert regimes_report.arithmetic_note({**payload, "runs": []}).count("job(s)") == 1
    assert note in regimes_report.report(payload, "benchmarks/results/regimes_test.json")
