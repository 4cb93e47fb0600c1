"""The store on a real S3 server (SeaweedFS on 127.0.0.1): round trip, idempotence, loader, errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from predrnn.cli import app
from predrnn.data import ClipDataset, DataError, ingest, list_datasets, open_version

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def test_s3_round_trip(s3_env, tmp_path: Path):
    root = f"s3://{s3_env.bucket}/rt-{uuid.uuid4().hex[:6]}"
    s3 = s3_env.settings()
    data = np.random.default_rng(0).integers(0, 255, (9, 5, 12, 12, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", data)
    uri = ingest("npy", str(tmp_path / "x.npy"), "arr", root, val_fraction=0.2, test_fraction=0.2, s3=s3)
    assert uri.startswith(f"{root}/arr@")
    v = open_version(f"{root}/arr@latest", s3)
    assert v.uri == uri and v.shape == (9, 5, 12, 12, 1)
    np.testing.assert_array_equal(v.read([8, 0, 4]), data[[8, 0, 4]])
    # Objects really live in the bucket: a manifest, a preview and one chunk per clip.
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix=root[len("s3://") + len(
        s3_env.bucket) + 1:])["Contents"]]
    assert sum(k.endswith(".json") and "/manifests/" in k for k in keys) == 1
    assert sum("/clips/c/" in k for k in keys) == 9
    # Idempotent re-ingest, listing, and the Dataset through two loader workers (started by forkserver:
    # obstore's runtime does not survive fork, and a forked worker says so instead of hanging).
    assert ingest("npy", str(tmp_path / "x.npy"), "arr", root, val_fraction=0.2, test_fraction=0.2, s3=s3) == uri
    assert [r["uri"] for r in list_datasets(root, s3)] == [uri]
    ds = ClipDataset(uri, split="all", s3=s3)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="forkserver"))
    np.testing.assert_allclose(torch.cat(batches).numpy(), data.astype(np.float32) / 255)
    with pytest.raises(DataError, match=r"forked after S3 was used .* multiprocessing_context='forkserver'"):
        list(DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="fork"))
    res = CliRunner().invoke(app, ["data", "ls", root])
    assert res.exit_code == 0 and uri in res.stdout


def test_s3_bucket_missing(s3_env):
    root = "s3://no-such-bucket-here/prefix"
    with pytest.raises(DataError, match=r"destination s3://no-such-bucket-here/prefix is not writable: "
                                        r"the bucket does not exist"):
        ingest("moving-digits", "", "mm", root, num_clips=2, frames=3, s3=s3_env.settings())


def test_s3_bad_credentials(s3_env, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    root = f"s3://{s3_env.bucket}/creds"
    with pytest.raises(DataError, match=r"destination s3://.*/creds is not writable"):
        ingest("moving-digits", "", "mm", root, num_clips=2, frames=3, s3=s3_env.settings())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret)
    assert list_datasets(root, s3_env.settings()) == []


def test_s3_failed_write_leaves_nothing(s3_env, tmp_path: Path):
    prefix = f"fail-{uuid.uuid4().hex[:6]}"
    root = f"s3://{s3_env.bucket}/{prefix}"
    clips = np.zeros((300, 3, 8, 8), np.float32)
    clips[280, 0, 0, 0] = np.inf
    np.save(tmp_path / "x.npy", clips)
    with pytest.raises(DataError, match=r"clip 280: NaN/inf in image data"):
        ingest("npy", str(tmp_path / "x.npy"), "mm", root, image=True, s3=s3_env.settings())
    assert list_datasets(root, s3_env.settings()) == []
    listed = s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix=prefix + "/")
    assert listed.get("KeyCount", 0) == 0
