"""Shared test fixtures: the real data beside the repository, and small real clouds from it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELNET10 = DATA / "modelnet10_pcd" / "ModelNet10" / "pcd"


def load_real_clouds(count: int, split: str = "train", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` real ModelNet10 clouds ``(count, 1024, 3)`` on the unit sphere and their labels.

    Read with pypcd4 directly so core tests do not depend on appt.data.
    """
    from pypcd4 import PointCloud

    classes = sorted(p.name for p in MODELNET10.iterdir() if p.is_dir())
    files = sorted(MODELNET10.glob(f"*/{split}/*.pcd"))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), size=count, replace=False)
    clouds, labels = [], []
    for i in chosen:
        xyz = PointCloud.from_path(files[i]).numpy(("x", "y", "z")).astype(np.float32)
        xyz = xyz - xyz.mean(axis=0)
        xyz = xyz / np.linalg.norm(xyz, axis=1).max()
        clouds.append(xyz)
        labels.append(classes.index(files[i].parts[-3]))
    return torch.from_numpy(np.stack(clouds)), torch.tensor(labels)


@pytest.fixture(scope="session")
def real_clouds() -> tuple[torch.Tensor, torch.Tensor]:
    """16 real ModelNet10 training clouds (16, 1024, 3) and labels (16,)."""
    return load_real_clouds(16)


def run_blocks(backbone, x: torch.Tensor) -> torch.Tensor:
    """What APPT does with a backbone ``(B, T, D) -> (B, T, D)``: prepare the tokens, run every
    block, final norm (the backbone tests compare this with each model's own forward)."""
    x = backbone.prepare_tokens(x)
    for block in backbone.blocks:
        x = block(x)
    return backbone.final_norm(x)


def assert_frozen_without_dropout(backbone) -> None:
    """Nothing of ``backbone`` trains, each tensor has one name, and train mode computes what eval
    mode does (no dropout left inside), on tokens of width 32 (the tiny test models)."""
    assert all(not p.requires_grad for p in backbone.parameters())
    assert len(list(backbone.named_parameters(remove_duplicate=False))) == len(list(backbone.parameters()))
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        expected = run_blocks(backbone, x)
        backbone.train()
        try:
            assert torch.equal(run_blocks(backbone, x), expected)
        finally:
            backbone.eval()


# --- the meaning check: only pretrained text weights tell a paraphrase from an unrelated sentence ---
SENTENCES = ("A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today.")


def build_with_model(spec):
    """An ``hf_text`` backbone and the very HF model it was built from (to embed words with its own tables)."""
    from appt.backbones import build_backbone, hf_text

    seen = []
    load = hf_text._load_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_text, "_load_model", lambda *a: seen.append(load(*a)) or seen[-1])
        backbone = build_backbone(spec)
    return backbone, seen[0][0].eval()


def input_embeddings(model, ids: torch.Tensor) -> torch.Tensor:
    """Word + position (+ token type 0) embeddings *before* the embedding LayerNorm, ``(1, T) -> (1, T, D)``.

    BERT-type positions start at 0; RoBERTa-type (MPNet) ones after the padding index."""
    from appt.backbones.hf_text import ROBERTA_TYPES

    emb = model.embeddings
    first = emb.padding_idx + 1 if model.config.model_type in ROBERTA_TYPES else 0
    x = emb.word_embeddings(ids) + emb.position_embeddings(torch.arange(first, first + ids.shape[1]))[None]
    if getattr(emb, "token_type_embeddings", None) is not None:
        x = x + emb.token_type_embeddings(torch.zeros_like(ids))
    return x


def meaning_check(backbone, model, tokenizer) -> tuple[float, float]:
    """(cosine of the paraphrase pair, cosine of the unrelated pair) of ``SENTENCES``' embeddings:
    our blocks' outputs mean-pooled over the tokens (what sentence-transformers does)."""
    import torch.nn.functional as F

    rows = []
    with torch.no_grad():
        for text in SENTENCES:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            rows.append(run_blocks(backbone, input_embeddings(model, ids)).mean(dim=1)[0])
    cos = lambda i, j: F.cosine_similarity(rows[i], rows[j], dim=0).item()  # noqa: E731
    return cos(0, 1), cos(0, 2)
