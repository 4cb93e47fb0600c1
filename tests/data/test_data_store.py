"""The store's contract: URIs, versions, reads, idempotent re-ingest and the all-or-nothing publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from predrnn.data import DataError, gc_orphans, ingest, list_datasets, open_version, parse_uri
from predrnn.data.sources import make_source


def _data_dirs(root: Path, name: str) -> list[str]:
    d = root / name / "data"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_moving_digits_version_contract(root: Path):
    uri = ingest("moving-digits", "", "mm", str(root), num_clips=30, frames=12, height=48, width=48, seed=3)
    v = open_version(uri)
    assert v.uri == uri and uri.startswith(str(root) + "/mm@")
    assert (v.name, v.shape, v.dtype) == ("mm", (30, 12, 48, 48, 1), np.dtype(np.uint8))
    for key in ("schema_version", "source", "created", "frame_shape", "value_range", "units", "stats",
                "normalisation", "split", "content_hash"):
        assert key in v.attrs, key
    assert v.version == v.attrs["content_hash"][:16]
    assert v.attrs["source"]["kind"] == "moving-digits" and v.attrs["source"]["checksum"]
    # Same clip as the generator makes on its own, in any requested order.
    gen = make_source("moving-digits", "", {"num_clips": 30, "frames": 12, "height": 48, "width": 48, "seed": 3})
    got = v.read([7, 2, 7])
    np.testing.assert_array_equal(got[0], gen.clip(7))
    np.testing.assert_array_equal(got[1], gen.clip(2))
    np.testing.assert_array_equal(got[2], got[0])
    np.testing.assert_array_equal(v.read(np.arange(30))[11], gen.clip(11))
    # Two digits are visible and they move.
    assert got[0].max() == 255 and not np.array_equal(got[0][0], got[0][-1])
    # Splits: disjoint, covering, seeded sizes.
    parts = [v.split_indices(s) for s in ("train", "val", "test")]
    assert [p.size for p in parts] == [24, 3, 3]
    assert np.array_equal(np.sort(np.concatenate(parts)), v.split_indices("all"))
    assert all(p.dtype == np.int64 for p in parts)
    # @latest and the bare name resolve to it.
    assert open_version(f"{root}/mm@latest").uri == uri
    assert open_version(f"{root}/mm").uri == uri


def test_reingest_same_input_is_a_noop(root: Path):
    a = ingest("moving-digits", "", "mm", str(root), num_clips=10, frames=6)
    before = _data_dirs(root, "mm")
    b = ingest("moving-digits", "", "mm", str(root), num_clips=10, frames=6)
    assert a == b and _data_dirs(root, "mm") == before
    c = ingest("moving-digits", "", "mm", str(root), num_clips=11, frames=6)
    assert c != a
    assert open_version(f"{root}/mm@latest").uri == c
    assert open_version(a).shape[0] == 10  # the earlier version is untouched
    rows = list_datasets(root)
    assert [r["uri"] for r in rows] == [a, c] and rows[-1]["latest"]


def test_same_content_from_another_file_gets_the_same_version(root: Path, tmp_path: Path):
    data = np.random.default_rng(0).integers(0, 255, (6, 5, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "a.npy", data)
    np.save(tmp_path / "b.npy", data)
    a = ingest("npy", str(tmp_path / "a.npy"), "arr", str(root))
    b = ingest("npy", str(tmp_path / "b.npy"), "arr", str(root))
    assert a == b
    assert len(_data_dirs(root, "arr")) == 1  # the second copy was written, verified and dropped


def test_read_errors_and_uri_parsing(root: Path):
    uri = ingest("moving-digits", "", "mm", str(root), num_clips=4, frames=4)
    v = open_version(uri)
    with pytest.raises(DataError, match="out of range"):
        v.read([4])
    with pytest.raises(DataError, match="unknown split"):
        v.split_indices("holdout")
    with pytest.raises(DataError, match="not found"):
        open_version(f"{root}/mm@0000000000000000")
    with pytest.raises(DataError, match="no published version"):
        open_version(f"{root}/other")
    assert parse_uri("s3://bucket/pre/fix/mm@abc") == ("s3://bucket/pre/fix", "mm", "abc")
    assert parse_uri("s3://bucket/mm") == ("s3://bucket", "mm", "latest")
    assert parse_uri("/data/mm@latest") == ("/data", "mm", "latest")


_WRITER = textwrap.dedent("""
    import signal
    import sys
    from predrnn.data import ingest

    # Ctrl-C as in a terminal, even when the suite runs in the background (where SIGINT is inherited ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def progress(n):
        print("written", n, flush=True)

    ingest("moving-digits", "", "mm", sys.argv[1], num_clips=20000, frames=20, progress=progress)
    print("finished", flush=True)
""")


def _start_writer(root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for_writes(proc: subprocess.Popen, lines: int = 2) -> None:
    assert proc.stdout is not None
    seen = 0
    deadline = time.monotonic() + 120
    while seen < lines and time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "the writer exited before writing"
        assert "finished" not in line
        seen += line.startswith("written")
    assert seen >= lines


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_killed_writer_leaves_no_visible_version(root: Path, sig: int):
    earlier = ingest("moving-digits", "", "mm", str(root), num_clips=8, frames=20)
    expected = open_version(earlier).read(np.arange(8))
    proc = _start_writer(root)
    try:
        _wait_for_writes(proc)
        assert len(_data_dirs(root, "mm")) == 2  # the writer's staging data exists ...
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    # ... but no version became visible, and the earlier one is intact.
    assert [r["uri"] for r in list_datasets(root)] == [earlier]
    assert open_version(f"{root}/mm@latest").uri == earlier
    np.testing.assert_array_equal(open_version(earlier).read(np.arange(8)), expected)
    if sig == signal.SIGINT:
        assert len(_data_dirs(root, "mm")) == 1  # Ctrl-C cleans up its staging data
    else:
        assert len(_data_dirs(root, "mm")) == 2  # SIGKILL cannot; gc removes the orphan
        assert len(gc_orphans(str(root), "mm", older_than_s=0)) == 1
        assert len(_data_dirs(root, "mm")) == 1
        np.testing.assert_array_equal(open_version(earlier).read(np.arange(8)), expected)


def test_retried_verify_and_publish_keep_their_data(root: Path):
    """A verify or publish retried after a lost reply (the flow's task retries) must not delete the data that
    the first attempt already published or checked."""
    from predrnn.data import publish_version, verify_version, write_version

    staged = write_version("moving-digits", None, "retry", str(root), num_clips=6, frames=4, height=32, width=32,
                           seed=2)
    assert verify_version(staged)["verified"] and verify_version(staged)["verified"]
    uri = publish_version(staged)
    before = np.asarray(open_version(uri).array[:])
    assert publish_version(staged) == uri  # the retry finds its own manifest
    np.testing.assert_array_equal(np.asarray(open_version(uri).array[:]), before)
    assert gc_orphans(str(root), "retry", older_than_s=0) == []

    # a second writer of the same content: its copy is dropped, the published one stays
    again = write_version("moving-digits", None, "retry", str(root), num_clips=6, frames=4, height=32, width=32,
                          seed=2)
    assert again["key"] != staged["key"] and publish_version(again) == uri
    assert not (root / again["key"]).exists()
    np.testing.assert_array_equal(np.asarray(open_version(uri).array[:]), before)
