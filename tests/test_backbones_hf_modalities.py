"""Hugging Face vision, video and audio backbones (``hf_vision``, ``hf_video``, ``hf_audio``).

No pretrained weights of these models are reachable offline: every model is a tiny random one
built with transformers' own config class and saved to tmp_path, then loaded by folder through
``BackboneSpec``. Our blocks are checked against the Hugging Face model's own forward on the
same embeddings (as the MiniLM / MPNet tests do); pretrained quality needs the user's weights.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub read it

from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import MODELNET10, assert_frozen_without_dropout, run_blocks
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from appt import APPTConfig, APPTForClassification
from appt.backbones import BackboneSpec, available_backbones, build_backbone
from appt.backbones.bundled import stage_backbone
from appt.errors import CheckpointError, ConfigError

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, initializer_range=0.1)
SPEECH = dict(conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
              num_conv_pos_embedding_groups=4)
SMALL_APPT = dict(  # a light 2-stage embedding, as in test_model.py
    num_classes=10, embed_dim=24, centers=(128, 32), neighbors=(12, 12), widths=(48, -1), blocks=(1, 1),
    head_hidden=(64,),
)


def _cases() -> dict[str, tuple[str, str, str, dict[str, Any]]]:
    """case -> (family, transformers model class, config class, config kwargs); tiny on purpose."""
    image = dict(TINY, image_size=32, patch_size=16)
    return {
        "dinov2": ("hf_vision", "Dinov2Model", "Dinov2Config", dict(TINY, image_size=28, patch_size=14)),
        "clip_vision": ("hf_vision", "CLIPVisionModel", "CLIPVisionConfig", image),
        "siglip_vision": ("hf_vision", "SiglipVisionModel", "SiglipVisionConfig", image),
        "vit": ("hf_vision", "ViTModel", "ViTConfig", image),
        "deit": ("hf_vision", "DeiTModel", "DeiTConfig", image),
        "videomae": ("hf_video", "VideoMAEModel", "VideoMAEConfig", dict(image, num_frames=4, tubelet_size=2)),
        "ast": ("hf_audio", "ASTModel", "ASTConfig", dict(TINY, num_mel_bins=32, max_length=32, patch_size=16)),
        "wav2vec2": ("hf_audio", "Wav2Vec2Model", "Wav2Vec2Config", dict(TINY, **SPEECH)),
        "wav2vec2_large": ("hf_audio", "Wav2Vec2Model", "Wav2Vec2Config",
                           dict(TINY, **SPEECH, do_stable_layer_norm=True)),
        "hubert": ("hf_audio", "HubertModel", "HubertConfig", dict(TINY, **SPEECH)),
    }


CASES = _cases()
WITH_CLS = {"dinov2", "clip_vision", "vit", "deit", "ast"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def make_model(case: str, seed: int = 0) -> nn.Module:
    import transformers

    _, model_cls, config_cls, kwargs = CASES[case]
    torch.manual_seed(1000 + seed)  # not the adapter's seed 0, so loaded and random weights differ
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()
    with torch.no_grad():  # DeiT/AST start these at 0: make them visible, so a misplaced slot shows
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] in {"cls_token", "class_embedding", "distillation_token", "position_embeddings"}:
                p.normal_(0.0, 1.0)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, nn.Module]]:
    """Every case saved once as a Hugging Face folder, with the model it was saved from."""
    out = {}
    for case in CASES:
        model = make_model(case)
        path = tmp_path_factory.mktemp(case)
        model.save_pretrained(path)
        out[case] = (path, model)
    return out


@pytest.fixture(scope="module")
def built(saved) -> dict[str, Any]:
    return {case: build_backbone(BackboneSpec(CASES[case][0], str(path))) for case, (path, _) in saved.items()}


class NoPosition(nn.Module):
    """Stands in for wav2vec2/HuBERT's positional convolution, which the adapter skips."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


