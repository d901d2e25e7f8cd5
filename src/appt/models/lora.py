"""LoRA on a frozen backbone's attention projections through Hugging Face ``peft`` (a baseline)."""

from __future__ import annotations

from torch import nn

from appt.errors import ConfigError

# Names of attention input projections across the families we adapt (timm/Point-MAE, BERT/RoBERTa, CLIP, MPNet).
ATTENTION_PROJECTIONS = ("qkv", "query", "key", "value", "q_proj", "k_proj", "v_proj", "q", "k", "v")


def add_lora(backbone: nn.Module, rank: int, alpha: float) -> None:
    """Inject LoRA adapters into every attention projection of ``backbone.blocks`` (in place)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ConfigError("model.variant=lora needs the 'peft' package: pip install 'appt[lora]'") from err
    targets = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in backbone.blocks.named_modules()
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in ATTENTION_PROJECTIONS
        }
    )
    if not targets:
        raise ConfigError("model.variant=lora: no attention projection found in this backbone's blocks")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
    inject_adapter_in_model(config, backbone.blocks)
