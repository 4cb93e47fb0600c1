"""``predrnn ingest --source s3://...`` for every file-based kind, on a real S3 server (SeaweedFS).

Each source is written locally in its real format, uploaded under a fresh prefix, and ingested both
from disk and from S3: the stored clips and splits must be identical, the dataset must record the S3
URI as its location, a re-ingest must be a no-op, and a bad URI must fail in one line before anything
is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from data_helpers import moving_blobs, write_netcdf, write_thuml_npz, write_video
from PIL import Image
from typer.testing import CliRunner

from predrnn.cli import app
from predrnn.data import DataError, ingest, list_datasets, open_version
from predrnn.data.sources import make_source, remote

pytestmark = [pytest.mark.s3, pytest.mark.slow]

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _no_copies_left():
    """The test session leaves through os._exit (tests/conftest.py), which skips the exit handler."""
    yield
    remote.clear_cache()

# (kind, path below the prefix, options): every file-based kind, objects and prefixes.
CASES = [
    ("thuml-npz", "mnist", {}),  # a prefix holding mnist_train.npz / mnist_valid.npz: the file names split
    ("npy", "arr.npy", {"val_fraction": 0.25, "test_fraction": 0.25}),  # one object
    ("mnist-seq-npy", "seq/mnist_test_seq.npy", {}),
    ("video-folder", "videos", {"window": 4}),  # a prefix of GIFs in train/ and test/ folders
    ("frames-folder", "kth", {"window": 4, "stride": 2, "split": "kth"}),  # KTH persons in the key names
    ("netcdf", "radar.nc", {"window": 4, "val_fraction": 0.2, "test_fraction": 0.2}),
    # a Zarr store: a prefix of many small objects
    ("netcdf", "grid.zarr", {"window": 3, "val_fraction": 0.2, "test_fraction": 0.2}),
    # a radar archive: a prefix of one CF NetCDF file per scan, int16-packed, with a gap in time
    ("netcdf", "scans", {"window": 4, "val_fraction": 0.2, "test_fraction": 0.2}),
    # an xarray-written Zarr v2 store with consolidated metadata
    ("netcdf", "rain_v2.zarr", {"window": 4, "val_fraction": 0.2, "test_fraction": 0.2}),
]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small sources in their real formats, in one local folder."""
    d = tmp_path_factory.mktemp("sources")
    (d / "mnist").mkdir()
    write_thuml_npz(d / "mnist" / "mnist_train.npz", moving_blobs(6, 6, seed=1))
    write_thuml_npz(d / "mnist" / "mnist_valid.npz", moving_blobs(3, 6, seed=2), compressed=True)
    np.save(d / "arr.npy", moving_blobs(8, 5, seed=3))
    (d / "seq").mkdir()
    np.save(d / "seq" / "mnist_test_seq.npy", moving_blobs(4, 6, seed=4).transpose(1, 0, 2, 3).copy())
    for split, seed in (("train", 5), ("test", 6)):
        (d / "videos" / split).mkdir(parents=True)
        write_video(d / "videos" / split / "clip.gif", moving_blobs(1, 8, seed=seed)[0])
    stamp = 1
    for p in (1, 2, 3, 17):
        f = d / "kth" / "boxing" / f"person{p:02d}_boxing_d1_uncomp"
        f.mkdir(parents=True)
        for k in range(8):
            Image.fromarray(np.full((8, 8), stamp, np.uint8)).save(f / f"image_{k + 1:04d}.png")
            stamp += 1
    rain = np.random.default_rng(7).gamma(1.0, 2.0, (40, 6, 7)).astype(np.float32)
    rain[3, 2, 2] = -999.0  # a _FillValue cell: NaN in the dataset
    write_netcdf(d / "radar.nc", rain)
    import zarr

    g = zarr.open_group(str(d / "grid.zarr"), mode="w")
    arr = g.create_array("precip", shape=(30, 4, 5), chunks=(5, 4, 5), dtype="f4", dimension_names=("time", "y", "x"))
    arr[:] = np.arange(30 * 4 * 5, dtype=np.float32).reshape(30, 4, 5)
    arr.attrs["units"] = "mm"
    from predrnn.data.sources.generators import write_scan_archive

    write_scan_archive(d / "scans", steps=30, height=12, width=12, episode=15, missing=((12, 2),))
    import xarray as xr

    times = np.datetime64("2026-06-01T00:00", "ns") + np.timedelta64(10, "m") * np.arange(24)
    ds = xr.Dataset({"rain": (("time", "y", "x"), np.where(rain[:24] < 0, np.nan, rain[:24]))}, coords={"time": times})
    ds["rain"].encoding.update(dtype="int16", scale_factor=0.01, _FillValue=np.int16(-1))
    ds.to_zarr(d / "rain_v2.zarr", zarr_format=2, consolidated=True, mode="w")
    return d


