"""Fixtures for the data tests: a dataset root, Prefect's harness (the S3 server is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """An empty dataset root folder."""
    r = tmp_path / "datasets"
    r.mkdir()
    return r


# ---------------------------------------------------------------------------------------------
# Prefect's real test harness (a temporary server on a SQLite database), once per session.


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
