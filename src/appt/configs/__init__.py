"""Configs shipped inside the package, named ``appt:NAME`` in a ``base:`` list from anywhere.

Why inside the package: a user's YAML outside the repository (or with appt installed from a
wheel, where there is no ``configs/`` folder) must still reach the backbone bases without an
absolute path. ``configs/base/{minilm,mpnet,vit_b16,point_mae}.yaml`` of the repository are thin
wrappers around these files, so there is one copy of each.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from appt.errors import ConfigError


def shipped_names() -> list[str]:
    """Names usable as ``appt:NAME`` (the ``.yaml`` files of this package)."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def shipped_config(name: str) -> Path:
    """The file of the shipped config ``name`` (``"minilm"`` -> ``.../appt/configs/minilm.yaml``)."""
    path = Path(str(resources.files(__name__) / f"{name}.yaml"))
    if not name or "/" in name or "\\" in name or not path.is_file():
        raise ConfigError(f"base appt:{name}: no such shipped config; known: {', '.join(f'appt:{n}' for n in shipped_names())}")
    return path
