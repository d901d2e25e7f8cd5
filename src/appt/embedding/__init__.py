"""Trainable parts of APPT: point embedding, position feature, and point-prompts (``point_prompts``:
the weight-shared generator, its insertion before the frozen blocks and what is read back)."""

from appt.embedding.geometry_encoding import GeometryEncoding
from appt.embedding.point_embedding import EmbeddingOutput, Grouping, LocalGeometryStage, PointEmbedding
from appt.embedding.point_prompts import PromptPlan, insert_prompt, make_prompt, prompted_blocks, read_depths
from appt.embedding.position import PositionMixing, PositionTable

__all__ = [
    "EmbeddingOutput",
    "GeometryEncoding",
    "Grouping",
    "LocalGeometryStage",
    "PointEmbedding",
    "PositionMixing",
    "PositionTable",
    "PromptPlan",
    "insert_prompt",
    "make_prompt",
    "prompted_blocks",
    "read_depths",
]
