"""``APPTConfig``: everything needed to rebuild an APPT model, stored beside its trained weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from appt.backbones.base import BackboneSpec
from appt.embedding.geometry_encoding import LAYOUTS
from appt.embedding.group_scaling import GROUP_SCALINGS
from appt.embedding.position import TABLE_INITS
from appt.errors import ConfigError
from appt.models.heads import READOUT_NORMS, READOUT_POOLS

VARIANTS = (
    "appt",  # the method
    "encoder_only",  # same embedding + head, no backbone
    "random_backbone",  # frozen backbone with random weights
    "linear_probe",  # embedding frozen too: only the readout norm and head train
    "full_finetune",  # everything trains, backbone included
    "no_prompts",  # APPT without point-prompts
    "no_position",  # APPT without position mixing and table
    "lora",  # LoRA on the backbone's attention (peft) + embedding + head
)

# The values of the string-valued architecture options, from the modules that implement them.
CHOICES = {
    "group_scaling": GROUP_SCALINGS,
    "geometry_layout": LAYOUTS,
    "table_init": TABLE_INITS,
    "readout_norm": READOUT_NORMS,
    "readout_pool": READOUT_POOLS,
    "seg_model": ("appt", "authors"),
}


@dataclass
class APPTConfig:
    """Model settings. Stage tuples have one entry per embedding stage.

    ``widths[-1] <= 0`` means "the backbone's width". ``prompt_blocks=None`` prompts every block.
    The stage layout follows the authors' demo (4 stages, 1024 -> 64 tokens, k = 40); the options
    where appt's default differs from the authors' model are listed in ``docs/method.md``, and
    ``configs/base/paper.yaml`` sets each to the authors' value. See ``configs/`` for lighter CPU
    settings.
    """

    backbone: BackboneSpec = field(default_factory=lambda: BackboneSpec("hf_text", "minilm"))
    num_classes: int = 40
    in_channels: int = 3
    embed_dim: int = 96
    centers: tuple[int, ...] = (512, 256, 128, 64)
    neighbors: tuple[int, ...] = (40, 40, 40, 40)
    widths: tuple[int, ...] = (192, 384, 768, -1)
    blocks: tuple[int, ...] = (2, 1, 1, 1)
    block_expansion: float = 0.5
    alpha: float = 1000.0
    beta: float = 100.0
    group_scaling: str = "cloud_std"  # relative neighbour xyz: cloud_std | group_max_abs | batch_std
    geometry_layout: str = "pairs"  # sin/cos channel order: pairs (interleaved) | blocks (all sin, then all cos)
    biases_before_norms: bool = False  # keep the biases a following norm cancels (authors' checkpoints)
    position_mixing: bool = True
    position_table: bool = True
    table_init: str = "trunc_normal"  # trunc_normal | zeros
    class_token_position: bool = True  # the class token carries the backbone's own position slot
    prompt_blocks: int | None = None
    block_norm_eps: float | None = None  # eps of the frozen blocks' LayerNorms; None = the backbone's own
    tune_norms: bool = False  # also train the frozen backbone's LayerNorm scales/shifts (not in linear_probe)
    readout_norm: str = "copied"  # copied (the backbone's final norm) | fresh (a new LayerNorm)
    readout_pool: str = "concat"  # concat ([mean, max], 2D wide) | sum (mean + max, D wide)
    raw_last_prompt: bool = False  # the readout sees the last prompt as inserted, not its block output
    readout_dropout: float = 0.1
    readout_depths: tuple[int, ...] = ()  # classification: depths read (0 = tokens entering the backbone); () = last
    head_hidden: tuple[int, ...] = (512, 256)
    head_dropout: float = 0.5
    variant: str = "appt"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    # part segmentation (APPTForPartSegmentation only)
    num_categories: int = 16  # object categories, given to the model as a one-hot vector
    seg_feature_blocks: tuple[int, ...] = ()  # 1-based blocks whose point tokens are read; () = thirds of the depth
    seg_fp_widths: tuple[int, ...] = (256,)  # feature-propagation width per stage, coarse to fine; one = all
    seg_category_dim: int = 64  # width of the projected category one-hot
    seg_model: str = "appt"  # appt (APPTForPartSegmentation) | authors (their APF_Seg, repaired: AuthorsPartSegmentation)

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            self.backbone = BackboneSpec(**self.backbone)
        for name in ("centers", "neighbors", "widths", "blocks", "head_hidden", "readout_depths", "seg_feature_blocks", "seg_fp_widths"):
            value = getattr(self, name)
            setattr(self, name, tuple(value) if isinstance(value, (list, tuple)) else (value,))
        if self.variant not in VARIANTS:
            raise ConfigError(f"model.variant: unknown variant {self.variant!r}; known: {', '.join(VARIANTS)}")
        if self.num_classes < 1:
            raise ConfigError(f"model.num_classes must be positive, got {self.num_classes}")
        if self.in_channels < 3:
            raise ConfigError(f"model.in_channels must be at least 3 (xyz first), got {self.in_channels}")
        stages = len(self.centers)
        if len(self.neighbors) == 1:
            self.neighbors = self.neighbors * stages
        if not stages or len(self.neighbors) != stages or len(self.widths) != stages or len(self.blocks) != stages:
            raise ConfigError(
                "model.centers, neighbors, widths and blocks need one entry per stage, got "
                f"{len(self.centers)}, {len(self.neighbors)}, {len(self.widths)}, {len(self.blocks)}"
            )
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.block_norm_eps is not None and not self.block_norm_eps > 0:
            raise ConfigError(f"model.block_norm_eps must be positive (or null), got {self.block_norm_eps}")
        if any(d < 0 for d in self.readout_depths):
            raise ConfigError(f"model.readout_depths are block counts from 0 (the backbone's input), got {list(self.readout_depths)}")
        self._check_segmentation(stages)

    def _check_segmentation(self, stages: int) -> None:
        """Validate the part-segmentation keys (their defaults suit any stage count)."""
        if self.num_categories < 1:
            raise ConfigError(f"model.num_categories must be positive, got {self.num_categories}")
        if any(b < 1 for b in self.seg_feature_blocks):
            raise ConfigError(f"model.seg_feature_blocks are 1-based block numbers, got {list(self.seg_feature_blocks)}")
        if len(self.seg_fp_widths) not in (1, stages) or min(self.seg_fp_widths, default=0) < 1:
            raise ConfigError(
                f"model.seg_fp_widths needs 1 or {stages} positive widths (one per stage), got {list(self.seg_fp_widths)}"
            )

    def built_backbone(self) -> BackboneSpec:
        """The backbone spec the model really builds: ``random_backbone`` forces ``pretrained=False``."""
        return replace(self.backbone, pretrained=False) if self.variant == "random_backbone" else self.backbone

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "APPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"model: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)
