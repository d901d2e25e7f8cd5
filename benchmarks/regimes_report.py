"""Turn a ``run_queue.py collect`` file (``regimes_<date>.json``) into the docs' tables and plot.

    python benchmarks/regimes_report.py benchmarks/results/regimes_DATE.json \
        --out docs/regimes.md --plot docs/regimes_paired.png

Why a script: the answer to "when does the frozen backbone help?" is a set of paired differences
with intervals, and hand-copied figures drift from their JSON. ``docs/regimes.md`` is this script's
output, and ``tests/test_regimes_report.py`` fails when the committed page differs from what the
script writes from the JSON the page names.

First the answer, read off the intervals (``answer``): the settings where the pretrained backbone
beats both other variants, those where it is below one, those with too few pairs. Then one table per
regime and data setting: each variant's last-epoch test OA per seed, mean ± sd, its mean training
accuracy in the last epoch (augmented clouds, train mode: did it fit its training shapes?) and
trained parameters; then the paired differences ``appt - encoder_only`` and
``appt - random_backbone`` (per seed, mean, 95 % Student-t interval) and, where the robustness pass
ran, the same for the accuracy under corruption, its drop from clean and each corruption kind; for a
regime that changes one thing of another (``run_queue.ACROSS``), each variant's difference between the
two, paired by seed. The plot shows
each backbone contrast with its interval, one row per regime, contrast and measure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pct(x: float | None, sign: bool = False) -> str:
    """A fraction as percent (points) with two decimals; ``-`` when absent."""
    return "-" if x is None else f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}"


def interval(p: dict[str, Any]) -> str:
    """``mean [low, high]`` in points, or ``mean (n = 1)`` when one pair gives no interval."""
    ci = p["ci95"]
    return f"{pct(p['mean'], True)} [{pct(ci[0], True)}, {pct(ci[1], True)}]" if ci else f"{pct(p['mean'], True)} (n = 1)"


MIN_PAIRS = 3  # below this an interval says little (2 pairs: 1 degree of freedom; equal diffs: zero width)


def verdict(p: dict[str, Any]) -> str:
    """Which side of zero the 95 % interval lies on (no verdict from fewer than ``MIN_PAIRS`` pairs)."""
    ci = p["ci95"]
    if p["n"] < MIN_PAIRS or not ci:
        return f"{p['n']} pair(s): no verdict"
    return "above 0" if ci[0] > 0 else "below 0" if ci[1] < 0 else "includes 0"


def cell_section(regime: str, cell: str, entry: dict[str, Any]) -> str:
    """The markdown of one regime and data setting (see the module doc)."""
    rows = []
    for name, v in entry["variants"].items():
        per_seed = " / ".join(pct(a) for a in v["overall_acc"])
        spread = f" ± {pct(v['sd_overall_acc'])}" if v["sd_overall_acc"] is not None else ""
        corrupted = (" / ".join(pct(a) for a in v["mean_corrupted_acc"]) + f" (seeds {', '.join(map(str, v['robustness_seeds']))})"
                     if v.get("mean_corrupted_acc") else "not run yet")
        curve = v.get("curve") or {}
        rows.append([f"`{name}`", ", ".join(map(str, v["seeds"])), per_seed, f"{pct(v['mean_overall_acc'])}{spread}",
                     " / ".join(f"{pct(a)} @ {ep}" for ep, a in curve.items()) or "-",
                     pct(v["mean_class_acc"]), pct(v.get("mean_train_acc_last_epoch")), corrupted,
                     f"{v['trainable_params']:,}", f"{v['seconds_per_run']:.0f}"])
    variants = markdown_table(["variant", "seeds", "test OA per seed", "mean ± sd", "mean test OA @ epoch",
                               "mean class acc.", "mean train acc., last epoch", "OA under corruption per seed",
                               "trained params", "s per run"], rows)
    prow = []
    for name, p in entry["paired"].items():
        oa = p["overall_acc"]
        prow.append([f"`{name}`", len(p["seeds"]), " / ".join(pct(d, True) for d in oa["diffs"]), interval(oa),
                     verdict(oa), interval(p["mean_class_acc"])])
    paired = markdown_table(["paired difference", "pairs", "OA, per seed (points)", "OA mean [95 % CI]",
                             "interval", "mean class acc. [95 % CI]"],
                            prow) if prow else "No seed has both `appt` and another variant finished yet: no paired difference."
    paired += robustness_section(entry)
    across = ""
    if entry.get("across"):  # the same variant in another regime, paired by seed (run_queue.ACROSS)
        arow = [[f"`{name}`", len(p["seeds"]), " / ".join(pct(d, True) for d in p["overall_acc"]["diffs"]),
                 interval(p["overall_acc"]), verdict(p["overall_acc"])] for name, p in entry["across"].items()]
        across = ("\n\nThe same variant in the two regimes (an interval above 0: higher in this one):\n\n" +
                  markdown_table(["variant: regime difference", "pairs", "OA, per seed (points)",
                                  "OA mean [95 % CI]", "interval"], arow))
    dirty = f"; {entry['dirty_runs']} run(s) from a dirty tree" if entry["dirty_runs"] else ""
    commits = ", ".join(c[:7] for c in entry["commits"])
    return (f"### {regime} — {cell}\n\nCommit(s) {commits}{dirty}.\n\n{variants}\n\n{paired}{across}\n")


def robustness_section(entry: dict[str, Any]) -> str:
    """The robustness pass's paired differences (``run_queue.paired_robustness``), when any pair has one."""
    pairs = {name: p for name, p in entry["paired"].items() if p.get("mean_corrupted_acc")}
    if not pairs:
        return ""
    rows = [[f"`{name}`", p["mean_corrupted_acc"]["n"], interval(p["mean_corrupted_acc"]), verdict(p["mean_corrupted_acc"]),
             interval(p["mean_drop"]), verdict(p["mean_drop"])] for name, p in pairs.items()]
    kinds = list(dict.fromkeys(k for p in pairs.values() for k in p["per_kind_corrupted_acc"]))
    krows = [[k, *[f"{interval(p['per_kind_corrupted_acc'][k])}, {verdict(p['per_kind_corrupted_acc'][k])}"
                   if k in p["per_kind_corrupted_acc"] else "-" for p in pairs.values()]] for k in kinds]
    return ("\n\nUnder corruption (`appt eval --corrupt all`: 7 kinds x 5 levels, last checkpoint). OA under "
            "corruption: above 0, `appt` keeps more; drop (clean minus corrupted OA): *below* 0, `appt` loses "
            "fewer points, i.e. is more robust whatever its clean OA:\n\n" +
            markdown_table(["paired difference", "pairs", "OA under corruption [95 % CI]", "interval",
                            "drop [95 % CI]", "interval"], rows) +
            "\n\nPer corruption kind (mean over its 5 levels; seven intervals per contrast, so one may exclude 0 "
            "by chance alone):\n\n" + markdown_table(["kind", *[f"`{n}`" for n in pairs]], krows))


