"""``APPTForClassification``: the trunk + an order-free readout + an MLP head."""

from __future__ import annotations

from torch import Tensor, nn

from appt.models.base import APPTModel
from appt.models.config import APPTConfig
from appt.models.heads import ClassificationHead, mean_max_pool


class APPTForClassification(APPTModel):
    """``points (B, N, C_in) -> logits (B, num_classes)``.

    Readout: the trainable final norm (in the trunk), mean and max over all tokens (class token,
    prompt outputs and point tokens) of each cloud, concatenated or summed (``readout_pool``),
    dropout, then the MLP head.
    """

    def __init__(self, config: APPTConfig) -> None:
        super().__init__(config)
        self.readout_dropout = nn.Dropout(config.readout_dropout)
        pooled = 2 * self.width if config.readout_pool == "concat" else self.width
        self.head = ClassificationHead(pooled, config.num_classes, config.head_hidden, config.head_dropout,
                                       bias=config.biases_before_norms)
        self._set_trainable()

    def forward(self, points: Tensor) -> Tensor:
        tokens, _ = self.encode(points)
        return self.head(self.readout_dropout(mean_max_pool(tokens, self.config.readout_pool)))
