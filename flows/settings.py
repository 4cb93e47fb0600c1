"""Pipeline settings for the flows, from the environment or a ``.env`` file (pydantic-settings).

Flows read them once, at the start of a run, and pass plain values down to tasks and library
calls; a deployment parameter always wins over the environment.
"""

from __future__ import annotations

from pydantic import Field

from predrnn.settings import Settings


class PipelineSettings(Settings):
    """Where the flows find their services (the local stack's worker exports all of these): the
    library's :class:`predrnn.settings.Settings` (state folder, MLflow store, Ray address) and the
    pipeline's own (datasets root, registered model, promotion margin)."""

    datasets_root: str = Field(".state/datasets", validation_alias="PREDRNN_DATASETS_ROOT")
    model_name: str = Field("predrnn-v2", validation_alias="PREDRNN_MODEL_NAME")
    margin: float = Field(0.01, ge=0, lt=1, validation_alias="PREDRNN_PROMOTION_MARGIN")
