"""The MLflow edge, in one package: runs (:mod:`.runs`), the logged pyfunc model (:mod:`.model`) and the
registry's promotion gate (:mod:`.registry`). Callers use these operations, never a raw MLflow client,
and every one takes the tracking URI its door resolved; no process-wide tracking URI is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from predrnn.tracking.runs import (
    CHALLENGER,
    MetricLogger,
    Tracker,
    TrackingError,
    artifact_root,
    check_tracking,
    default_tracking_uri,
    git_commit,
    resolve_tracking_uri,
    ui_command,
)


def load_registered_model(ref: str, tracking_uri: str | None = None,
                          cache_dir: Path | None = None) -> tuple[Any, Any]:
    """See :func:`predrnn.tracking.model.load_registered_model`."""
    from predrnn.tracking.model import load_registered_model as load

    return load(ref, tracking_uri, cache_dir)


def __getattr__(name: str) -> Any:
    # Unpickling a logged model looks the pyfunc class up here by name: build it then.
    if name == "ForecastModel":
        from predrnn.tracking.model import forecast_model_class

        return forecast_model_class()
    raise AttributeError(name)


__all__ = ["CHALLENGER", "MetricLogger", "Tracker", "TrackingError", "artifact_root", "check_tracking",
           "default_tracking_uri", "git_commit", "load_registered_model", "resolve_tracking_uri", "ui_command"]