def embeddings_and_reference(case: str, model: nn.Module) -> tuple[Tensor, Tensor]:
    """The tokens the model's own embedding makes of a random input, ``(1, T, D)``, and what the
    model's own forward returns from them (``last_hidden_state``)."""
    gen = torch.Generator().manual_seed(1)
    config = model.config
    if case in ("wav2vec2", "wav2vec2_large", "hubert"):
        wave = torch.randn(1, 400, generator=gen)
        features = model.feature_extractor(wave).transpose(1, 2)
        x = model.feature_projection(features)
        x = x[0] if isinstance(x, tuple) else x
        model.encoder.pos_conv_embed = NoPosition()  # what the adapter skips (APPT's position feature replaces it)
        return x, model(wave).last_hidden_state
    if case == "ast":
        spectrogram = torch.randn(1, config.max_length, config.num_mel_bins, generator=gen)
        return model.embeddings(spectrogram), model(spectrogram).last_hidden_state
    if case == "videomae":
        video = torch.randn(1, config.num_frames, 3, config.image_size, config.image_size, generator=gen)
        return model.embeddings(video, None), model(video).last_hidden_state
    pixels = torch.randn(1, 3, config.image_size, config.image_size, generator=gen)
    return model.embeddings(pixels), model(pixel_values=pixels).last_hidden_state


# --- each family reproduces its Hugging Face model ---------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_blocks_reproduce_the_hf_models_own_forward(saved, built, case) -> None:
    model = saved[case][1]
    backbone = built[case]
    with torch.no_grad():
        x, theirs = embeddings_and_reference(case, model)
        if case == "clip_vision":  # HF applies post_layernorm to the pooled token only; we to every token
            theirs = model.post_layernorm(theirs)
        ours = run_blocks(backbone, x)
    assert (backbone.width, backbone.depth) == (32, 2)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    if case in WITH_CLS:  # the class token with its position slot is token 0 of the model's own embedding
        torch.testing.assert_close(backbone.cls_token, x[:, :1], atol=1e-6, rtol=0)
    else:
        assert backbone.cls_token is None and backbone.class_token(with_position=False) is None


def test_clip_pooled_output_is_our_token_0(saved, built) -> None:
    model = saved["clip_vision"][1]
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = run_blocks(built["clip_vision"], model.embeddings(pixels))
        torch.testing.assert_close(ours[:, 0], model(pixel_values=pixels).pooler_output, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["dinov2", "clip_vision", "deit", "ast"])
def test_bare_class_token_is_the_learnt_token_without_its_position_slot(saved, built, case) -> None:
    emb = saved[case][1].embeddings
    bare = emb.class_embedding.view(1, 1, -1) if case == "clip_vision" else emb.cls_token
    assert torch.equal(built[case].class_token(with_position=False), bare)
    assert not torch.equal(built[case].class_token(with_position=True), bare)


@pytest.mark.parametrize("case", list(CASES))
def test_nothing_trains_no_dropout_and_one_name_per_tensor(built, case) -> None:
    assert_frozen_without_dropout(built[case])


# Measured (3 model seeds x 3 draws of 5 or 17 tokens per case): when only the last token
# changes, token 0 moves by 0.10-0.50 (max abs) on DINOv2, 0.10-0.41 ViT, 0.09-0.48 DeiT,
# 0.13-0.62 CLIP, 0.27-1.05 SigLIP, 0.08-0.45 VideoMAE, 0.07-0.56 AST, 0.08-0.43 wav2vec2 /
# HuBERT; by exactly 0 under a causal mask.
NONCAUSAL_BOUND = 0.02


@pytest.mark.parametrize("case", list(CASES))
def test_attention_is_not_causal(built, case) -> None:
    # The last token is replaced by fresh noise (a constant shift would not do: LayerNorm, before
    # or after the attention, removes it exactly). Any token count is accepted (1, 5, 17 below).
    backbone = built[case]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tokens in (5, 17):
            x = torch.randn(2, tokens, 32, generator=gen)
            y = x.clone()
            y[:, -1] = torch.randn(2, 32, generator=gen)
            moved = (run_blocks(backbone, x)[:, 0] - run_blocks(backbone, y)[:, 0]).abs().max()
            assert moved > NONCAUSAL_BOUND, f"token 0 ignores the last token (moved {moved:.2e}): attention is causal"
        assert run_blocks(backbone, torch.randn(2, 1, 32, generator=gen)).shape == (2, 1, 32)


