"""Benchmark 2 — cost of one training step: ``appt`` vs ``full_finetune`` vs ``lora``.

Per backbone (12 x 768 ViT-B and 12 x 384 Point-MAE, random weights: the cost does not depend on
their values) and per variant, this measures

* step time: forward + label-smoothed loss + backward + grad clipping + AdamW step, as the
  training engine does it, on one batch of real ModelNet10 clouds; all variants' models live in
  one process and are timed in interleaved rounds (see ``common.interleaved``);
* peak memory: one fresh subprocess per variant runs two steps. On CPU: peak resident set size
  (``getrusage`` ``ru_maxrss``) minus the resident size after imports, i.e. everything the model,
  its gradients, optimizer state and the step's activations made the process hold at its worst.
  On CUDA: ``torch.cuda.max_memory_allocated`` (weights included);
* checkpoint size: the bytes ``save_pretrained`` writes vs a safetensors file of the whole model.

Rows are variants, optionally with the training step's memory settings appended
(``VARIANT+ckpt_backbone|+ckpt_all|+ckpt_selective`` = ``train.activation_checkpointing``, ``+bf16`` = frozen
weights stored and run in bf16, ``train.frozen_dtype`` on a bf16 run); such a row is also compared
with its plain variant from the same interleaved rounds (``vs_plain_variant``).

    python benchmarks/bench_cost.py                          # CPU, 1 thread
    python benchmarks/bench_cost.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

import common

LABEL_SMOOTHING, GRAD_CLIP = 0.2, 10.0  # the engine's defaults (training/config.py)
GOALS = {"throughput_ratio_min": 1.3, "peak_memory_ratio_max": 0.6, "checkpoint_fraction_max": 0.05}
# Issue 17: appt with checkpointing at <= 0.5x full fine-tuning's peak, step <= 1.3x appt without it.
LOW_MEMORY_ROW, LOW_MEMORY_GOALS = "appt+ckpt_selective", {"peak_memory_ratio_max": 0.5, "step_time_vs_appt_max": 1.3}
MEMORY_ROWS = "appt+ckpt_backbone,appt+ckpt_all,appt+ckpt_selective"
BF16_ROW = "appt+ckpt_all+bf16"  # default only on CUDA, a native-bf16 CPU or --quick (emulated at ViT-B: > 24 min)


def parse_args(argv: list[str] | None = None) -> Any:
    p = common.base_parser(__doc__.splitlines()[0], "cost_cpu.json")
    p.add_argument("--backbones", default="vit_b,point_mae")
    p.add_argument("--variants", default=None,
                   help="encoder_only (the trainable embedding + head alone) shows the floor every variant pays; "
                        "VARIANT+ckpt_backbone / +ckpt_all / +ckpt_selective / +bf16 add the memory settings")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--embedding", choices=sorted(common.EMBEDDINGS), help="default: cpu on CPU, default on CUDA")
    p.add_argument("--precision", choices=("no", "bf16"), default="no", help="bf16 = torch.autocast mixed precision")
    p.add_argument("--note", default="", help="free text stored with the settings (e.g. what else loaded the machine)")
    p.add_argument("--memory-worker", metavar="BACKBONE:VARIANT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.backbones, args.embedding, args.batch, args.points, args.repeats = "tiny", "tiny", 2, 128, 2
    args.embedding = args.embedding or ("default" if args.device.startswith("cuda") else "cpu")
    if args.variants is None:
        from appt.models.frozen_dtype import cpu_has_native_bf16

        native = args.quick or args.device.startswith("cuda") or cpu_has_native_bf16()  # quick: tiny, fast anyway
        args.variants = "appt,full_finetune,lora,encoder_only," + MEMORY_ROWS + ("," + BF16_ROW if native else "")
    return args


def parse_row(row: str) -> tuple[str, str, bool]:
    """``"appt+ckpt_all+bf16"`` -> ``("appt", "all", True)``: variant, checkpointing mode (``ckpt_MODE``), frozen bf16."""
    from appt.recompute import CHECKPOINT_MODES

    variant, *settings = row.split("+")
    modes = [s.removeprefix("ckpt_") for s in settings if s.startswith("ckpt_")]
    unknown = {s for s in settings if s != "bf16" and not s.startswith("ckpt_")} | set(modes) - set(CHECKPOINT_MODES[1:])
    if unknown or len(modes) > 1:
        sys.exit(f"--variants {row}: unknown or repeated setting(s) {', '.join(sorted(unknown or modes))} "
                 f"({', '.join('ckpt_' + m for m in CHECKPOINT_MODES[1:])}, bf16)")
    return variant, (modes or ["off"])[0], "bf16" in settings


def build_model(backbone: str, row: str, args: Any) -> torch.nn.Module:
    """A classifier with random backbone weights for row ``VARIANT[+settings]``, in train mode on
    ``args.device``; the settings applied as the training engine applies them."""
    from appt import APPTConfig, APPTForClassification, BackboneSpec
    from appt.models.frozen_dtype import cast_frozen
    from appt.recompute import set_activation_checkpointing

    variant, mode, bf16 = parse_row(row)
    torch.manual_seed(args.seed)
    spec = BackboneSpec(**common.BACKBONES[backbone][1])
    config = APPTConfig(backbone=spec, num_classes=10, variant=variant, **common.EMBEDDINGS[args.embedding])
    model = APPTForClassification(config)
    set_activation_checkpointing(model, mode)
    if bf16:
        cast_frozen(model, torch.bfloat16)
    return model.to(args.device).train()


def real_batch(args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``args.batch`` ModelNet10 training clouds (seeded choice), cut to ``args.points``, and labels.

    With ``$APPT_BUNDLE`` they come from the bundle's training split (no .pcd files, no pypcd4)."""
    if common.BUNDLE:
        clouds, all_labels, _ = common.bundle_clouds("train")
        if clouds.shape[1] < args.points:
            sys.exit(f"APPT_BUNDLE: its clouds have {clouds.shape[1]} points, --points asks for {args.points}")
        chosen = np.random.default_rng(args.seed).choice(len(clouds), size=args.batch, replace=len(clouds) < args.batch)
        points = np.ascontiguousarray(clouds[chosen, : args.points])
        return torch.from_numpy(points).to(args.device), torch.from_numpy(all_labels[chosen]).to(args.device)
    files = common.modelnet10_files("train")
    rng = np.random.default_rng(args.seed)
    chosen = [files[i] for i in rng.choice(len(files), size=args.batch, replace=False)]
    points = common.read_unit_clouds(chosen)[:, : args.points]
    classes = sorted({f.parts[-3] for f in files})
    labels = torch.tensor([classes.index(f.parts[-3]) for f in chosen])
    return torch.from_numpy(points).to(args.device), labels.to(args.device)


