"""Point-cloud data: readers of every common format, benchmark datasets, transforms, cache.

>>> from appt.data import build_dataset, build_transforms, read_points
>>> ds = build_dataset("modelnet_points", root="../shared/data/modelnet10_pcd/ModelNet10/pcd",
...                    split="train", num_points=1024, transforms=build_transforms(["jitter"]))
>>> ds[0]["points"].shape, ds.classes[:2]     # (torch.Size([1024, 3]), ['bathtub', 'bed'])

See docs/data.md for the layouts, the preparation rules and the errors.
"""

from appt.data.base import ArrayDataset, FileDataset, PointDataset, Record
from appt.data.cache import DiskCache, default_cache_dir
from appt.data.cloud import Cloud
from appt.data.collate import collate
from appt.data.pipeline import Preparation
from appt.data.readers import SUPPORTED_FORMATS, read_points
from appt.data.registry import available_datasets, build_dataset, register_dataset
from appt.data.transforms import TRANSFORMS, Compose, build_transforms, normalize

__all__ = [
    "ArrayDataset",
    "Cloud",
    "Compose",
    "DiskCache",
    "FileDataset",
    "PointDataset",
    "Preparation",
    "Record",
    "SUPPORTED_FORMATS",
    "TRANSFORMS",
    "available_datasets",
    "build_dataset",
    "build_transforms",
    "collate",
    "default_cache_dir",
    "normalize",
    "read_points",
    "register_dataset",
]
