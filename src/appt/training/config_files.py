"""The file layer of run configs: YAML with ``base:`` chains, ``--set key=value`` overrides,
``${VAR:-default}`` expansion, and plain dicts checked into typed dataclasses.

Kept apart from :mod:`appt.training.config` (the schema: which sections and keys a run has) because
none of it knows what a run is; the checks here name the offending key and file in one line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from appt.errors import ConfigError

SHIPPED_PREFIX = "appt:"  # base: [appt:minilm] names a config shipped in the package


def read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The mapping of YAML file ``path`` merged over its ``base:`` files (``seen``: the chain so far)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: circular base: chain")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    bases = raw.pop("base", None) or []
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = deep_merge(merged, read_with_bases(base_path(base, path.parent), seen + (path.resolve(),)))
    return deep_merge(merged, raw)


def base_path(base: str, folder: Path) -> Path:
    """Where a ``base:`` entry points: ``appt:NAME`` is a config shipped inside the package
    (:mod:`appt.configs`, so a YAML anywhere can name it), anything else a path relative to ``folder``."""
    if isinstance(base, str) and base.startswith(SHIPPED_PREFIX):
        from appt.configs import shipped_config

        return shipped_config(base[len(SHIPPED_PREFIX):])
    return folder / base


def read_bases(bases: list[str], folder: Path) -> dict[str, Any]:
    """The merge of ``bases`` (as a ``base:`` list written in ``folder`` would give)."""
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, read_with_bases(base_path(base, folder), seen=()))
    return merged


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` over ``a``; nested mappings merge key by key, everything else is replaced."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------------
# overrides


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``; the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"--set {item!r}: {key!r} is not a dotted key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key="a.b"``, creating mappings on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


# ----------------------------------------------------------------------------------------------
# environment variables in strings: ${VAR} and ${VAR:-default}

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}``; an unset variable without default -> ConfigError."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is None:
            raise ConfigError(f"environment variable {m.group(1)} is not set (used in {text!r})")
        return m.group(2)

    return _ENV.sub(sub, text)


def expand_env_tree(node: Any) -> Any:
    """:func:`expand_env` on every string of a nested dict / list."""
    if isinstance(node, str):
        return expand_env(node)
    if isinstance(node, dict):
        return {k: expand_env_tree(v) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env_tree(v) for v in node]
    return node


# ----------------------------------------------------------------------------------------------
# dict -> dataclass with type checks (shared with builders for APPTConfig / BackboneSpec)


def check_keys(cls: type, raw: dict[str, Any], prefix: str, source: str) -> None:
    """ConfigError naming the first key of ``raw`` that ``cls`` has no field for."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(
                f"{source}: unknown config key '{prefix}{key}' (known: {', '.join(sorted(names))})"
            )


def to_dataclass(cls: type, raw: dict[str, Any], prefix: str, source: str) -> Any:
    """``cls(**raw)`` with every key and value checked (nested dataclass fields recursively)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.')} must be a mapping")
    check_keys(cls, raw, prefix, source)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = to_dataclass(hint, value or {}, f"{prefix}{key}.", source)
        else:
            kwargs[key] = coerce(value, hint, f"{prefix}{key}", source)
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against a type hint, converting the lossless cases (``"1e-3"`` -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if type(value) in args:  # int | float keeps 1.0 (a fraction) apart from 1 (a count)
            return value
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key, source)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            if origin is not tuple:
                raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
            value = [value]  # a single stage value, e.g. neighbors: 16
        item = args[0] if args else Any
        items = [coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
    return value