@pytest.fixture(scope="module")
def uploaded(s3_server, local: Path) -> str:
    """``s3://bucket/prefix``: every file of ``local`` uploaded under a fresh prefix, same layout."""
    prefix = f"sources-{uuid.uuid4().hex[:6]}"
    client = s3_server.client()
    for f in sorted(local.rglob("*")):
        if f.is_file():
            client.upload_file(str(f), s3_server.bucket, f"{prefix}/{f.relative_to(local).as_posix()}")
    return f"s3://{s3_server.bucket}/{prefix}"


def _cli_ingest(kind: str, source: str, name: str, root: Path, opts: dict) -> tuple[int, str, str]:
    args = ["ingest", "--kind", kind, "--source", source, "--name", name, "--root", str(root), "-q"]
    for k, v in opts.items():
        args += ["-o", f"{k}={v}"]
    res = runner.invoke(app, args)
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_s3_source_matches_local(case: int, s3_env, local: Path, uploaded: str, root: Path,
                                 monkeypatch: pytest.MonkeyPatch):
    kind, rel, opts = CASES[case]
    remote.clear_cache()
    fetched: list[str] = []
    download = remote._download
    monkeypatch.setattr(remote, "_download", lambda client, uri, *a: fetched.append(uri) or download(client, uri, *a))

    here = open_version(ingest(kind, str(local / rel), "here", str(root), **opts))
    s3_uri = f"{uploaded}/{rel}"
    there = open_version(ingest(kind, s3_uri, "there", str(root), s3=s3_env.settings(), **opts))
    assert fetched == [s3_uri]  # inspect, validate and write share one copy
    assert there.shape == here.shape and there.dtype == here.dtype
    np.testing.assert_array_equal(there.array[:], here.array[:])  # NaN == NaN here
    np.testing.assert_array_equal(there.split_codes, here.split_codes)
    src = there.attrs["source"]
    assert src["location"] == s3_uri and src["kind"] == kind
    assert src["checksum"] == here.attrs["source"]["checksum"]  # a content checksum, not a path's
    assert there.version == here.version

    code, out, err = _cli_ingest(kind, s3_uri, "there", root, opts)  # the same source again: a no-op
    assert code == 0, err
    assert out.strip().splitlines()[-1] == there.uri
    assert [d["version"] for d in list_datasets(root) if d["name"] == "there"] == [there.version]


def test_s3_source_changed_object_is_fetched_again(s3_env, local: Path, uploaded: str, root: Path, tmp_path: Path):
    key = f"{uploaded.split('/', 3)[3]}/changing/arr.npy"
    first = ingest("npy", str(local / "arr.npy"), "x", str(root))
    s3_env.client().upload_file(str(local / "arr.npy"), s3_env.bucket, key)
    s3 = s3_env.settings()
    assert ingest("npy", f"{uploaded}/changing/arr.npy", "x", str(root), s3=s3) == first  # same content: no-op
    other = moving_blobs(8, 5, seed=9)
    np.save(tmp_path / "other.npy", other)
    s3_env.client().upload_file(str(tmp_path / "other.npy"), s3_env.bucket, key)
    second = ingest("npy", f"{uploaded}/changing/arr.npy", "x", str(root), s3=s3)
    assert second != first
    np.testing.assert_array_equal(open_version(second).array[:, ..., 0], other)


