"""Fixtures for the training tests: a tiny real Zarr dataset, tiny configs, one local Ray per module."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from train_helpers import free_port


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """48 moving-digits clips of 8 frames at 32x32 in a real Zarr version (38/5/5 split)."""
    from predrnn.data import ingest

    root = tmp_path_factory.mktemp("datasets")
    return ingest("moving-digits", "", "tiny", str(root), num_clips=48, frames=8, height=32, width=32, seed=0)


@pytest.fixture(scope="session")
def short_tmp() -> str:
    """A short folder for Ray's temp dir (its socket paths have a length limit)."""
    path = tempfile.mkdtemp(prefix="prt")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray(short_tmp: str):
    """One local Ray instance shared by a module's tests (started as ``predrnn train`` starts one), shut
    down at the end of the module."""
    from predrnn.train.launch import ensure_ray, shutdown

    temp = os.path.join(short_tmp, f"r{free_port()}")
    os.makedirs(temp)
    started = ensure_ray(None, num_cpus=2, temp_dir=temp)
    yield
    shutdown(started)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
