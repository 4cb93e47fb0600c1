"""Pipeline settings for the flows, from the environment or a ``.env`` file (pydantic-settings).

Flows read them once, at the start of a run, and pass plain values down to tasks and library
calls; a deployment parameter always wins over the environment.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PipelineSettings(BaseSettings):
    """Where the flows find their services (the local stack's worker exports all of these)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    tracking_uri: str | None = Field(None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI",
                                                                        "PREDRNN_TRACKING_URI"))
    datasets_root: str = Field(".state/datasets", validation_alias="PREDRNN_DATASETS_ROOT")
    ray_address: str | None = Field(None, validation_alias="PREDRNN_RAY_ADDRESS")
    model_name: str = Field("predrnn-v2", validation_alias="PREDRNN_MODEL_NAME")
    margin: float = Field(0.01, ge=0, lt=1, validation_alias="PREDRNN_PROMOTION_MARGIN")
