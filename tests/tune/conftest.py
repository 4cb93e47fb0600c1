"""Fixtures for the tuning tests: a tiny real Zarr dataset, tiny configs, one local Ray per module."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

# 32x32 frames, 6 frames per clip, one 8-channel layer: a trial's training takes a second or two, so
# a trial's cost is Ray Train's worker start-up.
from tune_helpers import TINY  # noqa: E402,F401  (fixtures use it)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tune_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """24 moving-digits clips of 6 frames at 32x32 in a real Zarr version."""
    from predrnn.data import ingest

    root = tmp_path_factory.mktemp("tune-datasets")
    return ingest("moving-digits", "", "tiny", str(root), num_clips=24, frames=6, height=32, width=32, seed=0)


@pytest.fixture(scope="session")
def short_tmp():
    """A short folder for Ray's temp dir (its socket paths have a length limit)."""
    path = tempfile.mkdtemp(prefix="ptu")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray(short_tmp: str):
    """One local 2-CPU Ray started the way ``predrnn tune`` starts it, shared by a module's tests.

    Yields its GCS address; shut down with ``ray.shutdown()`` at the end of the module.
    """
    import ray

    from predrnn.train.launch import ensure_ray

    temp = os.path.join(short_tmp, f"r{free_port()}")
    os.makedirs(temp)
    try:
        ensure_ray(None, num_cpus=2, temp_dir=temp)
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
