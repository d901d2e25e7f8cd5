"""``seg_model: authors`` (``AuthorsPartSegmentation``, their ``APF_Seg`` repaired) and its ``appt convert``.

Models come from the ShapeNetPart paper preset at tiny sizes (vit_tiny with random weights, three
blocks read, a 4-stage embedding to 16 tokens); clouds are the real Cap shapes. The authors' state
dict for ``convert`` is written here from their naming scheme at those sizes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_convert_authors import authors_state, vit  # noqa: F401 - vit is a fixture

from appt.cli.main import main
from appt.data import build_dataset
from appt.embedding import make_prompt
from appt.errors import ConfigError
from appt.models.authors_segmentation import AuthorsPartSegmentation, AuthorsSegHead
from appt.training.builders import build_model
from appt.training.config import load_config
from conftest import DATA

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "shapenetpart_vit_b16_paper.yaml"
TINY = ["model.embed_dim=24", "model.widths=[48, 96, 192, -1]", "model.centers=[128, 64, 32, 16]",
        "model.neighbors=[8]", "model.blocks=[2, 1, 1, 1]", "model.seg_feature_blocks=[1, 2, 3]",
        "model.seg_fp_widths=[32]", "model.head_hidden=[24]", "data.root=/nonexistent"]
RANDOM_VIT = ["model.backbone.name=vit_tiny_patch16_224", "model.backbone.pretrained=false"]
CAP = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal"


def preset_model(*extra: str) -> AuthorsPartSegmentation:
    torch.manual_seed(0)
    return build_model(load_config(PRESET, [*RANDOM_VIT, *TINY, *extra]), None)


@pytest.fixture(scope="module")
def cap() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``points (B, 512, 6), seg (B, 512), category (B,)``: the Cap val shapes."""
    ds = build_dataset("shapenetpart", root=CAP, split="val", num_points=512, sampling="random", use_normals=True,
                       cache=False, seed=0)
    samples = [ds[i] for i in range(len(ds))]
    return tuple(torch.stack([s[k] for s in samples]) for k in ("points", "seg", "category"))


def test_vit_b_preset_trains_their_count_plus_the_repaired_dgcnn() -> None:
    """Their freeze() trains 29,185,813 (6 input channels): appt drops the unused prompt_pos (768)
    and trains the two DGCNN steps their name filter left frozen at random init (3,150,848)."""
    cfg = load_config(PRESET, ["model.backbone.name=vit_base_patch16_224", "model.backbone.pretrained=false",
                               "data.root=/nonexistent"])
    model = build_model(cfg, None)
    graph = sum(p.numel() for name, p in model.named_parameters() if name.startswith("graph_"))
    assert graph == 3_150_848
    assert model.count_parameters()[0] == 29_185_813 - 768 + graph == 32_335_893


def test_only_the_new_modules_train_and_the_backbone_stays(cap) -> None:
    model = preset_model().train()
    points, seg, category = (t[:4] for t in cap)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {"embedding", "position", "norm", "enc_steps", "prop_mid", "prop_fine", "graph_mid",
                       "graph_fine", "prop_points", "head"}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(points, category).flatten(0, 1), seg.flatten())
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # none idle (DDP)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in frozen.items())
    assert not model.backbone.training  # frozen blocks stay in eval mode


