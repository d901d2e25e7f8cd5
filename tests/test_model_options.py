"""The options that make appt's model the authors' one: each changes what it says, and only that.

Tiny widths everywhere; the one ViT-B model is built (not run) for the paper preset's count.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from test_model import TINY_POINT, small_config

from appt import APPTConfig, APPTForClassification, BackboneSpec
from appt.backbones._loading import seeded
from appt.embedding import GeometryEncoding, PointEmbedding
from appt.embedding.group_scaling import scale_groups
from appt.errors import ConfigError
from appt.models.heads import mean_max_pool
from appt.training.builders import build_model
from appt.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY_VIT = BackboneSpec("timm_vit", "vit_tiny_patch16_224", pretrained=False)


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vit_tiny checkpoint whose final norm is not the LayerNorm default (scale 2, shift 0.5)."""
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    state["norm.weight"] = torch.full_like(state["norm.weight"], 2.0)
    state["norm.bias"] = torch.full_like(state["norm.bias"], 0.5)
    path = tmp_path_factory.mktemp("vit") / "vit_tiny.safetensors"
    save_file(state, str(path))
    return path


def test_group_scaling_rules_scale_as_named() -> None:
    rel = torch.randn(2, 5, 7, 3) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    per_cloud = scale_groups(rel, "cloud_std")
    torch.testing.assert_close(per_cloud.flatten(1).std(dim=1), torch.ones(2))
    per_group = scale_groups(rel, "group_max_abs")
    torch.testing.assert_close(per_group.abs().amax(dim=2), torch.ones(2, 5, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(scale_groups(rel, "batch_std"), rel / (rel.std() + 1e-5))
    with pytest.raises(ValueError, match="group scaling"):
        scale_groups(rel, "nope")


def test_only_batch_std_lets_a_clouds_tokens_depend_on_its_batch(real_clouds) -> None:
    clouds, _ = real_clouds
    outputs = {}
    for rule in ("cloud_std", "group_max_abs", "batch_std"):
        torch.manual_seed(0)
        emb = PointEmbedding(3, 32, embed_dim=8, centers=(64, 16), neighbors=(8, 8), widths=(16, 32), blocks=(1, 1),
                             group_scaling=rule).eval()
        with torch.no_grad():
            alone = emb(clouds[:1]).tokens
            beside_a_small_cloud = emb(torch.cat((clouds[:1], 0.1 * clouds[1:2]))).tokens[:1]
        outputs[rule] = alone
        changed = (alone - beside_a_small_cloud).abs().max().item()
        assert (changed > 1e-3) if rule == "batch_std" else (changed < 1e-5), (rule, changed)
    assert (outputs["cloud_std"] - outputs["group_max_abs"]).abs().max() > 1e-3


def test_geometry_layout_blocks_orders_all_sines_before_all_cosines() -> None:
    rel = torch.randn(4, 3)
    pairs, blocks = GeometryEncoding(12, layout="pairs")(rel), GeometryEncoding(12, layout="blocks")(rel)
    angles = 100.0 * rel.unsqueeze(-1) / torch.tensor([1.0, 1000.0**0.5])  # F = 2 frequencies per axis
    for axis in range(3):
        sin, cos = angles[:, axis].sin(), angles[:, axis].cos()
        torch.testing.assert_close(blocks[:, 4 * axis : 4 * axis + 4], torch.cat((sin, cos), dim=1))
        torch.testing.assert_close(pairs[:, 4 * axis : 4 * axis + 4], torch.stack((sin, cos), dim=2).flatten(1))
    for layout in ("pairs", "blocks"):  # 14 = 6 x 2 + 2: the channels past the last frequency are zero
        padded = GeometryEncoding(14, layout=layout)(rel)
        assert torch.equal(padded[:, :12], pairs if layout == "pairs" else blocks)
        assert torch.equal(padded[:, 12:], torch.zeros(4, 2))


def test_biases_before_norms_add_exactly_the_authors_biases() -> None:
    plain = APPTForClassification(small_config())
    biased = APPTForClassification(small_config(biases_before_norms=True))
    names = {n for n, _ in biased.named_parameters()} - {n for n, _ in plain.named_parameters()}
    # residual blocks (one per stage: 24 / 2 + 24, 48 / 2 + 48), the head's hidden layer (64), position mixing (1)
    assert names == {"embedding.stages.0.blocks.0.inner.linear.bias", "embedding.stages.0.blocks.0.outer.linear.bias",
                     "embedding.stages.1.blocks.0.inner.linear.bias", "embedding.stages.1.blocks.0.outer.linear.bias",
                     "head.mlp.0.linear.bias", "position.mix.bias"}
    assert biased.count_parameters()[0] - plain.count_parameters()[0] == 24 + 48 + 24 + 48 + 64 + 1


def test_table_init_zeros_starts_the_table_at_zero() -> None:
    assert torch.count_nonzero(APPTForClassification(small_config(table_init="zeros")).table.table) == 0
    default = APPTForClassification(small_config()).table.table
    assert 0.01 < default.std().item() < 0.03


def test_class_token_without_position_slot_is_the_bare_vit_token() -> None:
    with seeded(0):  # the weights the adapter builds for TINY_VIT
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    torch.manual_seed(0)
    with_slot = APPTForClassification(small_config(TINY_VIT)).eval()
    torch.manual_seed(0)
    bare = APPTForClassification(small_config(TINY_VIT, class_token_position=False)).eval()
    assert torch.equal(bare.backbone.class_token(with_position=False), vit.cls_token)
    assert torch.equal(with_slot.backbone.class_token(), vit.cls_token + vit.pos_embed[:, :1])
    seen = {}
    for name, model in (("with", with_slot), ("bare", bare)):
        model.backbone.blocks[0].register_forward_pre_hook(lambda m, args, name=name: seen.update({name: args[0]}))
        with torch.no_grad():
            model(torch.rand(1, 256, 3))
    slot = with_slot.backbone.cls_token - bare.backbone.class_token(False)
    torch.testing.assert_close(seen["with"][:, 0] - seen["bare"][:, 0], slot[:, 0])
    with pytest.raises(ConfigError, match="position slot"):
        APPTForClassification(small_config(TINY_POINT, class_token_position=False))


def test_readout_norm_fresh_ignores_the_backbones_final_norm(vit_checkpoint: Path) -> None:
    spec = BackboneSpec("timm_vit", "vit_tiny_patch16_224", checkpoint=str(vit_checkpoint))
    copied = APPTForClassification(small_config(spec)).norm
    fresh = APPTForClassification(small_config(spec, readout_norm="fresh")).norm
    assert torch.all(copied.weight == 2.0) and torch.all(copied.bias == 0.5) and copied.eps == 1e-6
    assert torch.all(fresh.weight == 1.0) and torch.all(fresh.bias == 0.0) and fresh.eps == 1e-5


def test_readout_pool_sum_feeds_mean_plus_max_to_a_head_half_as_wide(real_clouds) -> None:
    tokens = torch.randn(3, 9, 5)
    torch.testing.assert_close(mean_max_pool(tokens, "sum"), tokens.mean(1) + tokens.amax(1))
    assert mean_max_pool(tokens).shape == (3, 10)
    summed = APPTForClassification(small_config(readout_pool="sum")).eval()
    assert summed.head.mlp[0].linear.in_features == summed.width
    assert APPTForClassification(small_config()).head.mlp[0].linear.in_features == 2 * summed.width
    with torch.no_grad():
        assert summed(real_clouds[0][:2]).shape == (2, 10)


def test_readout_pool_is_per_sample(real_clouds) -> None:
    """The authors' ``mean(dim=1)[0]`` gave every cloud the first cloud's mean; ours does not."""
    model = APPTForClassification(small_config(readout_pool="sum")).eval()
    clouds = real_clouds[0]
    with torch.no_grad():
        together = model(clouds[:3])
        one_by_one = torch.cat([model(clouds[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prompt_blocks", [None, 2], ids=["all_blocks", "two_blocks"])
def test_raw_last_prompt_replaces_the_last_prompts_block_output(real_clouds, prompt_blocks) -> None:
    torch.manual_seed(0)
    swap = APPTForClassification(small_config(raw_last_prompt=True, prompt_blocks=prompt_blocks)).eval()
    keep = APPTForClassification(small_config(prompt_blocks=prompt_blocks)).eval()
    keep.load_state_dict(swap.state_dict())
    with torch.no_grad():
        swapped, emb = swap.encode(real_clouds[0][:2])
        kept, _ = keep.encode(real_clouds[0][:2])
        raw = swap.norm(swap.backbone.prepare_tokens(emb.tokens.amax(1) + emb.tokens.mean(1)))
    last = 1 + swap.num_prompt_blocks - 1  # class token, then the prompts
    torch.testing.assert_close(swapped[:, last], raw)
    assert (kept[:, last] - raw).abs().max() > 1e-3
    others = [i for i in range(swapped.shape[1]) if i != last]
    torch.testing.assert_close(swapped[:, others], kept[:, others])


def test_block_norm_eps_sets_the_frozen_blocks_layernorm_eps_only() -> None:
    def eps(model: APPTForClassification) -> set[float]:
        return {m.eps for m in model.backbone.blocks.modules() if isinstance(m, torch.nn.LayerNorm)}

    assert eps(APPTForClassification(small_config(TINY_VIT))) == {1e-6}  # the ViT's own
    model = APPTForClassification(small_config(TINY_VIT, block_norm_eps=1e-5))
    assert eps(model) == {1e-5} and model.backbone.final_norm.eps == 1e-6
    with pytest.raises(ConfigError, match="block_norm_eps"):
        APPTConfig(block_norm_eps=0.0)


def test_defaults_are_appts_own_choices() -> None:
    cfg = APPTConfig()
    assert (cfg.group_scaling, cfg.geometry_layout, cfg.table_init, cfg.readout_norm, cfg.readout_pool) == (
        "cloud_std", "pairs", "trunc_normal", "copied", "concat")
    assert not cfg.biases_before_norms and cfg.class_token_position and not cfg.raw_last_prompt
    assert cfg.block_norm_eps is None
    with pytest.raises(ConfigError, match="model.readout_pool"):
        APPTConfig(readout_pool="mean")


def test_paper_preset_trains_exactly_the_authors_parameter_count() -> None:
    """3,951,698 trained, as their APF + Point_PN_scan on ViT-B with 15 classes; the total differs
    from their 89,007,698 by our frozen final norm (+1,536) and their unused cls_pos (-768)."""
    cfg = load_config(REPO / "configs" / "scanobjectnn_pb_t50_rs_vit_b16_paper.yaml", ["model.backbone.pretrained=false"])
    trainable, total = build_model(cfg, None).count_parameters()
    assert trainable == 3_951_698
    assert total == 89_007_698 + 1_536 - 768
