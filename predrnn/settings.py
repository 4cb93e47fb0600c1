"""What a door (a CLI command, a flow, the main job) reads from the environment, once.

The library below the doors takes every value as an argument; only doors build :class:`Settings`
(from the environment or a ``.env`` file, pydantic-settings) and pass what they read down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from predrnn.security import Account


class Settings(BaseSettings):
    """Where this machine keeps state and finds its services.

    Attributes:
        state_dir: local state (``PREDRNN_STATE_DIR``, default ``./.state``): the embedded MLflow
            store, Ray's run folders, run outputs.
        tracking_uri: the MLflow store (``MLFLOW_TRACKING_URI`` or ``PREDRNN_TRACKING_URI``); unset:
            the embedded SQLite store under ``state_dir``.
        ray_address: an existing Ray cluster (``PREDRNN_RAY_ADDRESS``, ``HOST:PORT``); unset: each run
            starts a local one.
        promoter_username, promoter_password: the MLflow account that moves ``@champion``
            (``PREDRNN_PROMOTER_USERNAME``/``PREDRNN_PROMOTER_PASSWORD``; the stack's ``promoter``); unset:
            the alias is moved with the tracking store's own credentials.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    state_dir: Path = Field(default=Path(".state"), validation_alias="PREDRNN_STATE_DIR")
    tracking_uri: str | None = Field(default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI",
                                                                        "PREDRNN_TRACKING_URI"))
    ray_address: str | None = Field(default=None, validation_alias="PREDRNN_RAY_ADDRESS")
    promoter_username: str | None = Field(default=None, validation_alias="PREDRNN_PROMOTER_USERNAME")
    promoter_password: SecretStr | None = Field(default=None, validation_alias="PREDRNN_PROMOTER_PASSWORD")

    def promoter(self) -> Account | None:
        """The promoter's MLflow account, when both its settings are given."""
        if self.promoter_username and self.promoter_password is not None:
            return Account(self.promoter_username, self.promoter_password.get_secret_value())
        return None

    @property
    def state(self) -> Path:
        """``state_dir`` as an absolute path."""
        return self.state_dir.absolute()

    @property
    def model_cache(self) -> Path:
        """Where registry model versions are kept once downloaded (``<state>/models``)."""
        return self.state / "models"

    def tracking(self, given: str | None = None) -> str:
        """The MLflow store: ``given`` (an option), else the setting, else the embedded SQLite store."""
        from predrnn.tracking import default_tracking_uri

        return given or self.tracking_uri or default_tracking_uri(self.state / "mlflow")

    @staticmethod
    def s3() -> dict[str, Any]:
        """The S3 settings (``PREDRNN_S3_ENDPOINT_URL``, ``AWS_*``) for ``s3://`` locations of a run."""
        from predrnn.data.store import s3_settings

        return s3_settings()