def test_eval_logits_follow_the_points_in_any_order(cap) -> None:
    model = preset_model().eval()
    points, _, category = cap
    points, category = points[:2], category[:2]
    perm = torch.randperm(points.shape[1], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(points, category)
        shuffled = model(points[:, perm], category)
    assert logits.shape == (2, 512, 50)
    assert torch.allclose(shuffled, logits[:, perm], atol=1e-4)


def test_later_prompts_summarise_every_token_of_the_block_before() -> None:
    """Their per-block prompt: ``max + mean`` over class token, earlier prompts and points alike."""
    model = preset_model().eval()
    x = torch.randn(2, 1 + 16, 192)
    prompt = make_prompt(x[:, 1:])
    expect, tokens = [], x
    for i, block in enumerate(model.backbone.blocks[:3]):
        tokens = block(torch.cat((tokens[:, : 1 + i], prompt, tokens[:, -16:]), dim=1))
        prompt = tokens.amax(dim=1, keepdim=True) + tokens.mean(dim=1, keepdim=True)
        expect.append(tokens)
    with torch.no_grad():
        got = model.run_backbone(x, make_prompt(x[:, 1:]))
    assert model.prompts.read_sizes() == [18, 19, 20]
    assert torch.allclose(got, torch.cat(expect, dim=1), atol=1e-5)


def test_head_equals_one_linear_layer_over_local_and_global_features() -> None:
    head = AuthorsSegHead(5, 7, 4, 3, 0.0).eval()
    local, glob = torch.randn(2, 6, 5), torch.randn(2, 7)
    joint = torch.cat((local, glob.unsqueeze(1).expand(-1, 6, -1)), dim=-1)
    h = head.bn(head.first(joint).flatten(0, 1)).unflatten(0, (2, 6))
    assert torch.allclose(head(local, glob), head.out(h), atol=1e-5)


def test_needs_three_read_blocks_and_one_hidden_layer() -> None:
    with pytest.raises(ConfigError, match="reads exactly 3 blocks"):
        preset_model("model.seg_feature_blocks=[2, 3]")
    with pytest.raises(ConfigError, match="one hidden layer"):
        preset_model("model.head_hidden=[24, 24]")


# --- appt convert ------------------------------------------------------------------------------

D, R, H, CATEGORIES, PARTS = 192, 32, 24, 16, 50


def seg_state(vit_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their ``APF_Seg`` state dict at the tiny sizes: the encoder and trunk as in classification
    (``EncP.`` without ``encoder_large.``), ``propagation_0..7``, ``dgcnn_pro_1/2``, the conv head, the
    zero ``pos_embed`` and the unused tensors."""
    g = torch.Generator().manual_seed(5)

    def rand(*shape: int) -> torch.Tensor:
        return 0.1 * torch.randn(*shape, generator=g)

    def bn(prefix: str, c: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + rand(c), f"{prefix}.bias": rand(c), f"{prefix}.running_mean": rand(c),
                f"{prefix}.running_var": 1 + rand(c).abs(), f"{prefix}.num_batches_tracked": torch.tensor(9)}

    def fp(index: int, in_dim: int, out: int) -> dict[str, torch.Tensor]:
        p = f"propagation_{index}."
        return {p + "mlp_convs.0.weight": rand(4 * out, in_dim, 1), p + "mlp_convs.0.bias": rand(4 * out),
                **bn(p + "mlp_bns.0", 4 * out), p + "mlp_convs.1.weight": rand(out, 4 * out, 1),
                p + "mlp_convs.1.bias": rand(out), **bn(p + "mlp_bns.1", out)}

    state = {k.removeprefix("encoder_large."): v for k, v in authors_state(vit_state).items()
             if not k.startswith(("head.", "pos_embed"))}
    state |= fp(0, CATEGORIES + 3 + D, D) | fp(1, 3 + D, D) | fp(2, 3 + D, D)
    for j, skip in enumerate((192, 96, 48, 24)):  # propagation_3 .. 6 here (their 5 stages: 3 .. 7)
        state |= fp(3 + j, skip + (D if j == 0 else R), R)
    for i in (1, 2):
        p = f"dgcnn_pro_{i}."
        state |= {p + "layer1.0.weight": rand(R, 2 * D, 1, 1), p + "layer1.1.weight": 1 + rand(R), p + "layer1.1.bias": rand(R),
                  p + "layer2.0.weight": rand(D, 2 * R, 1, 1), p + "layer2.1.weight": 1 + rand(D), p + "layer2.1.bias": rand(D)}
    state |= {"head.0.weight": rand(H, R + D + 6 * D, 1), "head.0.bias": rand(H), **bn("head.1", H),
              "head.3.weight": rand(PARTS, H, 1), "head.3.bias": rand(PARTS), "pos_embed": torch.zeros(1, 17, D),
              "prompt_pos": rand(1, 1, D), "label_conv.0.weight": rand(64, 16, 1), "decode_list.0.fuse.net.0.weight": rand(8)}
    return state


def convert(state: dict, vit_path: Path, tmp_path: Path, extra: list[str] = ()) -> tuple[int, Path]:
    ckpt = tmp_path / "best_insiou_model.pth"
    torch.save({"model": state, "epoch": 349}, ckpt)  # as their run_pn_seg.py saves it
    out = tmp_path / "converted"
    sets = ["model.backbone.name=vit_tiny_patch16_224", f"model.backbone.checkpoint={vit_path}", "model.in_channels=4",
            *TINY, *extra]
    code = main(["convert", "--authors-checkpoint", str(ckpt), "--config", str(PRESET),
                 *[x for item in sets for x in ("--set", item)], "--out", str(out)])
    return code, out


def test_convert_places_their_tensors(vit, tmp_path: Path, capsys) -> None:  # noqa: F811
    vit_path, vit_state = vit
    state = seg_state(vit_state)
    code, out = convert(state, vit_path, tmp_path)
    assert code == 0, capsys.readouterr().err
    model = AuthorsPartSegmentation.from_pretrained(out).eval()
    assert torch.equal(model.embedding.raw.linear.weight, state["EncP.raw_point_embed.net.0.weight"][..., 0])
    assert torch.equal(model.enc_steps[0].mlp[1].linear.bias, state["propagation_3.mlp_convs.1.bias"])
    assert torch.equal(model.enc_steps[3].mlp[0].bn.running_var, state["propagation_6.mlp_bns.0.running_var"])
    assert torch.equal(model.prop_points.mlp[0].linear.weight, state["propagation_0.mlp_convs.0.weight"][..., 0])
    assert torch.equal(model.prop_fine.mlp[1].linear.weight, state["propagation_1.mlp_convs.1.weight"][..., 0])
    assert torch.equal(model.graph_mid.first.linear.weight, state["dgcnn_pro_2.layer1.0.weight"][..., 0, 0])
    assert torch.equal(model.graph_fine.second.norm.bias, state["dgcnn_pro_1.layer2.1.bias"])
    assert torch.equal(model.head.first.weight, state["head.0.weight"][..., 0])
    assert torch.equal(model.head.out.weight, state["head.3.weight"][..., 0])
    assert torch.equal(model.norm.weight, state["enc_norm.weight"]) and model.table is None
    with torch.no_grad():
        logits = model(torch.rand(1, 256, 4), torch.tensor([2]))
    assert logits.shape == (1, 256, PARTS) and torch.isfinite(logits).all()


@pytest.mark.parametrize("case, message", [
    ("missing", "dgcnn_pro_2.layer2.1.weight: missing"),
    ("unexpected", "propagation_9.mlp_convs.0.weight: unexpected"),
    ("shape", "head.0.weight: shape (24, 100, 1)"),
    ("table", "pos_embed: not zero"),
    ("frozen", "blocks.1.mlp.fc1.weight: differs from the backbone"),
    ("simple", "need model.seg_model: authors"),
])
def test_convert_refuses_with_one_line(vit, tmp_path: Path, capsys, case: str, message: str) -> None:  # noqa: F811
    vit_path, vit_state = vit
    state, extra = seg_state(vit_state), []
    if case == "missing":
        del state["dgcnn_pro_2.layer2.1.weight"]
    elif case == "unexpected":
        state["propagation_9.mlp_convs.0.weight"] = torch.zeros(3)
    elif case == "shape":
        state["head.0.weight"] = torch.zeros(24, 100, 1)
    elif case == "table":
        state["pos_embed"][0, 3, 5] = 0.01
    elif case == "frozen":
        state["blocks.1.mlp.fc1.weight"] = state["blocks.1.mlp.fc1.weight"] + 1e-5
    else:
        extra = ["model.seg_model=appt"]
    code, out = convert(state, vit_path, tmp_path, extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (out / "appt_weights.safetensors").exists()
