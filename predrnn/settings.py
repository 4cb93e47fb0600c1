"""What a door (a CLI command, a flow, the main job) reads from the environment, once; and the tools'
environment a door sets up before they import (:func:`tool_env`).

The library below the doors takes every value as an argument; only doors build :class:`Settings`
(from the environment or a ``.env`` file, pydantic-settings) and pass what they read down.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from predrnn.security import Account

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


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
    def s3() -> S3Settings:
        """The door's S3 settings for ``s3://`` locations: :func:`s3_settings` of this process's environment."""
        return s3_settings()


def s3_settings(env: Mapping[str, str] | None = None) -> S3Settings:
    """Where S3 is, from ``env`` (default: this process's environment): ``{"endpoint", "region",
    "credentials"[, "profile"]}``.

    Never the credentials themselves: ``credentials`` says where each S3 client finds them when it is
    built, in its own process (``environment``: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``;
    ``profile``: the AWS profile ``profile`` from ``AWS_PROFILE``; ``default chain``: the AWS SDK's
    chain of shared files, SSO and instance roles). So the settings can travel in a spec, a task
    parameter or a run record, and a worker resolves the secret itself from its environment.
    ``endpoint`` from ``PREDRNN_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``),
    ``region`` from ``AWS_REGION``/``AWS_DEFAULT_REGION`` (default ``us-east-1``).
    """
    env = os.environ if env is None else env
    cfg: S3Settings = {}
    endpoint = env.get("PREDRNN_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        cfg["endpoint"] = endpoint
    cfg["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        cfg["credentials"] = "environment"
    elif env.get("AWS_PROFILE"):
        cfg["credentials"], cfg["profile"] = "profile", env["AWS_PROFILE"]
    else:
        cfg["credentials"] = "default chain"
    return cfg


def ray_token_auth_on() -> bool:
    """Whether this process runs Ray under token authentication: ``RAY_AUTH_MODE=token`` and a token
    (``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``), as :func:`tool_env` sets them up."""
    return os.environ.get("RAY_AUTH_MODE", "").lower() == "token" and bool(
        os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"))


def ray_process_env(values: Mapping[str, str], *, keep_given: bool = True) -> dict[str, str]:
    """Put Ray's own settings into this process's environment, where Ray reads them (it has no other way
    for these: the controller's poll interval, the single-machine cluster switch, the cluster address);
    returns the values in force.

    Args:
        values: variable -> value.
        keep_given: a value already in the environment (the user's) wins; False overrides it.
    """
    for k, v in values.items():
        if keep_given:
            os.environ.setdefault(k, v)
        else:
            os.environ[k] = v
    return {k: os.environ[k] for k in values}


def tool_env(state: Path | None = None) -> Path:
    """Keep every tool's state under the state folder (``PREDRNN_STATE_DIR``, default ``./.state``),
    switch telemetry off and put Ray under token authentication (:func:`predrnn.security.ray_auth_env`),
    before the tools import; returns the state folder.

    Raises:
        SecurityError: ``RAY_AUTH_MODE`` asks for no authentication, or ``RAY_AUTH_TOKEN_PATH`` is unusable.
    """
    from predrnn.security import ray_auth_env

    root = (state or Settings().state).absolute()
    os.environ.setdefault("PREDRNN_STATE_DIR", str(root))
    os.environ.update(ray_auth_env(root, os.environ))
    defaults = {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }
    if not sys.stderr.isatty():  # progress bars on a terminal; in a log or a pipe, only the plain lines
        defaults.update({"TQDM_DISABLE": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect creates only the leaf
    return root
