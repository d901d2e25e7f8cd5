"""Memory settings of a training step: activation checkpointing and half-precision frozen weights.

Checkpointing must not change what a step computes (gradients within float tolerance, BatchNorm
statistics updated once), its default must leave the step bitwise as it was, and every trainable
tensor must still get a gradient (DDP needs it). Frozen bf16 weights: trainable tensors stay fp32,
logits stay close to fp32, a step runs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from appt import APPTConfig, APPTForClassification, BackboneSpec
from appt.models import APPTForPartSegmentation
from appt.models.frozen_dtype import cast_frozen, resolve_frozen_dtype
from appt.models.frozen_dtype import FROZEN_DTYPES
from appt.recompute import CHECKPOINT_MODES, STAGE_RECOMPUTE, set_activation_checkpointing
from appt.training import config as run_config
from appt.training.config import config_from_dict
from appt.training.precision import apply_memory_settings
from appt.errors import ConfigError

TINY_POINT = BackboneSpec("point_mae", pretrained=False, options={"depth": 3, "width": 48, "heads": 4})


def _config(task: str, backbone: BackboneSpec = TINY_POINT, **overrides) -> APPTConfig:
    settings = dict(backbone=backbone, num_classes=6, embed_dim=16, centers=(64, 16), neighbors=(8, 8),
                    widths=(32, -1), blocks=(1, 1), head_hidden=(32,))
    if task == "seg":
        settings.update(in_channels=3, num_categories=2, seg_fp_widths=(16,), seg_category_dim=8)
    settings.update(overrides)
    return APPTConfig(**settings)


def _step(task: str, mode: str | None, clouds: torch.Tensor, labels: torch.Tensor, **overrides):
    """One forward + backward from seed 0; ``mode`` None = never switched (today's code path)."""
    torch.manual_seed(0)
    cls = APPTForPartSegmentation if task == "seg" else APPTForClassification
    model = cls(_config(task, **overrides)).train()
    if mode is not None:
        set_activation_checkpointing(model, mode)
    if task == "seg":
        logits = model(clouds, labels % 2)
        loss = F.cross_entropy(logits.flatten(0, 1), (torch.arange(clouds.shape[0] * clouds.shape[1]) % 6))
    else:
        logits = model(clouds)
        loss = F.cross_entropy(logits, labels % 6)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return model, logits.detach(), grads


@pytest.fixture(scope="module")
def clouds(real_clouds):
    points, labels = real_clouds
    return points[:2, :256].contiguous(), labels[:2]


def test_default_step_is_bitwise_the_unswitched_one(clouds, monkeypatch):
    """The default never recomputes anything (torch's checkpoint is made to fail), so its step is
    the plain one, bitwise."""
    import appt.recompute

    def no_checkpoint(*args, **kwargs):
        raise AssertionError("the default step went through activation checkpointing")

    monkeypatch.setattr(appt.recompute, "checkpoint", no_checkpoint)
    for task in ("cls", "seg"):
        _, logits_a, grads_a = _step(task, None, *clouds)
        _, logits_b, grads_b = _step(task, "off", *clouds)
        assert torch.equal(logits_a, logits_b)
        assert grads_a.keys() == grads_b.keys()
        assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a), task


