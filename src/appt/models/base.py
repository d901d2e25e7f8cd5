"""``APPTModel``: point embedding -> position feature -> frozen backbone with point-prompts.

The shared trunk of every APPT task model. Subclasses add a readout/head (classification,
segmentation) and declare how they prompt and read the frozen blocks (``plan_prompts``; the
point-prompt rules themselves live in ``appt.embedding.point_prompts``). Which tensors train is
decided here, once, from ``config.variant``.
"""

from __future__ import annotations

import copy
import os
from typing import TypeVar

import torch
from torch import Tensor, nn

from appt.backbones import build_backbone
from appt.backbones.base import Backbone
from appt.embedding import EmbeddingOutput, PointEmbedding, PositionMixing, PositionTable
from appt.embedding.point_prompts import PromptPlan, PromptSource, ReadAt, make_prompt, prompted_blocks, read_depths
from appt.models.config import APPTConfig
from appt.models.io import load_trained, read_config_dict, save_trained
from appt.models.lora import add_lora
from appt.models.summary import count_parameters, format_parameters
from appt.recompute import BLOCK_RECOMPUTE, call

M = TypeVar("M", bound="APPTModel")


def set_block_norm_eps(backbone: Backbone, eps: float) -> None:
    """Give every LayerNorm inside the frozen blocks ``eps``. The authors rebuilt ViT-B's blocks with
    torch's default LayerNorm (eps 1e-5) around weights trained with eps 1e-6; their checkpoints
    match only with the same eps (measured: 6e-4 on normed tokens of scale 5 otherwise)."""
    for module in backbone.blocks.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps


