"""Benchmark 7 — size of a run bundle (``appt bundle``) against the 60 MiB staging limit.

Builds the bundle of a config (default: the full ModelNet10 — 3,991 train + 908 test clouds — at
1,024 points with the frozen pretrained all-MiniLM-L6-v2, ``configs/modelnet10_minilm.yaml``) in a
temporary folder, and records every file's size, the total and the time taken. It also *computes*
(does not measure) the size an MPNet-base backbone (12 x 768) would add, from the parameter count
of transformers' ``MPNetModel`` layers built on the meta device: the blocks, the encoder's relative
attention bias, the embedding LayerNorm and the class token, at 2 bytes per value.

    python benchmarks/bench_bundle_size.py                 # -> benchmarks/results/bundle_size_<date>.json
    python benchmarks/bench_bundle_size.py --set data.num_points=2048 --out /tmp/b.json
"""

from __future__ import annotations

import datetime
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

LIMIT_MIB = 60.0


def parse_args(argv: list[str] | None = None) -> Any:
    today = datetime.date.today().isoformat()
    p = common.base_parser(__doc__.splitlines()[0], f"bundle_size_{today}.json")
    p.add_argument("--config", default=str(common.ROOT / "configs" / "modelnet10_minilm.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--points-dtype", default="fp16", choices=("fp16", "fp32"))
    p.add_argument("--machine", default="2-core CPU", help="a short label of the machine for the results")
    return p.parse_args(argv)


def mpnet_estimate() -> dict[str, Any]:
    """Values and float16 bytes an MPNet-base bundle's backbone would hold (computed, not measured)."""
    import torch
    from transformers import MPNetConfig, MPNetModel

    config = MPNetConfig()  # mpnet-base: 12 layers, width 768, FFN 3072, 12 heads, 32 relative-position buckets
    with torch.device("meta"):
        model = MPNetModel(config)
    blocks = sum(p.numel() for p in model.encoder.layer.parameters())
    bias = model.encoder.relative_attention_bias.weight.numel()
    norm = sum(p.numel() for p in model.embeddings.LayerNorm.parameters())
    values = blocks + bias + norm + config.hidden_size  # + the class token (1, 1, 768)
    return {
        "what": "computed from transformers' MPNetModel(MPNetConfig()) on the meta device, not measured",
        "layers": config.num_hidden_layers, "width": config.hidden_size, "ffn": config.intermediate_size,
        "values": {"blocks": blocks, "relative_attention_bias": bias, "embedding_layernorm": norm,
                   "cls_token": config.hidden_size, "total": values},
        "backbone_bytes_fp16": 2 * values,
        "backbone_mib_fp16": round(2 * values / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.setup_torch("cpu", args.threads)
    from appt.training.bundle import create_bundle
    from appt.training.config import load_config

    info = common.machine_info("cpu")
    info["label"] = args.machine
    cfg = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        manifest = create_bundle(cfg, Path(tmp) / "bundle", dtype=args.dtype, points_dtype=args.points_dtype,
                                 progress=sys.stderr.isatty())
        seconds = time.perf_counter() - tic
    files = {name: entry["bytes"] for name, entry in manifest["files"].items()}
    data_bytes = sum(b for name, b in files.items() if name.startswith("data/"))
    total = manifest["total_bytes"]
    mpnet = mpnet_estimate()
    mpnet_total = total - sum(b for name, b in files.items() if name.startswith("backbone/")) + mpnet["backbone_bytes_fp16"]
    mpnet["bundle_mib_with_this_data"] = round(mpnet_total / 2**20, 2)
    mpnet["within_limit"] = mpnet_total / 2**20 <= LIMIT_MIB
    splits = manifest["data"]["splits"]
    result = {
        "benchmark": "bundle_size",
        "machine": info,
        "settings": {"config": str(Path(args.config).resolve().relative_to(common.ROOT)), "overrides": args.overrides,
                     "weights_dtype": args.dtype, "points_dtype": args.points_dtype,
                     "backbone": manifest["backbone"]["identity"] if manifest["backbone"] else "none",
                     "splits": {role: {"shapes": s["shapes"], "points_per_shape": s["points_per_shape"]}
                                for role, s in splits.items()}},
        "files_bytes": files,
        "data_bytes": data_bytes,
        "backbone_values": manifest["backbone"]["parameters"] if manifest["backbone"] else 0,
        "total_bytes": total,
        "total_mib": round(total / 2**20, 2),
        "limit_mib": LIMIT_MIB,
        "within_limit": total / 2**20 <= LIMIT_MIB,
        "seconds_to_build": round(seconds, 1),
        "mpnet_12x768_estimate": mpnet,
    }
    common.write_results(args.out, result)
    rows = [[name, f"{b:,}", f"{b / 2**20:.2f}"] for name, b in files.items()]
    rows.append(["total", f"{total:,}", f"{total / 2**20:.2f}"])
    print(common.markdown_table(["file", "bytes", "MiB"], rows))
    print(f"total {total / 2**20:.2f} MiB (limit {LIMIT_MIB:.0f} MiB) in {seconds:.1f} s; "
          f"an MPNet 12 x 768 backbone would make it {mpnet['bundle_mib_with_this_data']:.2f} MiB (computed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
