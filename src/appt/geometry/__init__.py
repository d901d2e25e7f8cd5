"""Batched point-set geometry in pure torch: sampling and neighbourhoods.

This package imports nothing else from appt (see docs/design.md).
"""

from appt.geometry.sampling import farthest_point_sample, gather, knn, square_distance

__all__ = ["farthest_point_sample", "gather", "knn", "square_distance"]
