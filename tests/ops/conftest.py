"""Fixtures for the operations tests: stacks of real services in temporary folders, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ops_helpers import make_stack

from infra.stack import Stack


@pytest.fixture
def mlflow_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """Just the lean MLflow server (local artifacts, basic auth); this test talks to it as the pipeline's
    account (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``), the promoter's in ``PREDRNN_PROMOTER_*``."""
    stack = make_stack(["mlflow"])
    try:
        stack.up(echo=lambda _m: None)
        for k, v in stack.client_env().items():
            monkeypatch.setenv(k, v)
        yield stack
    finally:
        stack.down(echo=lambda _m: None)
