"""Trainable parts of APPT: point embedding, position feature and the weight-shared prompt generator."""

from appt.embedding.geometry_encoding import GeometryEncoding
from appt.embedding.point_embedding import EmbeddingOutput, LocalGeometryStage, PointEmbedding
from appt.embedding.position import PositionMixing, PositionTable
from appt.embedding.prompts import insert_prompt, make_prompt

__all__ = [
    "EmbeddingOutput",
    "GeometryEncoding",
    "LocalGeometryStage",
    "PointEmbedding",
    "PositionMixing",
    "PositionTable",
    "insert_prompt",
    "make_prompt",
]
