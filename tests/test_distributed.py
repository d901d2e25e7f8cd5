"""Two CPU processes (gloo) through the engine's Accelerate set-up: every variant whose trainable
tensors could miss a gradient trains for two steps under DDP, and both ranks end equal.

Before unused parameters were frozen, ``full_finetune`` (the backbone's own final norm) and any
variant reading an early depth (the later blocks) failed at step 2 with "Expected to have
finished reduction in the prior iteration".
"""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from appt.backbones.base import BackboneSpec

TINY_POINT = BackboneSpec("point_mae", pretrained=False, options={"depth": 3, "width": 32, "heads": 4})
CASES = [  # (task, config overrides)
    ("cls", {"variant": "full_finetune"}),
    ("cls", {"variant": "lora"}),
    ("cls", {"variant": "tune_norms_short", "readout_depths": (1,)}),
    ("cls", {"variant": "full_finetune", "readout_depths": (0, 2)}),
    ("seg", {"variant": "full_finetune", "seg_feature_blocks": (1,)}),
    ("cls", {"variant": "lora", "activation_checkpointing": "backbone"}),  # recomputed blocks under DDP
    ("seg", {"variant": "appt", "activation_checkpointing": "all"}),
]


def _config(task: str, overrides: dict):
    from appt.models import APPTConfig

    overrides = dict(overrides)
    if overrides["variant"] == "tune_norms_short":
        overrides.update(variant="appt", tune_norms=True)
    settings = dict(backbone=TINY_POINT, num_classes=6, embed_dim=16, centers=(64, 16), neighbors=(8, 8),
                    widths=(32, -1), blocks=(1, 1), head_hidden=(32,))
    if task == "seg":
        settings.update(in_channels=3, num_categories=2, seg_fp_widths=(16,), seg_category_dim=8)
    return APPTConfig(**settings, **overrides)


def _worker(rank: int, port: int, results: dict) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from appt.models import APPTForClassification, APPTForPartSegmentation
    from appt.recompute import set_activation_checkpointing
    from appt.training.engine import make_accelerator

    acc = make_accelerator("no")
    out = []
    for task, overrides in CASES:
        torch.manual_seed(0)  # the same initial weights on both ranks
        cls = APPTForPartSegmentation if task == "seg" else APPTForClassification
        model = cls(_config(task, {k: v for k, v in overrides.items() if k != "activation_checkpointing"}))
        set_activation_checkpointing(model, overrides.get("activation_checkpointing", "off"))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model, optimizer = acc.prepare(model, optimizer)
        gen = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
        for _ in range(2):
            points = torch.rand(4, 128, 3, generator=gen)
            if task == "seg":
                logits = model(points, torch.randint(0, 2, (4,), generator=gen))
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.randint(0, 6, (4 * 128,), generator=gen))
            else:
                loss = torch.nn.functional.cross_entropy(model(points), torch.randint(0, 6, (4,), generator=gen))
            acc.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        flat = torch.cat([p.detach().flatten() for p in acc.unwrap_model(model).parameters() if p.requires_grad])
        gathered = acc.gather(flat[None])
        out.append(bool(torch.equal(gathered[0], gathered[1])))
    results[rank] = out
    acc.end_training()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_trains_every_variant_that_skips_parameters() -> None:
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
    assert results[0] == results[1] == [True] * len(CASES), "ranks ended with different weights"
