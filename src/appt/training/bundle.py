"""Run bundles: everything a run needs in one folder, for GPU nodes without network or data readers.

``appt bundle`` (:func:`create_bundle`) writes::

    DIR/manifest.json                  format, appt version and commit, settings, sizes and sha256 of every file
    DIR/config.yaml                    the resolved run config (run_dir unset)
    DIR/data/{train,val,test}.safetensors   prepared clouds of every split the run uses (appt.data.bundle)
    DIR/backbone/weights.safetensors   the frozen backbone's tensors APPT uses (appt.backbones.bundled)
    DIR/backbone/config.json           hf_text only: what rebuilds the layers with transformers

``appt train --bundle DIR`` sets ``RunConfig.bundle``; :func:`appt.training.builders.build_data`
and ``build_model`` then take the data (:func:`bundle_data`) and the frozen backbone
(:func:`staged_backbones`) from the folder, after checking every file against the manifest. The
data settings fixed when bundling (which shapes, how many points, the dataset options) cannot be
changed afterwards; the recipe, the transforms, the batch sizes and the trainable model can.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from appt.errors import ConfigError, DataError
from appt.training.config import RunConfig, save_config

MANIFEST = "manifest.json"
FORMAT = "appt-bundle"
VERSION = 1
ROLES = ("train", "val", "test")
# Dataset options that change where cached files go, not what the clouds are.
UNBAKED_OPTIONS = ("cache", "cache_dir")

_VERIFIED: dict[str, tuple] = {}  # folder -> stat signature of its verified files (hash once per process)


def data_settings(cfg: RunConfig) -> dict[str, Any]:
    """The settings a bundle's data is made with; a run from the bundle must not change them.

    The seed counts only when it picks shapes (a subset or a validation hold-out).
    """
    d = cfg.data
    picks = d.subset is not None or d.test_subset is not None or d.val_fraction > 0
    return {
        "task": cfg.task, "dataset": d.dataset, "train_split": d.train_split, "test_split": d.test_split,
        "num_points": d.num_points, "val_fraction": d.val_fraction, "subset": d.subset, "test_subset": d.test_subset,
        "options": {k: v for k, v in sorted(d.options.items()) if k not in UNBAKED_OPTIONS},
        "selection_seed": cfg.train.seed if picks else None,
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def appt_commit() -> dict[str, Any]:
    """The git commit of the appt source tree (``None`` if not a git checkout) and whether
    tracked files differ from it."""
    import appt

    root = Path(appt.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    commit = head.stdout.strip() if head.returncode == 0 else None
    return {"commit": commit, "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for name in ("appt", "torch", "transformers", "timm", "safetensors", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def create_bundle(cfg: RunConfig, out: str | os.PathLike, dtype: str = "fp16", points_dtype: str = "fp16",
                  progress: bool = True) -> dict[str, Any]:
    """Write the bundle of ``cfg`` to folder ``out`` (which must not exist, or be empty); returns
    the manifest. Built in a temporary sibling folder and renamed, so a failed or killed
    ``appt bundle`` never leaves a half bundle that looks complete."""
    from tqdm.auto import tqdm

    from appt.backbones.bundled import DTYPES, stage_backbone
    from appt.data.bundle import POINT_DTYPES, save_split, split_info
    from appt.training.builders import build_data, model_config

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if points_dtype not in POINT_DTYPES:
        raise ConfigError(f"--points-dtype must be one of {', '.join(POINT_DTYPES)}, got {points_dtype!r}")
    if cfg.bundle:
        raise ConfigError(f"this config already runs from the bundle {cfg.bundle}; bundle its source config instead")
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: already exists and is not an empty folder; choose another --out")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        data = build_data(cfg)
        model_cfg = model_config(cfg, data)
        splits = {"train": data.train, "test": data.test}
        if not data.eval_is_test:
            splits["val"] = data.eval
        total = sum(len(ds) for ds in splits.values())
        bar = tqdm(total=total, desc="bundling clouds", disable=not progress, dynamic_ncols=True)
        data_entry: dict[str, Any] = {"classes": list(data.classes), "in_channels": data.in_channels,
                                      "category_parts": data.category_parts, "settings": data_settings(cfg),
                                      "splits": {}}
        for role in ROLES:
            if role in splits:
                path = save_split(splits[role], tmp / "data" / f"{role}.safetensors", points_dtype, progress=bar.update)
                data_entry["splits"][role] = {"file": path.relative_to(tmp).as_posix(), **split_info(path)}
        bar.close()
        spec = model_cfg.built_backbone()
        backbone = stage_backbone(spec, tmp / "backbone", dtype)
        if backbone is not None:
            backbone["folder"] = "backbone"
        resolved = dataclasses.replace(cfg, run_dir=None, bundle=None)
        save_config(resolved, tmp / "config.yaml")
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            files[path.relative_to(tmp).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256(path)}
        total_bytes = sum(f["bytes"] for f in files.values())
        manifest = {
            "format": FORMAT, "version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "appt": appt_commit(), "versions": _versions(),
            "config": "config.yaml", "points_dtype": points_dtype, "weights_dtype": dtype,
            "data": data_entry, "backbone": backbone,
            "files": files, "total_bytes": total_bytes, "total_mib": round(total_bytes / 2**20, 2),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def read_manifest(folder: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """The manifest of bundle ``folder``, after checking that every file it lists is there with
    its size and sha256 (once per process per unchanged folder). Problems -> one-line DataError."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise DataError(folder, "bundle folder not found")
    if not path.is_file():
        raise DataError(folder, f"not an appt bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable manifest ({exc})".splitlines()[0]) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(path, f"not an appt bundle manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("version") != VERSION:
        raise DataError(path, f"bundle version {manifest.get('version')!r}; this appt reads version {VERSION} (re-bundle)")
    lacking = [key for key in ("files", "data", "backbone", "config") if key not in manifest]
    if lacking or not isinstance(manifest["files"], dict):
        raise DataError(path, f"incomplete manifest (lacks {', '.join(lacking) or 'a files table'})")
    if verify:
        _verify(folder, manifest)
    return manifest


def _verify(folder: Path, manifest: dict[str, Any]) -> None:
    signature = []
    for name, entry in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            raise DataError(file, "missing from the bundle (listed in manifest.json); copy the whole bundle folder again")
        st = file.stat()
        if st.st_size != entry["bytes"]:
            raise DataError(file, f"has {st.st_size} bytes, manifest.json says {entry['bytes']}: truncated or changed; copy it again")
        signature.append((name, st.st_size, st.st_mtime_ns))
    key = str(folder.resolve())
    if _VERIFIED.get(key) == tuple(signature):
        return
    for name, entry in manifest["files"].items():
        if sha256(folder / name) != entry["sha256"]:
            raise DataError(folder / name, "sha256 differs from manifest.json: the file is corrupt or was changed; copy it again")
    _VERIFIED[key] = tuple(signature)


def check_settings(cfg: RunConfig, manifest: dict[str, Any]) -> None:
    """Refuse a run whose data settings differ from those the bundle was made with."""
    baked = manifest["data"]["settings"]
    now = data_settings(cfg)
    for key, value in baked.items():
        if now.get(key) != value:
            name = {"task": "task", "selection_seed": "train.seed"}.get(key, f"data.{key}")
            why = " (it chose the bundled subset / validation shapes)" if key == "selection_seed" else ""
            raise ConfigError(
                f"{cfg.bundle}: {name}={now.get(key)!r} but the bundle was made with {value!r}{why}; "
                "these are fixed when bundling (make a new bundle with appt bundle)"
            )


def bundle_data(cfg: RunConfig, with_train: bool = True) -> Any:
    """The run's datasets from bundle ``cfg.bundle`` (a :class:`~appt.training.builders.DataBundle`),
    with the config's transforms, preparation and seed."""
    from appt.data import Preparation, build_transforms
    from appt.data.bundle import BundledDataset
    from appt.training.builders import DataBundle

    folder = Path(cfg.bundle)
    manifest = read_manifest(folder)
    check_settings(cfg, manifest)
    d, entry = cfg.data, manifest["data"]
    prep = Preparation.from_options(d.num_points, d.options)

    def split(role: str, train: bool) -> BundledDataset:
        if role not in entry["splits"]:
            raise DataError(folder, f"the bundle holds no {role} split (splits: {', '.join(entry['splits'])})")
        ds = BundledDataset(folder / entry["splits"][role]["file"])
        transforms = build_transforms(d.train_transforms if train else d.test_transforms)
        return ds.configure(prep, transforms, cfg.train.seed, None)

    test = split("test", False)
    train = split("train", True) if with_train else None
    evaluation = (split("val", False) if d.val_fraction > 0 else test) if with_train else test
    if list(test.classes) != entry["classes"]:
        raise DataError(folder, "the test split's class names differ from manifest.json")
    in_channels = int(test[0]["points"].shape[-1])
    return DataBundle(train, evaluation, test, list(entry["classes"]), in_channels, entry.get("category_parts"))


@contextmanager
def staged_backbones(folder: str | os.PathLike) -> Iterator[None]:
    """While active, building a backbone builds the one staged in bundle ``folder``."""
    from appt.backbones.bundled import use_bundle

    folder = Path(folder)
    manifest = read_manifest(folder)
    entry = manifest.get("backbone")
    with use_bundle(folder / entry["folder"] if entry else folder, entry):
        yield


def load_bundle_config(folder: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The bundle's run config with ``overrides`` applied and ``bundle`` set to ``folder``."""
    from appt.training.config import load_config

    folder = Path(folder)
    manifest = read_manifest(folder)
    cfg = load_config(folder / manifest["config"], [*overrides])
    cfg.bundle = str(folder.absolute())
    check_settings(cfg, manifest)
    return cfg


def format_manifest(manifest: dict[str, Any], folder: str | os.PathLike) -> str:
    """The lines ``appt bundle`` prints: every file with its size, the total, what is inside."""
    lines = [f"bundle: {folder}"]
    width = max(len(n) for n in manifest["files"])
    for name, entry in manifest["files"].items():
        lines.append(f"  {name:<{width}}  {entry['bytes'] / 2**20:9.2f} MiB")
    lines.append(f"  {'total':<{width}}  {manifest['total_bytes'] / 2**20:9.2f} MiB")
    splits = ", ".join(f"{role} {s['shapes']}" for role, s in manifest["data"]["splits"].items())
    points = next(iter(manifest["data"]["splits"].values()))["points_per_shape"]
    lines.append(f"clouds: {splits} shapes, {points} points each, coordinates {manifest['points_dtype']}")
    bb = manifest["backbone"]
    if bb:
        lines.append(f"backbone: {bb['identity']}, {bb['depth']} x {bb['width']}, {bb['parameters']:,} values "
                     f"in {bb['tensors']} tensors, {bb['dtype']}")
    commit = manifest["appt"]["commit"]
    lines.append(f"appt commit: {commit or 'unknown'}" + (" (with uncommitted changes)" if manifest["appt"]["dirty"] else ""))
    return "\n".join(lines)