class APPTModel(nn.Module):
    """Trunk ``(B, N, C_in) -> tokens (B, T, D)`` with ``T = c + P + G``.

    ``c`` is 1 if the backbone has a class token else 0, ``P`` the number of prompted blocks,
    ``G`` the number of point tokens (``config.centers[-1]``).

    Runtime memory settings (not saved with the model): ``activation_checkpointing``
    (``appt.recompute``) and ``frozen_dtype``, the dtype the frozen blocks were cast to
    (``appt.models.frozen_dtype``; ``None``: not cast).
    """

    activation_checkpointing: str = "off"
    frozen_dtype: torch.dtype | None = None

    def __init__(self, config: APPTConfig) -> None:
        super().__init__()
        self.config = config
        spec = config.built_backbone()
        # Random weights (random_backbone / pretrained=False) come from the spec's own seed
        # (``options.seed``), so a model rebuilt from its saved config gets the same frozen tensors.
        backbone = build_backbone(spec)
        if config.block_norm_eps is not None:
            set_block_norm_eps(backbone, config.block_norm_eps)
        self.width = backbone.width
        self.backbone_identity = config.backbone.identity()
        # encoder_only keeps the width of the backbone it replaces, so the comparison is like for like.
        self.backbone: Backbone | None = None if config.variant == "encoder_only" else backbone

        widths = tuple(w if w > 0 else self.width for w in config.widths)
        self.embedding = PointEmbedding(
            in_channels=config.in_channels,
            out_dim=self.width,
            embed_dim=config.embed_dim,
            centers=config.centers,
            neighbors=config.neighbors,
            widths=widths,
            blocks=config.blocks,
            expansion=config.block_expansion,
            alpha=config.alpha,
            beta=config.beta,
            group_scaling=config.group_scaling,
            geometry_layout=config.geometry_layout,
            bias=config.biases_before_norms,
        )
        use_position = config.variant != "no_position"
        self.position = (
            PositionMixing(bias=config.biases_before_norms) if use_position and config.position_mixing else None
        )
        self.num_class_tokens = 1 if self.backbone is not None and self.backbone.cls_token is not None else 0
        if self.num_class_tokens:
            self.backbone.class_token(config.class_token_position)  # a family that cannot comply fails now
        self.table = (
            PositionTable(self.num_class_tokens + self.embedding.num_tokens, self.width, config.table_init)
            if use_position and config.position_table
            else None
        )
        self.norm = self._make_norm(backbone)
        # checks the read depths against the backbone now, not at the first forward
        self.prompts: PromptPlan | None = self.plan_prompts() if self.backbone is not None else None
        if config.variant == "lora" and self.backbone is not None:
            add_lora(self.backbone, config.lora_rank, config.lora_alpha)
        self._set_trainable()

    def plan_prompts(self) -> PromptPlan:
        """Classification's plan: the embedding's prompt before each prompted block, whole sequences
        read at ``readout_depths`` (default: the last block), ``raw_last_prompt`` as configured.
        Task models override this."""
        return self._prompt_plan(
            "embedding", "sequence", "readout_depths", (self.backbone.depth,), self.config.raw_last_prompt
        )

    def _prompt_plan(
        self, source: PromptSource, read: ReadAt, depths_key: str, default: tuple[int, ...], raw_last_prompt: bool = False
    ) -> PromptPlan:
        """The ``PromptPlan`` of this model's config: ``prompt_blocks`` (none with ``no_prompts``) and
        the depths of config key ``depths_key`` (``default`` when empty)."""
        config, depth = self.config, self.backbone.depth
        return PromptPlan(
            class_tokens=self.num_class_tokens,
            points=self.embedding.num_tokens,
            prompted=prompted_blocks(depth, 0 if config.variant == "no_prompts" else config.prompt_blocks),
            depths=read_depths(depths_key, getattr(config, depths_key), default, depth),
            source=source,
            read=read,
            raw_last_prompt=raw_last_prompt,
        )

    @property
    def num_prompt_blocks(self) -> int:
        """``P``, the number of prompted blocks (0 without a backbone)."""
        return self.prompts.prompted if self.prompts is not None else 0

    def _make_norm(self, backbone: Backbone) -> nn.Module:
        """The readout norm: a trainable copy of the backbone's final LayerNorm (``readout_norm:
        copied``), or a fresh LayerNorm (``fresh``, and whenever the backbone has none)."""
        final = backbone.final_norm
        copied = self.config.readout_norm == "copied"
        if copied and isinstance(final, nn.LayerNorm) and final.normalized_shape == (self.width,):
            return copy.deepcopy(final)
        return nn.LayerNorm(self.width)

    def _set_trainable(self) -> None:
        """Apply the freezing rule of ``config.variant`` to every parameter."""
        variant = self.config.variant
        for p in self.parameters():
            p.requires_grad_(True)
        if self.backbone is not None and variant != "full_finetune":
            for name, p in self.backbone.named_parameters():
                p.requires_grad_(variant == "lora" and "lora_" in name)
            if self.config.tune_norms and variant != "linear_probe":
                # Norm tuning (as in frozen-pretrained-transformer studies): a few thousand scales
                # and shifts let the frozen blocks meet token statistics unlike their own data.
                # The final norm is skipped: the trunk uses its own trainable copy (``self.norm``).
                for module in self.backbone.modules():
                    if isinstance(module, nn.LayerNorm) and module is not self.backbone.final_norm:
                        module.requires_grad_(True)
        if variant == "linear_probe":
            for module in (self.embedding, self.position, self.table):
                if module is not None:
                    module.requires_grad_(False)
        for p in self.unused_parameters():
            p.requires_grad_(False)

    @property
    def blocks_run(self) -> int:
        """How many backbone blocks a forward runs (those after the deepest one read are skipped)."""
        return self.prompts.blocks_run if self.prompts is not None else 0

    def unused_parameters(self) -> list[nn.Parameter]:
        """Backbone parameters no forward touches: its own final norm (the trunk reads through
        ``self.norm``) and the blocks after ``blocks_run``. They never train, whatever the variant:
        a trainable tensor without a gradient stalls DDP's gradient reduction ("Expected to have
        finished reduction in the prior iteration")."""
        if self.backbone is None:
            return []
        unused = list(self.backbone.final_norm.parameters())
        for block in self.backbone.blocks[self.blocks_run:]:
            unused.extend(block.parameters())
        return unused

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that must stay in eval mode while training (no dropout, fixed BN statistics)."""
        frozen: list[nn.Module] = []
        if self.backbone is not None and self.config.variant != "full_finetune":
            frozen.append(self.backbone)
        if self.config.variant == "linear_probe":
            frozen.append(self.embedding)
        return frozen

    def train(self, mode: bool = True) -> "APPTModel":
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def encode(self, points: Tensor) -> tuple[Tensor, EmbeddingOutput]:
        """``(B, N, C_in) -> (tokens (B, T, D) after the final norm, embedding output)``.

        ``T = c + P + G`` when only the last block is read; in general ``sum(self.prompts.read_sizes())``.
        """
        emb = self.embedding(points)
        x = emb.tokens
        if self.position is not None:
            x = self.position(x)
        if self.num_class_tokens:
            cls = self.backbone.class_token(self.config.class_token_position)
            x = torch.cat((cls.expand(x.shape[0], -1, -1), x), dim=1)
        if self.table is not None:
            x = self.table(x)
        if self.backbone is not None:
            prompt = make_prompt(emb.tokens)
            if self.frozen_dtype is not None:  # tokens enter the half-precision blocks in their dtype
                x = self.run_backbone(x.to(self.frozen_dtype), prompt.to(self.frozen_dtype)).to(emb.tokens.dtype)
            else:
                x = self.run_backbone(x, prompt)
        return self.norm(x), emb

    def run_backbone(self, x: Tensor, prompt: Tensor) -> Tensor:
        """The frozen blocks as ``self.prompts`` plans them, ``(B, c + G, D) -> (B, T_read, D)``:
        the reads at each planned depth stacked along the token axis (``PromptPlan.run``)."""
        return self.prompts.run(x, prompt, self.backbone.blocks, self.backbone.prepare_tokens, self.run_block)

    def run_block(self, block: nn.Module, x: Tensor) -> Tensor:
        """One frozen block ``(B, T, D) -> (B, T, D)``, recomputed in the backward pass as
        ``activation_checkpointing`` says (wholly, or all but its matrix products: ``appt.recompute``)."""
        return call(block, x, recompute=BLOCK_RECOMPUTE[self.activation_checkpointing])

    # --- peft-style conveniences -------------------------------------------------------------
    def count_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter counts."""
        return count_parameters(self)

    def summary(self) -> str:
        """One line: trainable / total parameters and their ratio."""
        return format_parameters(*count_parameters(self))

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write only the trained weights (safetensors) and the config (JSON) to folder ``path``."""
        save_trained(self, path)

    def load_trained(self, path: str | os.PathLike) -> None:
        """Load weights saved by ``save_pretrained``; refuses those of another backbone/variant."""
        load_trained(self, path)

    @classmethod
    def from_pretrained(cls: type[M], path: str | os.PathLike, **overrides) -> M:
        """Rebuild the model from its saved config (backbone from its own spec) and load its weights."""
        data = read_config_dict(path)
        data.update(overrides)
        model = cls(APPTConfig.from_dict(data))
        model.load_trained(path)
        return model
