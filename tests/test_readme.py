"""The README's demo figures are those of the newest committed demo run (benchmarks/demo.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def newest_demo() -> dict:
    runs = sorted((ROOT / "benchmarks" / "results").glob("demo_*.json"))
    assert runs, "no benchmarks/results/demo_*.json: run python benchmarks/demo.py"
    return json.loads(runs[-1].read_text())


def test_readme_demo_figures_equal_the_newest_demo_json() -> None:
    demo = newest_demo()
    summary, last = demo["summary"], demo["summary"]["last_epoch"]
    readme = (ROOT / "README.md").read_text()
    expected = (f"{summary['trainable_params']:,} of {summary['total_params']:,} parameters trained "
                f"({100 * summary['trainable_params'] / summary['total_params']:.2f} %), test overall accuracy "
                f"{100 * last['overall_acc']:.2f} %, mean class accuracy {100 * last['mean_class_acc']:.2f} %")
    flat = re.sub(r"\s+", " ", readme.replace("**", ""))
    assert expected in flat, f"README does not quote the demo run: expected '{expected}'"
    assert demo["command"] in readme.replace("HF_HUB_OFFLINE=1 ", "")


def test_the_demo_json_was_run_with_todays_demo_config() -> None:
    """A changed demo config makes the quoted figures stale: every setting the run recorded must
    still be the config's (the data root aside, which is where the data lay on that machine)."""
    from appt.training.config import load_config

    demo = newest_demo()
    today = load_config(ROOT / demo["command"].split("--config ")[1]).to_dict()
    for section, ran in demo["resolved_config"].items():
        if isinstance(ran, dict):
            changed = {k: (v, today[section].get(k)) for k, v in ran.items() if k != "root" and today[section].get(k) != v}
        else:
            changed = {} if ran == today[section] else {section: (ran, today[section])}
        assert not changed, f"{section}: the demo ran with other settings (ran, today): {changed}"
    assert demo["summary"]["last_epoch"]["epoch"] == today["train"]["epochs"]


def test_readme_regime_figures_are_those_of_the_regimes_page_and_its_json() -> None:
    """The README's answer to "does the backbone pay off?" quotes docs/regimes.md: the same collect
    file, and every ``mean ... [low, high]`` it gives stands on that page."""
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text()).replace("−", "-")
    page = (ROOT / "docs" / "regimes.md").read_text()
    named = set(re.findall(r"regimes_[\w.-]+\.json", readme))
    assert named and named <= set(re.findall(r"regimes_[\w.-]+\.json", page)), named
    quoted = re.findall(r"([+-]?\d+\.\d\d)(?:(?!\d+\.\d\d)[^\[\]]){0,60}\[([+-]?\d+\.\d\d), ([+-]?\d+\.\d\d)\]", readme)
    assert quoted, "the README quotes no interval"
    for mean, low, high in quoted:
        figure = f"{float(mean):+.2f} [{float(low):+.2f}, {float(high):+.2f}]"
        assert figure in page, f"README quotes {figure}, not on docs/regimes.md"
