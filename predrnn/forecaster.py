"""Load a forecaster: a model directory (no tracking code), or a registry URI through the MLflow edge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from predrnn.config import ExperimentConfig

REGISTRY_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def is_registry_ref(ref: str) -> bool:
    """``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``: a model in an MLflow store."""
    return ref.startswith(REGISTRY_SCHEMES)


def load_forecaster(ref: str, *, tracking_uri: str | None = None,
                    cache_dir: Path | None = None) -> tuple[Any, ExperimentConfig]:
    """``(nn.Module, ExperimentConfig)`` of a model directory, or of an MLflow registry URI
    (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``) from ``tracking_uri``; a registry
    version is downloaded once into ``cache_dir`` when given (keyed by store, name and version).

    Raises:
        CheckpointError: a model directory that cannot be read.
        TrackingError: the store is unreachable or the reference does not resolve.
    """
    if is_registry_ref(ref):
        from predrnn.tracking.model import load_registered_model

        return load_registered_model(ref, tracking_uri=tracking_uri, cache_dir=cache_dir)
    from predrnn.checkpoint import load_model_dir

    return load_model_dir(ref)
