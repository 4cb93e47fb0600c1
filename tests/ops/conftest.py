"""Fixtures for the operations tests: stacks of real services in temporary folders, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ops_helpers import make_stack

from infra.stack import Stack


@pytest.fixture
def mlflow_only() -> Iterator[Stack]:
    """Just the lean MLflow server (local artifacts)."""
    stack = make_stack(["mlflow"])
    try:
        stack.up(echo=lambda _m: None)
        yield stack
    finally:
        stack.down(echo=lambda _m: None)
