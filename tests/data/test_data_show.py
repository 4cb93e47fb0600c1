"""``predrnn data show``: per-split clips, sequences and frames, and the frames two splits share.

The expected counts are computed here from the stored clips with Python sets of frame bytes, independently
of the digests the ingest records.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from predrnn.cli import app
from predrnn.data import ingest, open_version
from predrnn.data.report import version_report
from predrnn.data.store import SPLITS, manifest_key

runner = CliRunner()
PAIRS = ("train/test", "train/val", "val/test")


def _expected(uri: str) -> dict:
    """Frames, distinct non-constant frames, constant frames per split and shared contents per pair."""
    v = open_version(uri)
    contents: dict[str, set[bytes]] = {}
    out: dict = {"frames": {}, "unique_frames": {}, "constant_frames": {}}
    for s in SPLITS:
        x = v.read(v.split_indices(s))
        frames = x.reshape(-1, *x.shape[2:])
        constant = [bool(np.all(np.isnan(f)) or np.nanmin(f) == np.nanmax(f)) for f in frames]
        contents[s] = {f.tobytes() for f, c in zip(frames, constant, strict=True) if not c}
        out["frames"][s] = len(frames)
        out["unique_frames"][s] = len(contents[s])
        out["constant_frames"][s] = sum(constant)
    out["shared_frames"] = {p: len(contents[p.split("/")[0]] & contents[p.split("/")[1]]) for p in PAIRS}
    return out


def _show(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["data", "show", *args])
    return res.exit_code, res.stdout, res.stderr


def _show_json(*args: str) -> dict:
    code, out, err = _show(*args, "--json")
    assert code == 0, err
    return json.loads(out)  # exactly one JSON object: anything else on stdout fails here


def _kth_tree(base: Path, persons: tuple[int, ...]) -> Path:
    """KTH's layout; every frame non-constant and unique (a stamp value with one dark pixel)."""
    stamp = 1
    for p in persons:
        d = base / "boxing" / f"person{p:02d}_boxing_d1_uncomp"
        d.mkdir(parents=True)
        for k in range(12):
            img = np.full((8, 8), stamp + 1, np.uint8)
            img[0, 0] = 0
            Image.fromarray(img).save(d / f"image_{k + 1:04d}.png")
            stamp += 1
    return base


def _leaky(root: Path, tmp_path: Path) -> str:
    """12 npy rows, 3 copies each of 4 clips, split per row (seeded): the copies land in several splits."""
    rng = np.random.default_rng(1)
    base = rng.integers(1, 255, (4, 5, 8, 8), dtype=np.uint8)
    base[:, 0] = 0  # a blank frame in every clip: constant, never counted as shared
    rows = np.concatenate([base, base, base])
    np.save(tmp_path / "leaky.npy", rows)
    return ingest("npy", str(tmp_path / "leaky.npy"), "leaky", str(root), split="seeded", val_fraction=0.25,
                  test_fraction=0.25, split_seed=3)


