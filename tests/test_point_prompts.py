"""``appt.embedding.point_prompts`` on tiny tensors: insertion, the three prompt sources, reads."""

from __future__ import annotations

import pytest
import torch

from appt.embedding.point_prompts import PromptPlan, make_prompt, prompted_blocks, read_depths
from appt.errors import ConfigError

CLS = torch.tensor([[0.0, 0.0]])
POINTS = torch.tensor([[1.0, -2.0], [3.0, 4.0], [-5.0, 6.0]])  # G = 3, D = 2
GIVEN = torch.tensor([[10.0, -10.0]])  # the prompt handed in (as if from the embedding)


def run(plan: PromptPlan, block=lambda x: x) -> tuple[torch.Tensor, int]:
    """Run ``plan`` over 3 "blocks" applying ``block``; returns the reads (unbatched) and the blocks run."""
    calls = []

    def run_block(_, x):
        calls.append(1)
        return block(x)

    x = torch.cat((CLS, POINTS)).unsqueeze(0)
    out = plan.run(x, GIVEN.unsqueeze(0), [None] * 3, lambda t: t, run_block)
    return out[0], len(calls)


def plan(**kw) -> PromptPlan:
    return PromptPlan(**{"class_tokens": 1, "points": 3, "prompted": 2, "depths": (1, 2, 3), **kw})


def test_make_prompt_is_max_plus_mean() -> None:
    expected = torch.tensor([[3.0 - 1 / 3, 6.0 + 8 / 3]])  # amax (3, 6) + mean (-1/3, 8/3)
    torch.testing.assert_close(make_prompt(POINTS.unsqueeze(0))[0], expected)


@pytest.mark.parametrize(
    ("source", "first", "second"),
    [
        ("embedding", GIVEN, GIVEN),  # fixed: the embedding's prompt before every prompted block
        ("points", torch.tensor([[8 / 3, 26 / 3]]), torch.tensor([[8 / 3, 26 / 3]])),  # max + mean of the points
        # first the embedding's, then max + mean over ALL of block 1's output: cls, GIVEN, points
        ("previous", GIVEN, torch.tensor([[10.0 + 9 / 5, 6.0 - 2 / 5]])),
    ],
)
def test_each_source_inserts_its_documented_prompt_cumulatively(source, first, second) -> None:
    p = plan(source=source)
    out, ran = run(p)
    assert p.read_sizes() == [1 + 1 + 3, 1 + 2 + 3, 1 + 2 + 3]  # c + min(depth, P) + G
    assert out.shape[0] == sum(p.read_sizes()) and ran == 3
    depth1, depth2, depth3 = out.split(p.read_sizes())
    torch.testing.assert_close(depth1, torch.cat((CLS, first, POINTS)))
    torch.testing.assert_close(depth2, torch.cat((CLS, first, second, POINTS)))
    torch.testing.assert_close(depth3, depth2)  # block 3 is not prompted (P = 2)


def test_reads_point_tokens_only_and_skips_blocks_after_the_deepest_read() -> None:
    p = plan(source="points", read="points", depths=(1,))
    out, ran = run(p, block=lambda x: 2 * x)
    assert ran == 1 and p.blocks_run == 1 and p.read_sizes() == [3]
    torch.testing.assert_close(out, 2 * POINTS)
    out, _ = run(plan(depths=(0, 1)))  # depth 0: the tokens entering the backbone
    torch.testing.assert_close(out[:4], torch.cat((CLS, POINTS)))


def test_raw_last_prompt_replaces_only_the_last_prompts_output() -> None:
    kept, _ = run(plan(depths=(3,)), block=lambda x: 2 * x)
    raw, _ = run(plan(depths=(3,), raw_last_prompt=True), block=lambda x: 2 * x)
    last = 1 + 2 - 1  # after the class token and the first prompt
    torch.testing.assert_close(raw[last], GIVEN[0])
    assert not torch.equal(kept[last], raw[last])
    others = [i for i in range(raw.shape[0]) if i != last]
    torch.testing.assert_close(raw[others], kept[others])


def test_prompted_blocks_and_read_depths_resolve_the_config() -> None:
    assert prompted_blocks(3, None) == 3 and prompted_blocks(3, 5) == 3 and prompted_blocks(3, 0) == 0
    assert read_depths("readout_depths", (), (3,), 3) == (3,)
    assert read_depths("seg_feature_blocks", (3, 1, 3), (1, 2, 3), 3) == (1, 3)
    with pytest.raises(ConfigError, match="beyond the backbone's 3 blocks"):
        read_depths("readout_depths", (4,), (3,), 3)
    with pytest.raises(ConfigError, match="seg_feature_blocks: block 4"):
        read_depths("seg_feature_blocks", (4,), (1, 2, 3), 3)