def make_step(model: torch.nn.Module, points: torch.Tensor, labels: torch.Tensor, args: Any) -> Callable[[], None]:
    """One optimisation step as the engine runs it (AdamW over the trainable tensors)."""
    from appt.training.builders import build_optimizer
    from appt.training.config import RunConfig

    optimizer = build_optimizer(model, RunConfig())
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"

    def step() -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = model(points)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=LABEL_SMOOTHING)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def rss_bytes() -> int:
    """The process's resident set size now (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def state_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of weights, gradients and AdamW moments (two per trainable element): the part of the
    peak that does not depend on the batch."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {"weights": params, "gradients": trainable, "adamw_moments": 2 * trainable}


def preload() -> None:
    """Import everything a step needs (a forked probe then shares it instead of importing it)."""
    for module in ("appt.models", "appt.training.builders", "appt.backbones.timm_vit", "appt.backbones.point_mae", "peft"):
        if module != "peft" or importlib.util.find_spec("peft") is not None:  # lora is skipped without peft
            importlib.import_module(module)


def memory_probe(backbone: str, variant: str, args: Any) -> dict[str, Any]:
    """Build one model and run two steps in this (fresh) process; its peak memory in bytes."""
    cuda = args.device.startswith("cuda")
    points, labels = real_batch(args)
    preload()  # before the baseline: code is not the model's memory
    base = 0 if cuda else rss_bytes()
    model = build_model(backbone, variant, args)
    built = torch.cuda.memory_allocated() if cuda else rss_bytes() - base
    step = make_step(model, points, labels, args)
    step()  # creates the optimizer state
    step()
    common.sync(args.device)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    method = "cuda max_memory_allocated, fresh process" if cuda else "peak RSS minus RSS at start, forked process"
    return {"peak_bytes": peak, "after_build_bytes": built, "state": state_bytes(model), "method": method}


def measure_memory(backbone: str, variant: str, args: Any, argv: list[str]) -> dict[str, Any]:
    """Peak memory of ``variant`` in a process of its own, so other models do not count.

    CPU: a fork of this process (made before any torch thread starts), whose peak RSS minus its
    RSS at the fork is what the model, gradients, optimizer state and activations needed; the
    kernel resets the child's peak to its current RSS at fork. CUDA cannot be forked: a fresh
    interpreter runs ``--memory-worker`` instead.
    """
    if args.device.startswith("cuda"):
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--memory-worker", f"{backbone}:{variant}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")]
        if proc.returncode or not lines:
            sys.exit(f"memory worker {backbone}:{variant} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(lines[-1][len("MEMORY "):])
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, report through the pipe, exit without running parent cleanup
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(memory_probe(backbone, variant, args)).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status or not data:
        sys.exit(f"memory probe {backbone}:{variant} failed (wait status {status})")
    return json.loads(data)


def full_model_bytes(model: torch.nn.Module, folder: Path) -> int:
    """Size of a safetensors file holding every tensor of the model (LoRA adapters excluded)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if "lora_" not in k}
    path = folder / "full.safetensors"
    save_file(tensors, str(path))
    return path.stat().st_size