def test_s3_source_errors_are_one_line_and_write_nothing(s3_env, uploaded: str, root: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    code, out, err = _cli_ingest("thuml-npz", f"{uploaded}/nope.npz", "bad", root, {})
    assert code == 2
    assert err.strip().splitlines() == [f"error: source {uploaded}/nope.npz: no such object or prefix in bucket "
                                        f"{s3_env.bucket}"]
    code, out, err = _cli_ingest("frames-folder", f"{uploaded}/nothing/", "bad", root, {})
    assert code == 2 and err.strip().splitlines() == [f"error: source {uploaded}/nothing/: empty prefix (no "
                                                      f"objects below it in bucket {s3_env.bucket})"]
    s3 = s3_env.settings()
    with pytest.raises(DataError, match=r"^source s3://no-such-bucket-here/x.npy: the bucket does not exist"):
        ingest("npy", "s3://no-such-bucket-here/x.npy", "bad", str(root), s3=s3)
    # a reader's error names the object by its URI, not the temporary copy
    with pytest.raises(DataError, match=rf"^{uploaded}/arr.npy: \w+ of 5 frames are shorter than --window 99$"):
        ingest("npy", f"{uploaded}/arr.npy", "bad", str(root), window=99, s3=s3)
    nowhere = {**s3, "endpoint": "http://127.0.0.1:9"}  # nothing listens on the discard port
    with pytest.raises(DataError, match=r"^source s3://.*/arr.npy: cannot reach the S3 endpoint http://127.0.0.1:9"):
        ingest("npy", f"{uploaded}/arr.npy", "bad", str(root), s3=nowhere)
    assert list_datasets(root) == []


def test_s3_source_copy_left_by_nobody_and_refused_in_a_forked_child(s3_env, local: Path, uploaded: str, root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    """clear_cache removes a copy no live source holds; where obstore cannot run (a child forked after it
    started) fetching fails in one line naming the fix, before any request."""
    import predrnn.data.store as store

    remote.clear_cache()
    s3 = s3_env.settings()
    src = make_source("thuml-npz", f"{uploaded}/mnist", {}, s3=s3)
    assert isinstance(src.remote, remote.Mirror) and src.path is not None and src.path.is_dir()
    info = src.inspect()
    assert info.location == f"{uploaded}/mnist"
    assert info.checksum == make_source("thuml-npz", str(local / "mnist"), {}).inspect().checksum
    copy = src.path
    assert remote.clear_cache() == 0 and copy.exists()  # a live source keeps its copy
    del src
    assert remote.clear_cache() == 1 and not copy.exists()
    monkeypatch.setattr(store, "_obstore_usable", lambda: False)
    with pytest.raises(DataError, match=r"^s3://.* cannot be read in a process forked after S3 was used .*"
                                        r"multiprocessing_context='forkserver' or 'spawn'$"):
        make_source("thuml-npz", f"{uploaded}/mnist", {}, s3=s3)


def test_cli_subprocess_removes_its_copy(s3_env, uploaded: str, root: Path, tmp_path: Path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, **s3_env.env(), "TMPDIR": str(tmp)}
    cmd = [str(Path(sys.executable).parent / "predrnn"), "ingest", "--kind", "frames-folder", "--source",
           f"{uploaded}/kth", "--name", "kth", "--root", str(root), "--window", "4", "--split", "kth", "-q"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    v = open_version(res.stdout.strip().splitlines()[-1])
    assert v.attrs["source"]["location"] == f"{uploaded}/kth"
    assert v.attrs["split"]["sequence_names"]["test"] == ["person17"]
    assert not any(p.name.startswith("predrnn-s3-src-") for p in tmp.iterdir())  # removed at exit