@pytest.mark.parametrize("case", list(CASES))
def test_appt_classifier_trains_on_the_family(saved, case) -> None:
    torch.manual_seed(0)
    spec = BackboneSpec(CASES[case][0], str(saved[case][0]))
    model = APPTForClassification(APPTConfig(backbone=spec, **SMALL_APPT))
    assert not [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    clouds = torch.rand(2, 256, 3) * 2 - 1
    loss = F.cross_entropy(model.train()(clouds), torch.tensor([1, 7]))
    loss.backward()
    assert torch.isfinite(loss)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(model.get_parameter(n).grad is not None for n in trained if n.startswith("embedding."))
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.backbone.named_parameters())


# --- loading -----------------------------------------------------------------------------------


def test_full_clip_and_siglip_checkpoints_load_their_vision_tower(tmp_path) -> None:
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    text = dict(TINY, vocab_size=99, max_position_embeddings=16)
    vision = dict(TINY, image_size=32, patch_size=16)
    for name, model in (
        ("clip", CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))),
        ("siglip", SiglipModel(SiglipConfig(text_config=text, vision_config=vision))),
    ):
        model.save_pretrained(tmp_path / name)
        backbone = build_backbone(BackboneSpec("hf_vision", str(tmp_path / name)))
        tower = model.vision_model
        assert (backbone.width, backbone.depth) == (32, 2)
        layer = getattr(tower, "encoder", tower).layers[1]
        assert torch.equal(backbone.blocks[1].layer.self_attn.q_proj.weight, layer.self_attn.q_proj.weight)
        assert torch.equal(backbone.final_norm.weight, tower.post_layernorm.weight)


def test_random_weights_repeat_per_seed_and_differ_from_the_saved_ones(saved) -> None:
    path = str(saved["dinov2"][0])
    build = lambda seed: build_backbone(BackboneSpec("hf_vision", path, pretrained=False, options={"seed": seed}))
    a, b, c = build(0), build(0), build(1)
    q = lambda m: next(p for p in m.blocks[0].parameters() if p.ndim == 2)  # the first projection matrix
    loaded = build_backbone(BackboneSpec("hf_vision", path))
    assert torch.equal(q(a), q(b)) and torch.equal(a.cls_token, b.cls_token)
    assert not torch.equal(q(a), q(c))
    assert not torch.allclose(q(a), q(loaded))
    with pytest.raises(ConfigError, match="unknown options"):
        build_backbone(BackboneSpec("hf_vision", path, pretrained=False, options={"sead": 1}))


def test_weights_missing_a_block_tensor_are_refused_but_a_missing_pooler_is_not(saved, tmp_path) -> None:
    from transformers import ViTModel

    path, model = saved["vit"]
    state = load_file(str(path / "model.safetensors"))
    del state[next(k for k in state if k.startswith(("layers.1.", "encoder.layer.1.")))]  # 5.x / 4.x layouts
    model.config.save_pretrained(tmp_path / "broken")
    save_file(state, str(tmp_path / "broken" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="weights lack 1 tensors") as info:
        build_backbone(BackboneSpec("hf_vision", str(tmp_path / "broken")))
    assert "\n" not in str(info.value)
    ViTModel(model.config, add_pooling_layer=False).save_pretrained(tmp_path / "no_pooler")
    assert build_backbone(BackboneSpec("hf_vision", str(tmp_path / "no_pooler"))).depth == 2


@pytest.mark.parametrize("family", ["hf_vision", "hf_video", "hf_audio"])
def test_unsupported_model_types_and_absent_names_are_one_line_config_errors(tmp_path, family) -> None:
    from transformers import BertConfig

    BertConfig(**{k: v for k, v in TINY.items()}).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=f"{family}:.*model type 'bert' unsupported; known") as info:
        build_backbone(BackboneSpec(family, str(tmp_path)))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="not a local model directory or in the local HF cache") as info:
        build_backbone(BackboneSpec(family, "nobody/no-such-model-xyz"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "family,config_class,reason",
    [("hf_vision", "BeitConfig", "relative position bias"), ("hf_audio", "Wav2Vec2ConformerConfig", "rotary")],
)
def test_families_with_position_dependent_blocks_are_refused_saying_why(tmp_path, family, config_class, reason) -> None:
    import transformers

    getattr(transformers, config_class)(**TINY).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=f"refused: .*{reason}"):
        build_backbone(BackboneSpec(family, str(tmp_path)))