def checkpoint_sizes(models: dict[str, torch.nn.Module]) -> dict[str, Any]:
    """Bytes ``save_pretrained`` writes per variant, and their fraction of the whole model's bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        full = full_model_bytes(next(m for m in models.values() if m.backbone is not None and m.frozen_dtype is None), Path(tmp))
        out: dict[str, Any] = {"full_model_bytes": full}
        for name, model in models.items():
            model.save_pretrained(Path(tmp) / name)
            size = (Path(tmp) / name / "appt_weights.safetensors").stat().st_size
            out[name] = {"bytes": size, "fraction_of_full": size / full}
    return out


def bench_backbone(backbone: str, variants: list[str], memory: dict[str, Any], args: Any) -> dict[str, Any]:
    print(f"[{backbone}] step time, interleaved rounds", flush=True)
    points, labels = real_batch(args)
    models = {v: build_model(backbone, v, args) for v in variants}
    steps = {v: make_step(m, points, labels, args) for v, m in models.items()}
    times = common.interleaved({v: (lambda s=s: common.timed(s, args.device)) for v, s in steps.items()},
                               args.repeats, warmup=1)
    result: dict[str, Any] = {
        "backbone": common.BACKBONES[backbone][0],
        "parameters": {v: dict(zip(("trainable", "total"), m.count_parameters())) for v, m in models.items()},
        "step_seconds": {v: common.stats(t) for v, t in times.items()},
        "step_seconds_raw": times,
        "clouds_per_second": {v: args.batch / common.stats(t)["median"] for v, t in times.items()},
        "memory": memory,
        "checkpoint": checkpoint_sizes(models),
    }
    if "full_finetune" in variants:
        ref = "full_finetune"
        result["vs_full_finetune"] = {
            v: {
                "throughput_ratio": common.paired_ratio(times[ref], times[v]),
                "throughput_ratio_of_medians": result["step_seconds"][ref]["median"] / result["step_seconds"][v]["median"],
                "peak_memory_ratio": memory[v]["peak_bytes"] / memory[ref]["peak_bytes"],
            }
            for v in variants
        }
    plain = {v: parse_row(v)[0] for v in variants if "+" in v and parse_row(v)[0] in variants}
    if plain:  # the memory settings against the same variant without them, same rounds
        result["vs_plain_variant"] = {
            v: {"plain": p, "step_time_ratio": common.paired_ratio(times[v], times[p]),
                "peak_memory_ratio": memory[v]["peak_bytes"] / memory[p]["peak_bytes"]}
            for v, p in plain.items()
        }
    return result


def summary_table(results: dict[str, Any]) -> str:
    rows = []
    for res in results.values():
        ratios, plain = res.get("vs_full_finetune", {}), res.get("vs_plain_variant", {})
        for v, s in res["step_seconds"].items():
            r = ratios.get(v, {})
            vs_plain = f"{plain[v]['step_time_ratio']:.2f}" if v in plain else "-"
            rows.append([res["backbone"], v, f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})",
                         f"{res['clouds_per_second'][v]:.2f}", f"{r.get('throughput_ratio', float('nan')):.2f}",
                         f"{res['memory'][v]['peak_bytes'] / 2**20:,.0f}", f"{r.get('peak_memory_ratio', float('nan')):.2f}",
                         f"{res['checkpoint'][v]['bytes'] / 2**20:,.2f}", f"{100 * res['checkpoint'][v]['fraction_of_full']:.1f} %", vs_plain])
    header = ["backbone", "variant", "step s, median (min-max)", "clouds/s", "throughput vs full",
              "peak MiB", "peak vs full", "checkpoint MiB", "of full model", "step time vs plain variant"]
    return common.markdown_table(header, rows)


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """Whether ``appt`` meets the issue's goals on each backbone."""
    out = {}
    for name, res in results.items():
        r = res.get("vs_full_finetune", {}).get("appt")
        ckpt = res["checkpoint"].get("appt")
        if r is None or ckpt is None:
            continue
        out[name] = {
            "throughput_ratio>=1.3": r["throughput_ratio"] >= GOALS["throughput_ratio_min"],
            "peak_memory_ratio<=0.6": r["peak_memory_ratio"] <= GOALS["peak_memory_ratio_max"],
            "checkpoint_fraction<=0.05": ckpt["fraction_of_full"] <= GOALS["checkpoint_fraction_max"],
        }
        low = res["vs_full_finetune"].get(LOW_MEMORY_ROW)
        vs_appt = res.get("vs_plain_variant", {}).get(LOW_MEMORY_ROW)
        if low is not None and vs_appt is not None:
            out[name][f"{LOW_MEMORY_ROW}: peak_memory_ratio<=0.5"] = low["peak_memory_ratio"] <= LOW_MEMORY_GOALS["peak_memory_ratio_max"]
            out[name][f"{LOW_MEMORY_ROW}: step_time_vs_appt<=1.3"] = vs_appt["step_time_ratio"] <= LOW_MEMORY_GOALS["step_time_vs_appt_max"]
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    common.setup_torch(args.device, args.threads)
    if args.memory_worker:
        print("MEMORY " + json.dumps(memory_probe(*args.memory_worker.split(":"), args)), flush=True)
        return
    info = common.machine_info(args.device)
    variants, backbones = args.variants.split(","), args.backbones.split(",")
    skipped = {}
    if "lora" in variants and importlib.util.find_spec("peft") is None:  # e.g. an offline node without peft
        variants.remove("lora")
        skipped["lora"] = "peft is not importable"
        print("lora: skipped (peft is not importable)", flush=True)
    # All memory probes first: forking is only safe before this process starts torch's threads.
    preload()
    memory = {}
    for b in backbones:
        print(f"[{b}] peak memory, one process per variant", flush=True)
        memory[b] = {v: measure_memory(b, v, args, argv) for v in variants}
    results = {b: bench_backbone(b, variants, memory[b], args) for b in backbones}
    settings = {k: getattr(args, k) for k in ("batch", "points", "embedding", "precision", "repeats", "seed", "threads", "quick")}
    settings["embedding_config"] = common.EMBEDDINGS[args.embedding] or "APPTConfig defaults"
    settings["step"] = f"AdamW (engine defaults), label smoothing {LABEL_SMOOTHING}, grad clip {GRAD_CLIP}"
    settings["skipped"] = skipped
    settings["note"] = args.note
    info["load_average_at_end"] = list(os.getloadavg())  # with load_average_at_start: how shared the CPUs were
    settings["clouds_from"] = f"bundle {common.BUNDLE} (train split)" if common.BUNDLE else str(common.MODELNET10)
    table = summary_table(results)
    common.write_results(args.out, {"benchmark": "cost", "machine": info, "settings": settings,
                                    "results": results, "goals": goals(results), "table": table})
    print(table)
    print(json.dumps(goals(results), indent=1))


if __name__ == "__main__":
    main()
