"""Part segmentation on the real ShapeNetPart Cap shapes: per-point logits, order, freezing,
checkpoints, the per-block prompt, feature propagation, and a short training run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from appt.backbones.base import BackboneSpec
from appt.data import build_dataset
from appt.data.shapenetpart import CATEGORIES, NUM_CATEGORIES, NUM_PARTS, PART_RANGES
from appt.embedding import make_prompt
from appt.errors import ConfigError
from appt.geometry import farthest_point_sample, gather
from appt.models import VARIANTS, APPTConfig, APPTForPartSegmentation, trained_state_dict
from appt.models.propagation import interpolate
from appt.models.segmentation import default_feature_blocks
from appt.evaluation.seg_metrics import PartSegMeter
from conftest import DATA

SHAPENETPART = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
TINY_POINT = BackboneSpec("point_mae", pretrained=False, options={"depth": 3, "width": 48, "heads": 4})
MINILM = BackboneSpec("hf_text", "minilm")
NUM_POINTS = 1024


def seg_config(backbone: BackboneSpec = TINY_POINT, **overrides) -> APPTConfig:
    """A light 2-stage embedding (1024 -> 256 -> 64 points) so a step takes about a second on 2 cores."""
    settings = dict(
        backbone=backbone, num_classes=NUM_PARTS, num_categories=NUM_CATEGORIES, in_channels=6, embed_dim=24,
        centers=(256, 64), neighbors=(16, 16), widths=(48, -1), blocks=(1, 1), head_hidden=(64,),
        head_dropout=0.2, seg_fp_widths=(64,), seg_category_dim=16,
    )
    settings.update(overrides)
    return APPTConfig(**settings)


def cap_split(split: str):
    """Cap shapes of ``split`` with normals, ``NUM_POINTS`` random points each (re-drawn per epoch)."""
    return build_dataset(
        "shapenetpart", root=SHAPENETPART, split=split, num_points=NUM_POINTS, sampling="random",
        use_normals=True, cache=False, seed=0,
    )


def batch(ds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``points (B, N, 6), seg (B, N), category (B,)`` of every shape in ``ds``."""
    samples = [ds[i] for i in range(len(ds))]
    return tuple(torch.stack([s[k] for s in samples]) for k in ("points", "seg", "category"))


@pytest.fixture(scope="module")
def cap_val():
    return batch(cap_split("val"))


def train_steps(model, points, seg, category, steps: int = 2, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(points, category).flatten(0, 1), seg.flatten()).backward()
        opt.step()