def test_new_families_are_listed_and_cannot_yet_be_bundled(saved, tmp_path) -> None:
    assert {"hf_vision", "hf_video", "hf_audio"} <= set(available_backbones())
    with pytest.raises(ConfigError, match="'hf_vision' cannot be bundled"):
        stage_backbone(BackboneSpec("hf_vision", str(saved["vit"][0])), tmp_path)


# --- end to end through `appt train` -----------------------------------------------------------


@pytest.mark.parametrize("case", ["dinov2", "videomae", "ast"])
def test_appt_train_runs_one_step_on_the_family(saved, tmp_path, case) -> None:
    from appt.cli.main import main

    cfg = {
        "model": {"backbone": {"family": "point_mae", "pretrained": False}, "embed_dim": 24, "centers": [64, 32],
                  "neighbors": [12, 12], "widths": [48, -1], "blocks": [1, 1], "head_hidden": [32]},
        "data": {"dataset": "modelnet_points", "root": str(MODELNET10), "num_points": 256, "batch_size": 10,
                 "subset": 10, "test_subset": 10, "options": {"cache_dir": str(tmp_path / "cache")}},
        "train": {"epochs": 1, "lr": 1e-3},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    sets = [f"model.backbone.family={CASES[case][0]}", f"model.backbone.name={saved[case][0]}", f"run_dir={run}"]
    args = ["train", "--config", str(tmp_path / "tiny.yaml"), "--no-progress"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    assert (run / "checkpoints" / "last").is_dir()


# --- the shipped base configs ------------------------------------------------------------------

BASE_CONFIGS = ["dinov2_b14", "clip_vit_b16_vision", "ast", "videomae_b"]


@pytest.mark.parametrize("name", BASE_CONFIGS)
def test_base_configs_name_a_hub_id_and_without_it_cached_fail_in_one_line(name, tmp_path, monkeypatch) -> None:
    from appt.training.config import load_config

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache, always

    root = Path(__file__).resolve().parents[1]
    spec = BackboneSpec(**load_config(root / "configs" / "base" / f"{name}.yaml").model["backbone"])
    assert spec.family in {"hf_vision", "hf_video", "hf_audio"} and spec.pretrained
    with pytest.raises(ConfigError, match=f"{spec.family}: '{spec.name}' is not a local model directory") as info:
        build_backbone(spec)
    assert "\n" not in str(info.value)


def test_a_hub_id_in_the_local_cache_loads_without_network(saved, tmp_path, monkeypatch) -> None:
    """A hub id resolves through the Hugging Face cache layout (refs/main -> snapshots/<commit>)."""
    repo = tmp_path / "hub" / "models--appt-test--tiny-vit"
    commit = "0" * 40
    saved["vit"][1].save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backbone = build_backbone(BackboneSpec("hf_vision", "appt-test/tiny-vit"))
    assert torch.equal(backbone.cls_token, built_cls(saved["vit"][1]))


def built_cls(model: nn.Module) -> Tensor:
    """A ViT's class token plus its position slot, from the model itself."""
    return model.embeddings.cls_token + model.embeddings.position_embeddings[:, :1]


def test_appt_info_lists_the_new_families(capsys) -> None:
    from appt.cli.main import main

    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("backbone families:"))
    assert {"hf_vision", "hf_video", "hf_audio"} <= {name.strip() for name in line.split(":", 1)[1].split(",")}


@pytest.mark.parametrize("case", ["dinov2", "clip_vision", "vit", "videomae", "ast", "wav2vec2"])
def test_lora_finds_the_attention_projections_of_the_family(saved, case) -> None:
    spec = BackboneSpec(CASES[case][0], str(saved[case][0]))
    model = APPTForClassification(APPTConfig(backbone=spec, variant="lora", **SMALL_APPT))
    trains = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert len(trains) >= 3 and trains <= {"q_proj", "k_proj", "v_proj", "query", "key", "value"}, trains


def test_a_config_of_a_model_type_transformers_does_not_know_is_one_line(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "appt-no-such-type", "hidden_size": 32}')
    with pytest.raises(ConfigError, match="hf_audio:.*unreadable config") as info:
        build_backbone(BackboneSpec("hf_audio", str(tmp_path)))
    assert "\n" not in str(info.value)
