"""A corpus of bad inputs, made from real files by truncating, corrupting, mislabelling ...: each one
raises one DataError whose message names the offending file and the problem."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from appt.data import build_dataset, read_points
from appt.data.modelnet import MODELNET40_CLASSES
from appt.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PCD = DATA / "modelnet10_pcd" / "ModelNet10" / "pcd" / "chair" / "train" / "chair_0001.pcd"
OFF = DATA / "modelnet_off" / "ModelNet40" / "monitor" / "train" / "monitor_0001.off"
TXT = DATA / "modelnet40_normal_resampled" / "bench" / "bench_0001.txt"
SNP = DATA / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
CAP = SNP / "02954340" / "cap_test_00.txt"

# Each case: (name, builder) where builder(tmp) writes the bad input and returns
# (call that must fail, the file its message must name, a fragment of the problem).
Case = Callable[[Path], tuple[Callable[[], object], Path, str]]


def _real_xyz() -> np.ndarray:
    return read_points(PCD).xyz


def _write(tmp: Path, name: str, content: bytes | str) -> Path:
    p = tmp / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def _reader(path: Path, fragment: str, **kw: object) -> tuple[Callable[[], object], Path, str]:
    return (lambda: read_points(path, **kw)), path, fragment


def _npy(tmp: Path, name: str, arr: np.ndarray, fragment: str, **kw: object):
    np.save(tmp / name, arr)
    return _reader(tmp / name, fragment, **kw)


def _npz(tmp: Path, name: str, fragment: str, index: int | None = None, **arrays: np.ndarray):
    np.savez(tmp / name, **arrays)
    return _reader(tmp / name, fragment, index=index)


def _truncated_npy(tmp: Path):
    np.save(tmp / "full.npy", _real_xyz())
    return _reader(_write(tmp, "cut.npy", (tmp / "full.npy").read_bytes()[:2000]), "corrupt or truncated")


def _truncated_h5_release(tmp: Path):
    root = _h5_layout(tmp, np.stack([_real_xyz()] * 64), np.zeros((64, 1), np.uint8))
    f = root / "ply_data_train0.h5"
    f.write_bytes(f.read_bytes()[:150_000])
    return (lambda: build_dataset("modelnet40_h5", root, "train", cache=False)), f, "corrupt or truncated HDF5"


def _txt_list_case(tmp: Path, listed: str, fragment: str):
    root = _txt_layout(tmp)
    (root / "modelnet40_train.txt").write_text(listed)
    return (lambda: build_dataset("modelnet40_txt", root, "train", cache=False)), root / "modelnet40_train.txt", fragment


def _list_case(tmp: Path, name: str, content: str, fragment: str, **kw: object):
    path = _write(tmp, name, content)
    return (lambda: build_dataset("filelist", path, "train", cache=False, **kw)), path, fragment


def _folder_case(tmp: Path, empty_class: bool, fragment: str, **kw: object):
    root, empty = _folder_layout(tmp, empty_class)
    named = empty if empty_class else root / "chair" / "test" / PCD.name
    return (lambda: build_dataset("modelnet_points", root, "test" if not empty_class else "train", cache=False, **kw)[0]), named, fragment


def _txt_lines() -> list[str]:
    return TXT.read_text().splitlines()[:200]


def _ply(tmp: Path, text: bool) -> Path:
    xyz = _real_xyz()
    v = np.array([tuple(p) for p in xyz], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    p = tmp / ("a.ply" if text else "b.ply")
    PlyData([PlyElement.describe(v, "vertex")], text=text).write(str(p))
    return p


def _h5_layout(tmp: Path, data: np.ndarray, label: np.ndarray, **extra: np.ndarray) -> Path:
    root = tmp / "mn40h5"
    root.mkdir()
    with h5py.File(root / "ply_data_train0.h5", "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=label)
        for k, v in extra.items():
            f.create_dataset(k, data=v)
    return root


def _h5_case(tmp: Path, fragment: str, data: np.ndarray | None = None, label: np.ndarray | None = None):
    xyz = _real_xyz()[None]
    data = np.repeat(xyz, 2, axis=0) if data is None else data
    label = np.array([[8], [8]], np.uint8) if label is None else label
    root = _h5_layout(tmp, data, label)
    ds = lambda: build_dataset("modelnet40_h5", root, "train", cache=False)[0]  # noqa: E731
    return ds, root / "ply_data_train0.h5", fragment


def _txt_layout(tmp: Path) -> Path:
    root = tmp / "mn40txt"
    (root / "bench").mkdir(parents=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES))
    (root / "bench" / "bench_0001.txt").write_text(TXT.read_text())
    return root


def _folder_layout(tmp: Path, empty_class: bool) -> tuple[Path, Path]:
    root = tmp / "folder"
    for cls in ("chair", "table"):
        for split in ("train", "test"):
            d = root / cls / split
            d.mkdir(parents=True)
            if not (empty_class and cls == "table" and split == "train"):
                (d / PCD.name).write_bytes(PCD.read_bytes())
    return root, root / "table" / "train"


def _snp_layout(tmp: Path, rows: str) -> tuple[Path, Path]:
    root = tmp / "snp"
    (root / "02954340").mkdir(parents=True)
    (root / "train_test_split").mkdir()
    (root / "synsetoffset2category.txt").write_text("Cap\t02954340\n")
    (root / "train_test_split" / "shuffled_test_file_list.json").write_text(json.dumps(["shape_data/02954340/bad"]))
    bad = root / "02954340" / "bad.txt"
    bad.write_text(rows)
    return root, bad


def _cap_rows(part: int | None = None, columns: int = 7) -> str:
    rows = [ln.split()[:columns] for ln in CAP.read_text().splitlines()[:300]]
    if part is not None:
        rows[17][6] = f"{part}.000000"
    return "\n".join(" ".join(r) for r in rows) + "\n"


def _snp_case(tmp: Path, rows: str, fragment: str):
    root, bad = _snp_layout(tmp, rows)
    return (lambda: build_dataset("shapenetpart", root, "test", cache=False)[0]), bad, fragment


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def _pickle_case(tmp: Path, fold: object, fragment: str):
    (tmp / "5way_1shot").mkdir()
    p = tmp / "5way_1shot" / "0.pkl"
    p.write_bytes(pickle.dumps(fold))
    return (lambda: build_dataset("fewshot_modelnet40", tmp, "train", way=5, shot=1, cache=False)), p, fragment


CASES: dict[str, Case] = {
    # ---- paths and formats
    "missing file": lambda t: _reader(t / "nope.pcd", "file not found"),
    "folder instead of file": lambda t: _reader(t, "is not a file"),
    "unsupported extension": lambda t: _reader(_write(t, "scan.las", b"LASF"), "unsupported file type"),
    # ---- text tables
    "empty txt": lambda t: _reader(_write(t, "empty.txt", ""), "empty cloud"),
    "NaN in txt": lambda t: _reader(_write(t, "nan.txt", "\n".join(_txt_lines()[:50] + ["0.1,nan,0.2,0,0,1"])), "NaN/Inf"),
    "Inf in xyz": lambda t: _reader(_write(t, "inf.xyz", "0 0 0\n1 inf 2\n"), "NaN/Inf"),
    "truncated txt row": lambda t: _reader(_write(t, "cut.txt", "\n".join(_txt_lines()) + "\n0.5,0.25"), "columns"),
    "non-numeric txt": lambda t: _reader(_write(t, "words.txt", "\n".join(_txt_lines()[:20] + ["a,b,c,d,e,f"])), "convert"),
    "five columns": lambda t: _reader(_write(t, "five.txt", "1 2 3 4 5\n6 7 8 9 10\n"), "5 columns"),
    "6 columns neither normals nor rgb": lambda t: _reader(_write(t, "six.txt", "0 0 0 5 -9 300\n1 1 1 7 8 -2\n"), "neither unit normals"),
    "pts count mismatch": lambda t: _reader(_write(t, "scan.pts", "1000\n" + "\n".join("1 2 3" for _ in range(10))), "header announces 1000"),
    # ---- numpy
    "1-D npy": lambda t: _npy(t, "flat.npy", _real_xyz().ravel(), "expected an (N, C)"),
    "two-column npy": lambda t: _npy(t, "two.npy", _real_xyz()[:, :2], "2 columns"),
    "transposed npy": lambda t: _npy(t, "tr.npy", _real_xyz().T, "transposed"),
    "complex npy": lambda t: _npy(t, "c.npy", _real_xyz().astype(np.complex64), "dtype complex"),
    "bool npy": lambda t: _npy(t, "b.npy", _real_xyz() > 0, "dtype bool"),
    "object npy": lambda t: _npy(t, "o.npy", np.array([[1, "a", None]] * 3, dtype=object), "pickle"),
    "empty npy": lambda t: _npy(t, "e.npy", np.zeros((0, 3), np.float32), "empty cloud"),
    "huge coordinates npy": lambda t: _npy(t, "h.npy", _real_xyz().astype(np.float64) * 1e30, "exceeds"),
    "truncated npy": _truncated_npy,
    "npz without points key": lambda t: _npz(t, "k.npz", "no points array", a=_real_xyz(), b=_real_xyz()),
    "npz stack without index": lambda t: _npz(t, "s.npz", "pass index=", points=np.stack([_real_xyz()] * 2)),
    "npz index out of range": lambda t: _npz(t, "r.npz", "out of range", index=5, points=np.stack([_real_xyz()] * 2)),
    # ---- pcd
    "truncated binary pcd": lambda t: _reader(_write(t, "cut.pcd", PCD.read_bytes()[:5001]), "corrupt or truncated"),
    "pcd cut at a row boundary": lambda t: _reader(_write(t, "row.pcd", PCD.read_bytes()[: PCD.read_bytes().index(b"DATA binary\n") + 12 + 12 * 500]), "truncated"),
    "pcd header only": lambda t: _reader(_write(t, "hdr.pcd", PCD.read_bytes()[: PCD.read_bytes().index(b"DATA binary\n") + 12]), "truncated"),
    "pcd without z": lambda t: _reader(_write(t, "noz.pcd", PCD.read_bytes().replace(b"FIELDS x y z", b"FIELDS x y w")), "no x/y/z"),
    "garbage pcd": lambda t: _reader(_write(t, "junk.pcd", b"\x00\xff" * 300), "corrupt or truncated"),
    # ---- ply
    "truncated ascii ply": lambda t: _reader(_write(t, "cut_a.ply", _ply(t, True).read_bytes()[:6000]), "corrupt or truncated"),
    "truncated binary ply": lambda t: _reader(_write(t, "cut_b.ply", _ply(t, False).read_bytes()[:6000]), "corrupt or truncated"),
    "bad ply header": lambda t: _reader(_write(t, "hdr.ply", b"plx\nformat ascii 1.0\n"), "corrupt or truncated"),
    "ply without xyz": lambda t: _reader(_write(t, "nox.ply", _ply(t, True).read_bytes().replace(b"property float x", b"property float u")), "no x/y/z"),
    # ---- meshes
    "truncated off": lambda t: _reader(_write(t, "cut.off", OFF.read_text()[:4000]), "corrupt or truncated"),
    "off without faces": lambda t: _reader(_write(t, "nofaces.off", "OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n"), "no faces"),
    "off face index out of range": lambda t: _reader(_write(t, "idx.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n"), "corrupt or truncated"),
    "off with NaN vertex": lambda t: _reader(_write(t, "nan.off", "OFF\n3 1 0\nnan 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"), "NaN/Inf"),
    "obj with vertices only": lambda t: _reader(_write(t, "v.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n"), "no faces"),
    "stl with zero-area faces": lambda t: _reader(_write(t, "flat.stl", "solid s\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 0 0 0\nvertex 0 0 0\nendloop\nendfacet\nendsolid s\n"), "zero area"),
    "empty obj": lambda t: _reader(_write(t, "empty.obj", ""), "no mesh"),
    # ---- h5 single file and the ModelNet40 h5 dataset
    "corrupt h5 file": lambda t: _reader(_write(t, "bad.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64), "corrupt or truncated"),
    "h5 label outside classes": lambda t: _h5_case(t, "outside the 40 classes", label=np.array([[8], [41]], np.uint8)),
    "h5 fractional labels": lambda t: _h5_case(t, "whole numbers", label=np.array([1.5, 2.0], np.float32)),
    "h5 wrong data shape": lambda t: _h5_case(t, "expected (M, N, 3)", data=np.zeros((2, 1024), np.float32)),
    "h5 string data": lambda t: _h5_case(t, "dtype", data=np.array([[["a"] * 3] * 4] * 2, dtype="S1")),
    "h5 NaN shape": lambda t: _h5_case(t, "NaN/Inf", data=np.stack([np.where(np.arange(1024)[:, None] == 5, np.nan, _real_xyz())] * 2).astype(np.float32)),
    "h5 truncated release file": _truncated_h5_release,
    # ---- list-based layouts
    "txt layout: listed shape missing": lambda t: _txt_list_case(t, "bench_0001\nbench_0002\n", "bench_0002.txt not found"),
    "txt layout: unknown class": lambda t: _txt_list_case(t, "benchh_0001\n", "'benchh'"),
    "class folder with no files": lambda t: _folder_case(t, True, "class folder has no"),
    "file list: unknown label": lambda t: _list_case(t, "l.csv", f"path,label\n{PCD},chair\n{PCD},sofa\n", "'sofa' is not one of", classes=["chair", "table"]),
    "file list: missing file": lambda t: _list_case(t, "m.json", json.dumps([{"path": str(PCD), "label": "chair"}, {"path": "gone.pcd", "label": "chair"}]), "gone.pcd not found"),
    "shapenetpart: part of another category": lambda t: _snp_case(t, _cap_rows(part=12), "not a part of Cap"),
    "shapenetpart: six columns": lambda t: _snp_case(t, _cap_rows(columns=6), "expected 7 columns"),
    # ---- few-shot pickles
    "fold pickle running code": lambda t: _pickle_case(t, {"train": [_Evil()], "test": []}, "refusing"),
    "fold pickle label outside the way": lambda t: _pickle_case(t, {"train": [(_real_xyz(), 7, "x")], "test": []}, "outside 0..4"),
    # ---- dataset level
    "dataset root missing": lambda t: ((lambda: build_dataset("modelnet_points", t / "nowhere")), t / "nowhere", "not found"),
    "normals requested from xyz-only files": lambda t: _folder_case(t, False, "has no normals", use_normals=True),
}


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_one_named_data_error(name: str, tmp_path: Path) -> None:
    call, path, fragment = CASES[name](tmp_path)
    with pytest.raises(DataError) as info:
        call()
    err = info.value
    assert path.name in err.path, f"message names {err.path!r}, expected {path.name}"
    assert fragment in err.problem, f"problem {err.problem!r} lacks {fragment!r}"
    assert "\n" not in str(err)
