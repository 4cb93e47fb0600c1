"""Session-wide test settings: keep every tool's state inside a temporary folder, no telemetry."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

_STATE = tempfile.mkdtemp(prefix="predrnn-tests-")
_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "PREFECT_HOME": os.path.join(_STATE, "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}
for _k, _v in _DEFAULTS.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def pytest_sessionfinish(session, exitstatus):
    session.config._predrnn_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without interpreter teardown once pytest has finished and reported.

    After a full run that started and stopped Ray clusters and used the S3 client's native runtime,
    CPython's final teardown of those native threads has crashed (SIGSEGV) after every test had
    passed and the summary was printed. The results are final at this point, so exit with pytest's
    own status and skip that teardown.
    """
    import sys

    status = getattr(config, "_predrnn_exitstatus", None)
    if status is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
