"""Point-prompts, in one place: how they are made, where they go, and what is read back.

The paper's point-prompt for a cloud is ``max + mean`` over point tokens ``(B, G, D) -> (B, 1, D)``:
a global summary produced by the point embedding itself, so the generator *shares its weights*
with the embedding and adds no parameters. Insertion is cumulative (as in the paper): before
prompted block ``i`` the sequence keeps its ``c`` class tokens and the ``i`` earlier prompt outputs,
appends a fresh prompt, then the ``G`` point tokens, so after ``P`` prompted blocks the length is
``c + P + G``.

A model declares how it prompts with a ``PromptPlan`` (built once in its ``__init__``) and runs
the frozen blocks through ``PromptPlan.run``, the one loop over them. The plan says:

- ``source`` — where each block's prompt comes from: ``"embedding"`` (fixed, from the embedding's
  tokens; classification), ``"points"`` (recomputed before every prompted block from the current
  point tokens; ``APPTForPartSegmentation``), ``"previous"`` (the first from the embedding, each
  later one from *all* tokens of the previous block's output; the authors' ``APF_Seg``);
- ``prompted`` — how many blocks get a prompt (``prompted_blocks``: ``model.prompt_blocks``, default
  all);
- ``depths`` — which depths are read (``read_depths``: depth 0 = the tokens entering the backbone,
  depth ``i`` = the output of block ``i``; ``model.readout_depths`` and ``model.seg_feature_blocks``
  both use this numbering) and ``read`` — what is read there (``"sequence"``: every token;
  ``"points"``: the ``G`` point tokens only). Blocks after the deepest read are not run
  (``blocks_run``; the model freezes them so DDP never waits on their gradients);
- ``raw_last_prompt`` — the deepest read sees the last inserted prompt as it went in, not its block
  output (the authors' classification readout; only classification's plan takes ``model.raw_last_prompt``:
  the paper presets set it, and the authors' segmentation model reads block outputs as they are).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from appt.errors import ConfigError

PromptSource = Literal["embedding", "points", "previous"]
ReadAt = Literal["sequence", "points"]
PROMPT_SOURCES: tuple[str, ...] = ("embedding", "points", "previous")
READS: tuple[str, ...] = ("sequence", "points")

# ``read_depths``' message per config key, worded as each key's users have always seen it.
_TOO_DEEP = {
    "readout_depths": "depth {read} is beyond the backbone's {depth} blocks",
    "seg_feature_blocks": "block {read} is beyond the backbone's depth {depth}",
}


def make_prompt(tokens: Tensor) -> Tensor:
    """Global point-prompt ``(B, T, D) -> (B, 1, D)`` (max + mean over tokens)."""
    return tokens.amax(dim=1, keepdim=True) + tokens.mean(dim=1, keepdim=True)


def insert_prompt(x: Tensor, prompt: Tensor, num_prefix: int, num_points: int) -> Tensor:
    """Sequence before a prompted block: ``[x[:, :num_prefix], prompt, x[:, -num_points:]]``.

    ``x (B, T, D)``, ``prompt (B, 1, D)`` -> ``(B, num_prefix + 1 + num_points, D)``.
    """
    return torch.cat((x[:, :num_prefix], prompt, x[:, x.shape[1] - num_points :]), dim=1)


def prompted_blocks(depth: int, wanted: int | None) -> int:
    """How many of ``depth`` blocks get a prompt: ``wanted`` (``model.prompt_blocks``; ``None`` = all),
    clipped to ``0 .. depth``."""
    return max(0, min(depth if wanted is None else wanted, depth))


def read_depths(key: str, wanted: Sequence[int], default: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """The depths read, sorted and unique: ``wanted`` (config ``model.<key>``) or ``default`` when
    empty; ``ConfigError`` if one lies beyond the backbone's ``depth`` blocks.

    Depth 0 is the token set entering the backbone (the class token and the point tokens after the
    position feature and table, before ``prepare_tokens``), depth ``i`` the output of block ``i``.
    Reading depth 0 beside the last block lets a head keep what the trainable embedding found even
    where the frozen blocks blur it (``readout_depths``; ``seg_feature_blocks`` start at 1).
    """
    depths = tuple(sorted(set(wanted))) or default
    if depths[-1] > depth:
        raise ConfigError(f"model.{key}: " + _TOO_DEEP[key].format(read=depths[-1], depth=depth))
    return depths


@dataclass(frozen=True)
class PromptPlan:
    """How one model prompts and reads its frozen blocks (see the module docstring).

    ``class_tokens`` is ``c``, ``points`` is ``G``, ``prompted`` is ``P``; ``depths`` sorted, non-empty.
    """

    class_tokens: int
    points: int
    prompted: int
    depths: tuple[int, ...]
    source: PromptSource = "embedding"
    read: ReadAt = "sequence"
    raw_last_prompt: bool = False

    def __post_init__(self) -> None:
        if self.source not in PROMPT_SOURCES or self.read not in READS:
            raise ValueError(f"prompt source {self.source!r} / read {self.read!r}: known {PROMPT_SOURCES} / {READS}")

    @property
    def blocks_run(self) -> int:
        """Blocks a forward runs: up to the deepest read."""
        return self.depths[-1]

    def read_sizes(self) -> list[int]:
        """Tokens read at each depth: ``c + min(depth, P) + G`` for whole sequences, ``G`` for points."""
        if self.read == "points":
            return [self.points] * len(self.depths)
        return [self.class_tokens + min(d, self.prompted) + self.points for d in self.depths]

    def _take(self, x: Tensor) -> Tensor:
        return x[:, -self.points :] if self.read == "points" else x

    def run(
        self,
        x: Tensor,
        prompt: Tensor,
        blocks: Sequence[nn.Module],
        prepare: Callable[[Tensor], Tensor],
        run_block: Callable[[nn.Module, Tensor], Tensor],
    ) -> Tensor:
        """The frozen blocks with point-prompts: ``(B, c + G, D) -> (B, sum(read_sizes()), D)``.

        ``x``: class tokens then point tokens, before the backbone's ``prepare`` (its
        ``prepare_tokens``); ``prompt (B, 1, D)``: ``make_prompt`` of the embedding's tokens (unused
        with source ``"points"``); ``run_block(block, x)`` runs one block (the model's, so activation
        checkpointing applies). Returns the reads at ``depths``, stacked along the token axis.
        """
        c, g, p = self.class_tokens, self.points, self.prompted
        read = [self._take(x)] if self.depths[0] == 0 else []
        x = prepare(x)
        if self.source != "points":
            prompt = prepare(prompt)
        for i, block in enumerate(blocks[: self.blocks_run]):
            if i < p:
                if self.source == "points":
                    prompt = prepare(make_prompt(x[:, -g:]))
                x = insert_prompt(x, prompt, c + i, g)
            x = run_block(block, x)
            if i + 1 == self.blocks_run and self.raw_last_prompt and p:
                # the last prompt inserted sits just before the G points; its output is replaced
                x = insert_prompt(x, prompt, c + min(i, p - 1), g)
            if self.source == "previous" and i + 1 < p:  # the next block's prompt
                prompt = make_prompt(x)
            if i + 1 in self.depths:
                read.append(self._take(x))
        return torch.cat(read, dim=1)