MEASURES = (("test OA", "overall_acc"), ("OA under corruption", "mean_corrupted_acc"))


def answer(payload: dict[str, Any]) -> str:
    """The page's verdict, read off the paired intervals: the settings where the pretrained backbone
    beats both other variants (both intervals above 0), those where it is below one, and those with
    too few pairs for a verdict; for clean test OA and for OA under corruption."""
    wins, losses, open_ = [], [], []
    for regime, cells in payload["summary"].items():
        for cell, entry in cells.items():
            where = f"{regime} {cell.removeprefix('data.subset=')}"
            for measure, key in MEASURES:
                pairs = {name: p[key] for name, p in entry["paired"].items() if p.get(key)}
                if not pairs:
                    continue
                verdicts = {name: verdict(p) for name, p in pairs.items()}
                if len(pairs) == 2 and all(v == "above 0" for v in verdicts.values()):
                    wins.append(f"{where}, {measure}: " + "; ".join(f"`{n}` {interval(p)}" for n, p in pairs.items()))
                losses += [f"{where}, {measure}: `{n}` {interval(pairs[n])}" for n, v in verdicts.items() if v == "below 0"]
                open_ += [f"{where}, {measure}: `{n}` ({pairs[n]['n']} pair(s))" for n, v in verdicts.items()
                          if v.endswith("no verdict")]
    lines = ["## Answer so far", "",
             "Where the pretrained frozen backbone beats **both** `encoder_only` and `random_backbone` (both 95 % "
             "intervals above 0): " + ("; ".join(wins) if wins else "**nowhere** among the settings measured."), ""]
    if losses:
        lines += ["Where it is *below* another variant (interval below 0): " + "; ".join(losses) + ".", ""]
    if open_:
        lines += [f"Fewer than {MIN_PAIRS} pairs, no verdict yet: " + "; ".join(open_) + ".", ""]
    return "\n".join(lines)


