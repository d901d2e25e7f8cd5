"""``appt convert``: a state dict named and shaped as the authors' code saves it becomes an appt folder.

The authors' state dict is written here from their naming scheme (``encoder_large.EncP.*`` 1x1
convolutions, ``conv_block``, ``pos_embed``, ``enc_norm``, a ``head`` Sequential, the ViT's
``blocks.*`` and ``cls_token``, the unused ``cls_pos``) at tiny widths: a vit_tiny backbone
(192 wide) read from a local checkpoint, an embedding 24 -> 48 -> 96 -> 192 -> 192 wide, 16 tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from conftest import MODELNET10
from safetensors.torch import save_file

from appt import APPTForClassification
from appt.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "scanobjectnn_pb_t50_rs_vit_b16_paper.yaml"
WIDTHS, EMBED, TOKENS, CLASSES, IN_CHANNELS = (48, 96, 192, 192), 24, 16, 15, 4


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A vit_tiny checkpoint file (the backbone the config names) and its tensors."""
    torch.manual_seed(1)
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    state["cls_token"] = torch.randn_like(state["cls_token"])
    path = tmp_path_factory.mktemp("vit") / "vit_tiny.safetensors"
    save_file(state, str(path))
    return path, state


def overrides(vit_path: Path) -> list[str]:
    """The paper preset at tiny widths on vit_tiny."""
    return ["model.backbone.name=vit_tiny_patch16_224", f"model.backbone.checkpoint={vit_path}",
            f"model.embed_dim={EMBED}", "model.widths=[48, 96, 192, -1]", f"model.centers=[128, 64, 32, {TOKENS}]",
            "model.neighbors=[8]", "data.root=/nonexistent/ScanObjectNN"]