@pytest.mark.parametrize("task", ["cls", "seg"])
@pytest.mark.parametrize("mode", ["backbone", "all", "selective"])
def test_checkpointing_keeps_gradients_and_statistics(clouds, task, mode):
    ref, logits_ref, grads_ref = _step(task, "off", *clouds)
    model, logits, grads = _step(task, mode, *clouds)
    assert torch.allclose(logits, logits_ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_ref.keys()
    for name, g in grads.items():
        assert g is not None, f"{name}: no gradient under checkpointing ({mode})"  # DDP would stall
        assert torch.allclose(g, grads_ref[name], rtol=1e-4, atol=1e-6), name
    ref_stats, stats = ref.state_dict(), model.state_dict()
    for name in ref_stats:
        if "running_" in name or "num_batches" in name:  # BatchNorm updated once, not again in recompute
            assert torch.equal(stats[name], ref_stats[name]), name


def test_recomputed_stages_do_not_search_again(clouds, monkeypatch):
    """With ``all`` the backward pass reruns each embedding stage, but not its FPS and kNN: the
    searches run as often in a checkpointed step as in a plain one (once per forward pass), and the
    gradients stay those of the plain step."""
    import appt.embedding.point_embedding as point_embedding

    calls = {"farthest_point_sample": 0, "knn": 0}

    def counted(name):
        real = getattr(point_embedding, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(point_embedding, name, wrapper)

    counted("farthest_point_sample")
    counted("knn")
    counts = {}
    for mode in ("off", "all", "selective"):
        calls.update(farthest_point_sample=0, knn=0)
        _, _, grads = _step("cls", mode, *clouds)
        counts[mode] = (dict(calls), grads)
    stages = len(_config("cls").centers)
    expected = {"farthest_point_sample": 1, "knn": stages}  # chained stages: no FPS
    assert counts["all"][0] == counts["selective"][0] == counts["off"][0] == expected
    grads_ref = counts["off"][1]
    for mode in ("all", "selective"):
        assert all(torch.allclose(counts[mode][1][n], grads_ref[n], rtol=1e-5, atol=1e-7) for n in grads_ref), mode


def _stage_by_definition(stage, xyz: torch.Tensor, feat: torch.Tensor):
    """A stage as its definition reads: a linear map of the concatenated ``[neighbour, centre]``
    features of every ``(B, G, k)`` pair (the authors' order), no split before the gather."""
    from appt.embedding.layers import batch_norm
    from appt.embedding.group_scaling import scale_groups
    from appt.geometry import gather

    centres, centre_idx, neighbours = stage.group(xyz)
    rel = scale_groups(gather(xyz, neighbours) - centres.unsqueeze(2), stage.group_scaling)
    pairs = gather(feat, neighbours)
    pairs = torch.cat((pairs, gather(feat, centre_idx).unsqueeze(2).expand_as(pairs)), dim=-1)  # (B, G, k, 2 Cin)
    weight = torch.cat((stage.neighbour_proj.weight, stage.centre_proj.weight), dim=1)
    h = batch_norm(F.linear(pairs, weight), stage.bn).relu()
    pe = stage.geometry(rel)
    h = stage.blocks((h + pe) * pe)
    return h.amax(dim=2) + h.mean(dim=2)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("mode", ["off", "all"])  # selective recomputes stages as all does
def test_embedding_stage_equals_its_definition(clouds, mode):
    """The split linear map before the gather, the in-place activations and the searches outside
    the recomputed part compute the stage's definition: outputs and gradients within 1e-5 relative."""
    import copy

    torch.manual_seed(0)
    embedding = APPTForClassification(_config("cls")).embedding.train()
    embedding.recompute_stages = STAGE_RECOMPUTE[mode]
    reference = copy.deepcopy(embedding)
    points = clouds[0]
    out = embedding(points).stages[1][1]
    xyz = points[..., :3].contiguous()
    ref = _stage_by_definition(reference.stages[0], xyz, reference.raw(points))
    assert out.shape == ref.shape and _relative_error(out, ref) <= 1e-5
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    for (name, p), q in zip(embedding.named_parameters(), reference.parameters()):
        if name.startswith(("raw.", "stages.0.")):
            assert _relative_error(p.grad, q.grad) <= 1e-5, name  # summed over pairs: elementwise is too strict
    for (name, a), b in zip(embedding.state_dict().items(), reference.state_dict().values()):
        if "running_" in name and name.startswith(("raw.", "stages.0.")):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), name  # statistics updated once


def test_checkpointing_keeps_gradients_of_every_variant_that_trains_in_the_backbone(clouds):
    """lora / tune_norms / full_finetune: trainable tensors inside recomputed blocks still get gradients."""
    for overrides in ({"variant": "lora"}, {"tune_norms": True}, {"variant": "full_finetune"}):
        _, _, grads_ref = _step("cls", "off", *clouds, **overrides)
        _, _, grads = _step("cls", "all", *clouds, **overrides)
        assert grads.keys() == grads_ref.keys() and any(n.startswith("backbone.") for n in grads)
        for name, g in grads.items():
            assert g is not None and torch.allclose(g, grads_ref[name], rtol=1e-4, atol=1e-6), (overrides, name)


def test_bf16_frozen_weights_on_cpu(clouds):
    torch.manual_seed(0)
    model = APPTForClassification(_config("cls")).train()
    points, labels = clouds
    with torch.no_grad():
        fp32 = model.eval()(points)
    cast_frozen(model, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.backbone.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        bf16 = model(points)
    assert bf16.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa (relative error ~4e-3 per rounding); over 3 blocks we allow 2 % of the logits' scale
    assert (bf16 - fp32).abs().max().item() <= 0.02 * fp32.abs().max().item()  # measured 0.7 %
    assert not torch.equal(bf16, fp32)  # the blocks did run in bf16
    model.train()
    set_activation_checkpointing(model, "all")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    F.cross_entropy(model(points), labels % 6).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)
    opt.step()
    assert all(p.dtype == torch.bfloat16 for p in model.backbone.parameters())  # never cast back


def test_frozen_dtype_resolution_and_config_keys():
    torch.manual_seed(0)
    appt = APPTForClassification(_config("cls"))
    lora = APPTForClassification(_config("cls", variant="lora"))
    assert resolve_frozen_dtype("auto", "bf16", "cuda", appt) == torch.bfloat16
    assert resolve_frozen_dtype("auto", "fp16", "cuda", appt) == torch.float16
    assert resolve_frozen_dtype("auto", "fp16", "cpu", appt) is None
    assert resolve_frozen_dtype("auto", "no", "cuda", appt) is None
    assert resolve_frozen_dtype("fp32", "bf16", "cuda", appt) is None
    assert resolve_frozen_dtype("auto", "bf16", "cuda", lora) is None  # lora's adapters train inside the blocks
    with pytest.raises(ValueError):
        cast_frozen(lora, torch.bfloat16)
    # what the engine applies: the defaults change nothing; bf16 on CUDA casts the frozen blocks
    assert apply_memory_settings(appt, "off", "auto", "no", "cpu") is None
    assert appt.frozen_dtype is None and appt.activation_checkpointing == "off" and appt.embedding.recompute_stages == "off"
    assert all(p.dtype == torch.float32 for p in appt.parameters())
    assert apply_memory_settings(appt, "all", "auto", "bf16", "cuda") == torch.bfloat16
    assert appt.embedding.recompute_stages == "full" and {p.dtype for p in appt.backbone.parameters()} == {torch.bfloat16}
    assert (run_config.CHECKPOINT_MODES, run_config.FROZEN_DTYPES) == (CHECKPOINT_MODES, FROZEN_DTYPES)
    assert (run_config.TrainSection().activation_checkpointing, run_config.TrainSection().frozen_dtype) == ("off", "auto")
    cfg = config_from_dict({"train": {"activation_checkpointing": "all", "frozen_dtype": "fp32"}})
    assert (cfg.train.activation_checkpointing, cfg.train.frozen_dtype) == ("all", "fp32")
    for bad in ({"activation_checkpointing": "blocks"}, {"frozen_dtype": "bf16"}):
        with pytest.raises(ConfigError):
            config_from_dict({"train": bad})


def test_selective_recomputation_keeps_the_matrix_products():
    """``selective`` runs no matrix product of a frozen block twice (its outputs are kept), while
    ``full`` runs each forward one again; the gradient is the plain one either way."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from appt.recompute import call

    class CountProducts(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    block = APPTForClassification(_config("cls")).backbone.blocks[0]
    x = torch.randn(2, 10, 48)
    counts, grads = {}, {}
    for recompute in ("off", "full", "selective"):
        inp = x.clone().requires_grad_(True)
        with CountProducts() as counter:
            call(block, inp, recompute=recompute).square().sum().backward()
        counts[recompute], grads[recompute] = counter.n, inp.grad
    forward_products = counts["full"] - counts["off"]
    assert forward_products > 0 and counts["selective"] == counts["off"], counts
    assert torch.allclose(grads["selective"], grads["off"], rtol=1e-5, atol=1e-7)


def test_max_pool_gradient_is_amax_bit_for_bit():
    """``max_pool``'s own backward gives autograd's amax gradient exactly: tied maxima (shared
    evenly), signed zeros, infinities, and beside the mean as the stage pools."""
    from appt.embedding.layers import max_pool

    torch.manual_seed(0)
    x = torch.round(torch.randn(4, 8, 16, 32) * 4) / 4  # quarter steps: many tied maxima
    x[0, 0, :, 0] = -0.0
    x[0, 0, 3, 1] = float("inf")
    g = torch.randn(4, 8, 32)
    g[0, 0, :3] = torch.tensor([-0.0, 0.0, -1e-38])
    assert (x == x.amax(dim=2, keepdim=True)).sum(2).max() > 1  # ties do occur

    def grad(pool) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = x.clone().requires_grad_()
        out = pool(leaf)
        out.backward(g)
        return out.detach(), leaf.grad

    for pool, ref in ((lambda t: max_pool(t, 2), lambda t: t.amax(dim=2)),
                      (lambda t: max_pool(t, 2) + t.mean(dim=2), lambda t: t.amax(dim=2) + t.mean(dim=2))):
        (out, dx), (out_ref, dx_ref) = grad(pool), grad(ref)
        assert torch.equal(out.view(torch.int32), out_ref.view(torch.int32))
        assert torch.equal(dx.view(torch.int32), dx_ref.view(torch.int32))  # bits, so -0.0 != 0.0
    assert max_pool(x, 2).grad_fn is None  # no autograd graph: plain amax