def retrained_note(payload: dict[str, Any]) -> str:
    """Robustness passes whose run was trained again (its folder lost with a machine, see
    ``run_queue.py restore``): how many reproduced the recorded last-epoch test OA exactly, and which not."""
    again = [r for r in payload.get("robustness", []) if r.get("retrained")]
    if not again:
        return ""
    differ = [f"`{r['of']}` {pct(r['retrained']['recorded_overall_acc'])} % recorded, "
              f"{pct(r['retrained']['final_overall_acc'])} % again" for r in again if not r["retrained"]["same"]]
    return (f"{len(again)} robustness pass(es) evaluated a run trained again, same config and seed, its run "
            f"folder having been lost with a machine; {len(again) - len(differ)} of them reproduced the recorded "
            "last-epoch test OA exactly" + (": the others, whose robustness is that of the retrained model, "
                                             + "; ".join(differ) if differ else "") + ".\n")


def arithmetic_note(payload: dict[str, Any]) -> str:
    """Which CPU kernels the jobs ran on (AVX2 and AVX-512 round differently; sessions record it since
    2026-12-07): jobs by the set of instruction sets their sessions recorded, unrecorded ones last."""
    kinds: dict[str, int] = {}
    for record in payload.get("runs", []) + payload.get("robustness", []):
        isas = {s.get("machine", {}).get("torch_cpu_capability") for s in record.get("sessions", [])}
        key = " + ".join(sorted(isas)) if isas and None not in isas else "not recorded"
        kinds[key] = kinds.get(key, 0) + 1
    if not kinds:
        return ""
    parts = [f"{n} job(s) {k if k == 'not recorded' else 'on ' + k + ' kernels'}"
             for k, n in sorted(kinds.items(), key=lambda kv: kv[0] == "not recorded")]
    return ("CPU kernels (torch's instruction set in the job's sessions): " + ", ".join(parts)
            + (" (sessions before 2026-12-07 did not record it; a retrained run that reproduces its recorded "
               "OA shows its kernels matched)" if "not recorded" in kinds else "") + ".\n")


def report(payload: dict[str, Any], source: str) -> str:
    """The whole page for ``payload`` (a ``collect`` file) read from ``source`` (a repo path)."""
    done, pending = payload["jobs_done"], len(payload["jobs_pending"])
    state = "complete" if payload["complete"] else f"**partial**: {done} jobs finished, {pending} pending"
    head = (f"# Regimes: where does the frozen backbone pay off?\n\n"
            f"Generated by `benchmarks/regimes_report.py` from [{Path(source).name}](../{source}) "
            f"(written {payload['written']}; {state}). Do not edit by hand: rerun the script.\n\n"
            f"Metric: {payload['metric']}. Differences are in accuracy points; an interval above 0 means the "
            f"pretrained frozen backbone (`appt`) beat the other variant at 95 % confidence. "
            f"`s per run` is wall time on the shared 2-core machine, including any time the queue was paused.\n")
    sections = [cell_section(regime, cell, entry)
                for regime, cells in payload["summary"].items() for cell, entry in cells.items()]
    notes = filter(None, [retrained_note(payload), arithmetic_note(payload)])
    return "\n".join([head, *notes, answer(payload), *sections])


def plot(payload: dict[str, Any], out: Path) -> None:
    """Paired OA differences with 95 % intervals, one row per regime, setting, contrast and measure
    (clean test OA; OA under corruption where the robustness pass ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{regime} {cell.removeprefix('data.subset=')}\n{name}" + ("" if key == "overall_acc" else ", corrupted"), p[key])
            for regime, cells in payload["summary"].items() for cell, e in cells.items()
            for name, p in e["paired"].items() for _, key in MEASURES if p.get(key)]
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(rows) + 1.2))
    for i, (_, p) in enumerate(rows):
        lo, hi = p["ci95"] or (p["mean"], p["mean"])
        ax.plot([100 * lo, 100 * hi], [i, i], color="tab:blue")
        ax.plot(100 * p["mean"], i, "o", color="tab:blue")
        ax.plot([100 * d for d in p["diffs"]], [i] * len(p["diffs"]), "x", color="gray", ms=4)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference in test OA, clean or under corruption (points)\nmean, 95 % CI, per seed (x)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("collect_file", type=Path)
    p.add_argument("--out", type=Path, help="markdown page (default: print it)")
    p.add_argument("--plot", type=Path, help="PNG of the paired differences")
    args = p.parse_args(argv)
    where = args.collect_file.resolve()
    if not where.is_relative_to(ROOT):
        p.error(f"{args.collect_file}: not inside the repository {ROOT} (the page links to it; "
                "collect into benchmarks/results/)")
    payload = json.loads(where.read_text())
    source = where.relative_to(ROOT).as_posix()
    text = report(payload, source)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    if args.plot:
        plot(payload, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