def authors_state(vit: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict as their ``APF`` (``Point_PN_scan`` encoder) saves it, with random trained values."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return 0.1 * torch.randn(*shape, generator=g)

    def bn(prefix: str, c: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + rand(c), f"{prefix}.bias": rand(c), f"{prefix}.running_mean": rand(c),
                f"{prefix}.running_var": 1 + rand(c).abs(), f"{prefix}.num_batches_tracked": torch.tensor(300)}

    enc, width = "encoder_large.EncP.", vit["cls_token"].shape[-1]
    state = {enc + "raw_point_embed.net.0.weight": rand(EMBED, IN_CHANNELS, 1), **bn(enc + "raw_point_embed.net.1", EMBED)}
    dims = (EMBED, *WIDTHS)
    for i, blocks in enumerate((2, 1, 1, 1)):
        lga, out = f"{enc}LGA_list.{i}.", dims[i + 1]
        state[lga + "linear1.net.0.weight"] = rand(out, 2 * dims[i], 1)  # Conv1d on [neighbour, centre]
        state.update(bn(lga + "linear1.net.1", out))
        for j in range(blocks):
            block = f"{lga}linear2.{j}."
            state |= {block + "net1.0.weight": rand(out // 2, out, 1, 1), block + "net1.0.bias": rand(out // 2)}
            state |= bn(block + "net1.1", out // 2)
            state |= {block + "net2.0.weight": rand(out, out // 2, 1, 1), block + "net2.0.bias": rand(out)}
            state |= bn(block + "net2.1", out)
    state |= {"conv_block.weight": rand(1, 2, 1), "conv_block.bias": rand(1), "pos_embed": rand(1, 1 + TOKENS, width),
              "cls_pos": torch.randn(1, 1, width, generator=g), "enc_norm.weight": 1 + rand(width),
              "enc_norm.bias": rand(width), "cls_token": vit["cls_token"].clone()}
    state |= {k: v.clone() for k, v in vit.items() if k.startswith("blocks.")}
    state |= {"head.0.weight": rand(512, width), "head.0.bias": rand(512), **bn("head.1", 512),
              "head.4.weight": rand(256, 512), "head.4.bias": rand(256), **bn("head.5", 256),
              "head.8.weight": rand(CLASSES, 256), "head.8.bias": rand(CLASSES)}
    return state


def convert(state: dict, vit_path: Path, tmp_path: Path, extra: list[str] = ()) -> tuple[int, Path]:
    ckpt = tmp_path / "best_checkpoint.pth"
    torch.save({"net": state, "epoch": 299, "acc": 88.5}, ckpt)  # as their save_model writes it
    out = tmp_path / "converted"
    sets = [x for item in [*overrides(vit_path), *extra] for x in ("--set", item)]
    code = main(["convert", "--authors-checkpoint", str(ckpt), "--config", str(PRESET), *sets, "--out", str(out)])
    return code, out


def test_converted_folder_holds_their_tensors_in_appts_layout(vit, tmp_path: Path, capsys) -> None:
    vit_path, vit_state = vit
    state = authors_state(vit_state)
    code, out = convert(state, vit_path, tmp_path)
    assert code == 0, capsys.readouterr().err
    model = APPTForClassification.from_pretrained(out).eval()
    emb, enc = model.embedding, "encoder_large.EncP."
    assert torch.equal(emb.raw.linear.weight, state[enc + "raw_point_embed.net.0.weight"][..., 0])
    for i, stage in enumerate(emb.stages):
        linear1 = state[f"{enc}LGA_list.{i}.linear1.net.0.weight"][..., 0]
        half = linear1.shape[1] // 2
        assert torch.equal(stage.neighbour_proj.weight, linear1[:, :half])  # their concat: [neighbour, centre]
        assert torch.equal(stage.centre_proj.weight, linear1[:, half:])
        assert torch.equal(stage.bn.running_var, state[f"{enc}LGA_list.{i}.linear1.net.1.running_var"])
    inner = emb.stages[0].blocks[1].inner
    assert torch.equal(inner.linear.bias, state[f"{enc}LGA_list.0.linear2.1.net1.0.bias"])
    assert torch.equal(model.position.mix.weight.flatten(), state["conv_block.weight"].flatten())
    assert torch.equal(model.position.mix.bias, state["conv_block.bias"])
    assert torch.equal(model.table.table, state["pos_embed"]) and torch.equal(model.norm.weight, state["enc_norm.weight"])
    assert torch.equal(model.head.mlp[2].bn.running_mean, state["head.5.running_mean"])
    assert torch.equal(model.head.mlp[4].weight, state["head.8.weight"])
    assert torch.equal(model.backbone.class_token(with_position=False), state["cls_token"])
    assert model.count_parameters()[0] == sum(v.numel() for k, v in state.items() if v.is_floating_point()
                                              and "running" not in k and not k.startswith(("blocks.", "cls_")))
    with torch.no_grad():
        logits = model(torch.rand(2, 512, IN_CHANNELS))
    assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all()


def test_appt_predict_reads_the_converted_folder(vit, tmp_path: Path, capsys) -> None:
    vit_path, vit_state = vit
    code, out = convert(authors_state(vit_state), vit_path, tmp_path)
    assert code == 0
    files = sorted(MODELNET10.glob("chair/test/*.pcd"))[:2]
    assert main(["predict", "--weights", str(out), *map(str, files), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "predictions.csv").read_text().count("\n") == 3  # header + two files


@pytest.mark.parametrize("case, message", [
    ("missing", "encoder_large.EncP.LGA_list.1.linear1.net.1.running_var: missing"),
    ("unexpected", "encoder_large.EncP.LGA_list.3.linear3.weight: unexpected"),
    ("shape", "pos_embed: shape (1, 65, 192), the config needs (1, 17, 192)"),
    ("frozen", "blocks.3.attn.qkv.weight: differs from the backbone timm_vit:vit_tiny_patch16_224"),
    ("cls", "cls_token: differs from the backbone"),
    ("option", "model.readout_pool='concat': the authors' model has 'sum'"),
])
def test_convert_refuses_with_one_line_naming_the_key(vit, tmp_path: Path, capsys, case: str, message: str) -> None:
    vit_path, vit_state = vit
    state, extra = authors_state(vit_state), []
    if case == "missing":
        del state["encoder_large.EncP.LGA_list.1.linear1.net.1.running_var"]
    elif case == "unexpected":
        state["encoder_large.EncP.LGA_list.3.linear3.weight"] = torch.zeros(3)
    elif case == "shape":
        state["pos_embed"] = torch.zeros(1, 65, 192)
    elif case == "frozen":
        state["blocks.3.attn.qkv.weight"] = state["blocks.3.attn.qkv.weight"] + 1e-5
    elif case == "cls":
        state["cls_token"] = state["cls_token"] + vit_state["pos_embed"][:, :1]  # with the ViT's slot: not theirs
    else:
        extra = ["model.readout_pool=concat"]
    code, out = convert(state, vit_path, tmp_path, extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (out / "appt_weights.safetensors").exists()


def test_frozen_tensors_equal_within_a_millionth_pass(vit, tmp_path: Path) -> None:
    vit_path, vit_state = vit
    state = authors_state(vit_state)
    state["blocks.3.attn.qkv.weight"] = state["blocks.3.attn.qkv.weight"] + 5e-7  # float rounding of a copy
    assert convert(state, vit_path, tmp_path)[0] == 0