def test_kth_persons_per_split_and_no_shared_frame(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    persons = (1, 2, 3, 4, 5, 17, 18)
    src = _kth_tree(tmp_path / "kth", persons)
    res = runner.invoke(app, ["ingest", "--kind", "frames-folder", "--source", str(src), "--name", "kth",
                              "--root", str(root), "--window", "6", "--stride", "3", "--split", "kth",
                              "--val-fraction", "0.4", "-q"])
    assert res.exit_code == 0, res.output
    uri = res.stdout.strip().splitlines()[-1]
    split = open_version(uri).attrs["split"]
    assert split["shared_frames"] == dict.fromkeys(PAIRS, 0)
    assert {k: split[k] for k in ("frames", "unique_frames", "constant_frames", "shared_frames")} == _expected(uri)

    monkeypatch.chdir(tmp_path)
    code, out, _ = _show(uri, "--png", str(tmp_path / "kth.png"))
    assert code == 0
    assert "WARNING" not in out
    lines = out.splitlines()
    # 3 windows of 6 frames per 12-frame video (starts 0, 3, 6), which together cover all 12 frames
    assert any(ln.split()[:5] == ["test", "6", "2", "36", "24"] and "person17, person18" in ln for ln in lines)
    assert any(ln.split()[:5] == ["train", "9", "3", "54", "36"] for ln in lines)
    assert any(ln.split()[:5] == ["val", "6", "2", "36", "24"] for ln in lines)
    assert "train/test 0, train/val 0, val/test 0 (recorded at ingest" in out

    j = _show_json(uri)
    v = open_version(uri)
    assert (j["version"], j["shape"], j["dtype"]) == (v.version, list(v.shape), "uint8")
    assert j["split_method"] == "kth" and j["values"] == v.attrs["values"]
    assert j["shared_frames"] == split["shared_frames"] and j["overlap_check"] == "ingest"
    for s in SPLITS:
        row = j["splits"][s]
        assert row["clips"] == split["sizes"][s] and row["frames"] == 6 * split["sizes"][s]
        assert row["sequences"] == split["sequences"][s] == len(row["sequence_names"])
        assert row["sequence_names"] == split["sequence_names"][s]
        assert row["unique_frames"] == split["unique_frames"][s]
    assert j["splits"]["test"]["sequence_names"] == ["person17", "person18"]
    assert j["sample"] is None and not list(tmp_path.glob("kth@*.png"))  # --json writes no strip unless asked


def test_a_leaky_version_warns_with_the_right_count(root: Path, tmp_path: Path):
    uri = _leaky(root, tmp_path)
    expected = _expected(uri)
    assert sum(expected["shared_frames"].values()) > 0
    assert expected["constant_frames"] == {s: n // 5 for s, n in expected["frames"].items()}

    j = _show_json(uri)
    assert j["shared_frames"] == expected["shared_frames"]
    assert {s: j["splits"][s]["unique_frames"] for s in SPLITS} == expected["unique_frames"]
    assert {s: j["splits"][s]["constant_frames"] for s in SPLITS} == expected["constant_frames"]

    code, out, _ = _show(uri, "--png", str(tmp_path / "s.png"))
    assert code == 0
    warnings = [ln for ln in out.splitlines() if ln.startswith("WARNING:")]
    assert len(warnings) == 1
    named = re.findall(r"(\d+) (?:frame\(s\) appear )?in both (\w+) and (\w+)", warnings[0])
    assert {f"{a}/{b}": int(n) for n, a, b in named} == {p: n for p, n in expected["shared_frames"].items() if n}
    md = version_report(uri)["markdown"]
    assert "WARNING:" in md and "| split train | 6 clips, 6 sequences, 30 frames" in md

    # the record is in the attributes only: the version id still hashes the header, the data and the split
    v = open_version(uri)
    header = {"schema": 1, "shape": list(v.shape), "dtype": v.dtype.str}
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    h.update(hashlib.sha256(np.ascontiguousarray(v.read(np.arange(len(v)))).data).digest())
    h.update(v.split_codes.tobytes())
    assert h.hexdigest()[:16] == v.version


def test_constant_frames_repeated_across_splits_do_not_warn(root: Path, tmp_path: Path):
    rng = np.random.default_rng(2)
    x = rng.random((10, 5, 6, 6, 1)).astype(np.float32)
    x[:, 0] = 0.0  # blank
    x[:, 1] = np.nan  # no data at all
    x[:, 2] = np.nan
    x[:, 2, :3] = 0.0  # blank where there is data
    np.save(tmp_path / "blank.npy", x)
    uri = ingest("npy", str(tmp_path / "blank.npy"), "blank", str(root), units="mm/h", split="seeded",
                 val_fraction=0.2, test_fraction=0.3)
    expected = _expected(uri)
    assert expected["shared_frames"] == dict.fromkeys(PAIRS, 0)
    j = _show_json(uri)
    assert j["shared_frames"] == dict.fromkeys(PAIRS, 0)
    assert {s: j["splits"][s]["constant_frames"] for s in SPLITS} == expected["constant_frames"] == \
        {"train": 15, "val": 6, "test": 9}
    assert {s: j["splits"][s]["unique_frames"] for s in SPLITS} == {"train": 10, "val": 4, "test": 6}
    code, out, _ = _show(uri, "--png", str(tmp_path / "b.png"))
    assert code == 0 and "WARNING" not in out


def test_check_overlap_on_a_version_without_the_record(root: Path, tmp_path: Path):
    uri = _leaky(root, tmp_path)
    v = open_version(uri)
    recorded = v.attrs["split"]
    path = root / manifest_key(v.name, v.version)
    manifest = json.loads(path.read_text())
    for key in ("frames", "unique_frames", "constant_frames", "shared_frames", "frame_check"):
        del manifest["attrs"]["split"][key]  # as written before the check existed
    path.write_text(json.dumps(manifest))

    code, out, _ = _show(uri, "--png", str(tmp_path / "s.png"))
    assert code == 0 and "WARNING" not in out
    assert "not recorded at ingest" in out and "--check-overlap" in out
    j = _show_json(uri)
    assert j["shared_frames"] is None and j["overlap_check"] == "not recorded"
    assert j["splits"]["train"]["unique_frames"] is None and j["splits"]["train"]["frames"] == 5 * 6

    j = _show_json(uri, "--check-overlap")
    assert j["overlap_check"] == "computed"
    assert j["shared_frames"] == recorded["shared_frames"] == _expected(uri)["shared_frames"]
    for s in SPLITS:
        assert j["splits"][s]["unique_frames"] == recorded["unique_frames"][s]
        assert j["splits"][s]["constant_frames"] == recorded["constant_frames"][s]
        assert j["splits"][s]["frames"] == recorded["frames"][s]
    code, out, _ = _show(uri, "--check-overlap", "--png", str(tmp_path / "s.png"))
    assert code == 0 and "computed from the data" in out
    assert sum(ln.startswith("WARNING:") for ln in out.splitlines()) == 1


def test_a_bad_uri_is_one_line_and_exit_2(root: Path):
    for uri in (f"{root}/nothing", f"{root}/../x/..", "s3://"):
        code, out, err = _show(uri, "--json")
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