@pytest.mark.parametrize("backbone", [TINY_POINT, MINILM], ids=["point_mae", "minilm"])
def test_permuting_points_permutes_the_per_point_logits(cap_val, backbone):
    torch.manual_seed(0)
    points, seg, category = cap_val
    model = APPTForPartSegmentation(seg_config(backbone))
    train_steps(model, points[:2], seg[:2], category[:2])  # non-trivial BN statistics
    model.eval()
    perm = torch.randperm(NUM_POINTS, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model(points[:2], category[:2])
        b = model(points[:2, perm], category[:2])
    assert a.shape == (2, NUM_POINTS, NUM_PARTS)
    assert (a[:, perm] - b).abs().max().item() <= 1e-5


def test_training_changes_exactly_the_trainable_tensors(cap_val):
    torch.manual_seed(0)
    points, seg, _ = cap_val
    # Mixed categories: with one category per batch its (constant) vector is removed by the head's
    # BatchNorm and gets no gradient, as with PointNet++'s one-hot.
    category = torch.tensor([2, 0, 5])
    model = APPTForPartSegmentation(seg_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert frozen == {n for n, _ in model.backbone.named_parameters(prefix="backbone")}
    assert {"decoder", "category_embed", "head", "embedding"} <= {n.split(".")[0] for n in trainable}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # every tensor offered: the freezing must hold anyway
    model.train()
    assert not model.backbone.training
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(points[:3], category).flatten(0, 1), seg[:3].flatten()).backward()
        assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
        opt.step()
    changed = {n for n, t in model.state_dict().items() if not torch.equal(before[n], t)}
    assert changed & frozen == set()  # bit-identical
    assert trainable - changed == set()


def test_save_load_round_trip_reproduces_logits(cap_val, tmp_path):
    torch.manual_seed(0)
    points, seg, category = cap_val
    model = APPTForPartSegmentation(seg_config(seg_feature_blocks=(1, 3)))
    train_steps(model, points[:3], seg[:3], category[:3])
    model.eval()
    model.save_pretrained(tmp_path / "w")
    saved = trained_state_dict(model)
    assert not any(k.startswith("backbone.") for k in saved)
    assert any(k.startswith("decoder.") for k in saved) and "category_embed.weight" in saved

    torch.manual_seed(123)  # a different init everywhere: loading must restore all that matters
    loaded = APPTForPartSegmentation.from_pretrained(tmp_path / "w").eval()
    assert loaded.prompts.depths == (1, 3)
    with torch.no_grad():
        assert torch.equal(model(points[:2], category[:2]), loaded(points[:2], category[:2]))


def test_prompt_is_recomputed_from_the_current_tokens_before_each_block(cap_val):
    points, _, category = cap_val
    model = APPTForPartSegmentation(seg_config()).eval()
    inputs: list[torch.Tensor] = []
    for block in model.backbone.blocks:
        block.register_forward_pre_hook(lambda m, args: inputs.append(args[0]) and None)
    with torch.no_grad():
        model(points[:2], category[:2])
    c, g = model.num_class_tokens, model.embedding.num_tokens
    assert [x.shape[1] for x in inputs] == [c + 1 + g, c + 2 + g, c + 3 + g]  # cumulative insertion kept
    for i, x in enumerate(inputs):
        expected = model.backbone.prepare_tokens(make_prompt(x[:, -g:]))
        torch.testing.assert_close(x[:, c + i : c + i + 1], expected, rtol=0, atol=1e-6)
    # the inputs of later blocks differ, so a prompt fixed once would fail the check above
    assert not torch.allclose(make_prompt(inputs[0][:, -g:]), make_prompt(inputs[2][:, -g:]))


def test_feature_blocks_choose_depths_and_skip_unread_blocks(cap_val):
    points, _, category = cap_val
    assert default_feature_blocks(12) == (4, 8, 12) and default_feature_blocks(3) == (1, 2, 3)
    assert default_feature_blocks(1) == (1,)
    model = APPTForPartSegmentation(seg_config(seg_feature_blocks=(1,))).eval()
    ran: list[int] = []
    for i, block in enumerate(model.backbone.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: ran.append(i) and None)
    with torch.no_grad():
        assert model(points[:1], category[:1]).shape == (1, NUM_POINTS, NUM_PARTS)
    assert ran == [0]
    with pytest.raises(ConfigError, match="seg_feature_blocks"):
        APPTForPartSegmentation(seg_config(seg_feature_blocks=(2, 4)))
    with pytest.raises(ConfigError, match="seg_fp_widths"):
        seg_config(seg_fp_widths=(64, 32, 16))
    with pytest.raises(ConfigError, match="readout_depths is for classification"):
        APPTForPartSegmentation(seg_config(readout_depths=(0, 3)))


def test_bad_category_is_refused(cap_val):
    points, _, _ = cap_val
    model = APPTForPartSegmentation(seg_config()).eval()
    with pytest.raises(ValueError, match="category ids"):
        model(points[:1], torch.tensor([NUM_CATEGORIES]))
    with pytest.raises(ValueError, match="category of shape"):
        model(points[:2], torch.tensor([2]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gives_per_point_logits(cap_val, variant):
    points, _, category = cap_val
    model = APPTForPartSegmentation(seg_config(variant=variant)).eval()
    with torch.no_grad():
        assert model(points[:1, :512], category[:1]).shape == (1, 512, NUM_PARTS)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert {"decoder", "category_embed", "head"} <= trainable


def test_interpolation_copies_centres_and_keeps_constants(cap_val):
    xyz = cap_val[0][:2, :, :3].contiguous()
    idx = farthest_point_sample(xyz, 64)
    centres = gather(xyz, idx)
    feat = torch.randn(2, 64, 5, generator=torch.Generator().manual_seed(0))
    out = interpolate(xyz, centres, feat)
    assert out.shape == (2, NUM_POINTS, 5)
    torch.testing.assert_close(gather(out, idx), feat)  # a centre takes its own feature
    const = interpolate(xyz, centres, torch.full((2, 64, 5), 2.5))
    torch.testing.assert_close(const, torch.full_like(const, 2.5))
    # between its 3 neighbours: a convex combination, so within their range
    assert (out.amin(1) >= feat.amin(1) - 1e-6).all() and (out.amax(1) <= feat.amax(1) + 1e-6).all()


def test_short_training_on_cap_beats_the_majority_part_baseline(cap_val):
    """Train on the 5 'val' Cap shapes, score the 11 'test' shapes (restricted to Cap's parts)."""
    torch.manual_seed(0)
    train = cap_split("val")
    test_points, test_seg, test_category = batch(cap_split("test"))
    meter = PartSegMeter({name: PART_RANGES[name] for name in CATEGORIES})

    _, train_seg, _ = cap_val
    majority = int(train_seg.flatten().bincount().argmax())
    meter.update(torch.full_like(test_seg, majority), test_seg, test_category)
    baseline = meter.compute()["instance_miou"]

    model = APPTForPartSegmentation(seg_config())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(12):
        train.set_epoch(step)  # fresh random points of each shape every step
        points, seg, category = batch(train)
        opt.zero_grad()
        F.cross_entropy(model(points, category).flatten(0, 1), seg.flatten()).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(test_points, test_category)
    meter.reset()
    meter.update(logits, test_seg, test_category)
    scores = meter.compute()
    print(f"Cap test instance mIoU {scores['instance_miou']:.3f} vs majority part {baseline:.3f}; {model.summary()}")
    assert set(scores["per_category_miou"]) == {"Cap"}
    assert scores["instance_miou"] > baseline + 0.1
