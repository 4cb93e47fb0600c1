"""The local stack: real services on 127.0.0.1, started and stopped by one call each.

Services (each in its own process group, each waited on until healthy, one log file each):

- ``s3``: SeaweedFS ``weed mini`` (S3 API, credentials enforced, data on disk), buckets created;
- ``mlflow``: ``mlflow server`` with a SQLite backend store and artifacts proxied to ``s3://``;
  lean settings (no job runner, one worker);
- ``prefect``: ``prefect server start`` (SQLite), a ``process`` work pool and a worker polling it;
- ``ray``: a Ray head node (``ray start --head``) the flows train on.

All state lives under one folder (``.state/stack`` by default): data, logs, ``PREFECT_HOME`` and
``stack.json`` with the process groups and URLs. Settings come from ``PREDRNN_STACK_*`` variables
or a ``.env`` file.

Every service authenticates its callers (:class:`StackSecrets`: generated once per state folder
into ``secrets/``, mode 0600, never printed): SeaweedFS its S3 keys, MLflow basic auth with a
``pipeline`` account and a ``promoter`` account (only promoters move ``@champion``,
:mod:`predrnn.tracking.auth_app`), Prefect its API auth string, Ray its token. With the default host
every port is on 127.0.0.1. Stopping kills each service's process group (never ``ray stop``, which would
kill every Ray process of the user).

    predrnn stack up        # prints the URLs and the environment for clients
    predrnn stack status
    predrnn stack down
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from predrnn.errors import PredrnnError

SERVICES = ("s3", "mlflow", "prefect", "ray", "worker")
STATE_FILE = "stack.json"
SECRET_SETTINGS = frozenset({"s3_secret_key", "failure_webhook"})
# MLflow accounts of the stack: the admin (user management), the pipeline (runs, model versions) and the
# promoter (the only non-admin that moves @champion: the `promoter` role of predrnn.tracking.auth_app)
ADMIN_USER, PIPELINE_USER, PROMOTER_USER = "admin", "pipeline", "promoter"
PREFECT_USER = "predrnn"


PREFECT_BUSY_WAIT_S = 30.0  # how long a call to the stack's Prefect API retries while it answers 503


class StackError(PredrnnError, RuntimeError):
    """A service did not start, or the stack is in an unexpected state."""


class StackSettings(BaseSettings):
    """Where the stack lives and which ports it binds (``PREDRNN_STACK_<FIELD>`` or ``.env``)."""

    model_config = SettingsConfigDict(env_prefix="PREDRNN_STACK_", env_file=".env", extra="ignore")

    state_dir: Path = Path(".state/stack")
    host: str = "127.0.0.1"
    services: list[str] = Field(default_factory=lambda: list(SERVICES))
    # added to every port not set on its own (PREDRNN_STACK_PORT_BASE=1000: Prefect 5210, MLflow 6050, ...,
    # Ray's workers 21400-21999): a second stack, or one beside services on the defaults, in one setting
    port_base: int = Field(default=0, ge=0)
    prefect_port: int = 4210
    mlflow_port: int = 5050
    s3_port: int = 8433
    s3_grpc_port: int = 18433
    weed_master_port: int = 9433
    weed_master_grpc_port: int = 19433
    weed_volume_port: int = 9440
    weed_volume_grpc_port: int = 19440
    weed_filer_port: int = 8988
    weed_filer_grpc_port: int = 18988
    weed_admin_port: int = 23746
    weed_admin_grpc_port: int = 33746
    weed_metrics_port: int = 9101
    ray_port: int = 6390
    ray_dashboard_port: int = 8266
    ray_client_port: int = 6391
    ray_agent_port: int = 52390
    ray_worker_port_min: int = 20400
    ray_worker_port_max: int = 20999
    ray_autoscaler_metrics_port: int = 44217
    ray_dashboard_metrics_port: int = 44227
    ray_cpus: int = 2
    ray_dashboard: bool = False
    ray_object_store_bytes: int = 300_000_000
    work_pool: str = "local-process"
    timezone: str = "UTC"
    worker_poll_seconds: int = 3
    heartbeat_seconds: int = Field(default=30, ge=30)  # Prefect's minimum
    zombie_after_s: int = Field(default=90, ge=60)
    s3_access_key: str = "predrnn"
    s3_secret_key: SecretStr | None = None  # None: generated once into the state folder's secrets
    s3_region: str = "us-east-1"
    buckets: list[str] = Field(default_factory=lambda: ["mlflow", "datasets", "ray", "radar", "nowcasts"])
    startup_timeout_s: float = 180.0
    # where a failed or crashed run of these deployments is reported (a Prefect automation posting JSON
    # {"text", "subject", "body"}: Slack, Teams, Mattermost or any HTTP receiver); kept as a secret of a
    # Prefect block, never in a state file or a log. None: no notification
    failure_webhook: SecretStr | None = None
    notify_deployments: list[str] = Field(default_factory=lambda: ["nightly-retrain", "nightly-retrain-small"])
    # Ray's token: the user's own (RAY_AUTH_TOKEN_PATH, as every predrnn command takes it), else generated
    ray_auth_token_path: Path | None = Field(default=None, validation_alias="RAY_AUTH_TOKEN_PATH")

    def moved_by_the_base(self, name: str) -> bool:
        """Whether setting ``name`` is a port that ``port_base`` moved (a port not set on its own)."""
        return (bool(self.port_base) and name not in self.model_fields_set
                and (name.endswith("_port") or name.startswith("ray_worker_port_")))

    @model_validator(mode="after")
    def _ports_moved_by_the_base(self) -> StackSettings:
        for name in type(self).model_fields:
            if not self.moved_by_the_base(name):
                continue
            moved = getattr(self, name) + self.port_base
            if moved > 65535:
                raise ValueError(f"PREDRNN_STACK_PORT_BASE={self.port_base} moves {name} to {moved}, beyond 65535; "
                                 f"use a smaller base or set PREDRNN_STACK_{name.upper()}")
            object.__setattr__(self, name, moved)
        return self

    @model_validator(mode="after")
    def _zombie_after_heartbeats(self) -> StackSettings:
        if self.zombie_after_s < 2 * self.heartbeat_seconds:
            raise ValueError(f"zombie_after_s ({self.zombie_after_s}) must be at least twice heartbeat_seconds "
                             f"({self.heartbeat_seconds}), or a live run would be crashed between two heartbeats")
        return self

    def described(self, env: dict[str, str] | None = None,
                  dotenv: Path | None = Path(".env")) -> list[tuple[str, str, str]]:
        """``[(PREDRNN_STACK_<NAME>, value, source)]`` for every setting; source is ``environment``, ``.env``,
        ``default`` or, for a port the base moved, ``default + PORT_BASE <base>``; the S3 secret is masked."""
        env = dict(os.environ) if env is None else env
        in_file: set[str] = set()
        if dotenv is not None and dotenv.is_file():
            in_file = {line.split("=", 1)[0].strip().upper() for line in dotenv.read_text().splitlines()
                       if "=" in line and not line.lstrip().startswith("#")}
        out = []
        for name, info in type(self).model_fields.items():
            alias = info.validation_alias
            var = alias if isinstance(alias, str) else f"PREDRNN_STACK_{name.upper()}"
            value = getattr(self, name)
            if name == "ray_auth_token_path":
                shown = str(self.ray_token_path)
            elif name in SECRET_SETTINGS:
                shown = ("********" if value is not None else "(none)" if name == "failure_webhook"
                         else f"(generated in {self.secrets_dir})")
            else:
                shown = ",".join(value) if isinstance(value, list) else str(value)
            source = ("environment" if var in env else ".env" if var in in_file
                      else f"default + PORT_BASE {self.port_base}" if self.moved_by_the_base(name) else "default")
            out.append((var, shown, source))
        return out

    def ports(self) -> dict[str, tuple[str, int]]:
        """``{setting: (service, port)}`` for every port the enabled services bind."""
        owner = {"prefect": "prefect", "mlflow": "mlflow", "s3": "s3", "weed": "s3", "ray": "ray"}
        out = {}
        for name in type(self).model_fields:
            if name == "ray_dashboard_port" and not self.ray_dashboard:
                continue
            if name.endswith("_port"):
                service = owner[name.split("_", 1)[0]]
                if service in self.services:
                    out[name] = (service, int(getattr(self, name)))
        return out

    def preflight(self) -> None:
        """Check, before anything starts, that every port is distinct and free on ``host`` and that the state
        folder is writable.

        Raises:
            StackError: naming the port, the service, and the setting that moves it
                (``PREDRNN_STACK_<SETTING>``), or the folder.
        """
        seen: dict[int, str] = {}
        low, high = self.ray_worker_port_min, self.ray_worker_port_max
        for name, (_, port) in self.ports().items():
            if "ray" in self.services and low <= port <= high:
                raise StackError(f"port {port} ({name}) lies in Ray's worker port range {low}-{high}; move it "
                                 f"with PREDRNN_STACK_{name.upper()}=PORT or the range with "
                                 "PREDRNN_STACK_RAY_WORKER_PORT_MIN / PREDRNN_STACK_RAY_WORKER_PORT_MAX")
            if port in seen:
                raise StackError(f"port {port} is set for both {seen[port]} and {name}; move one with "
                                 f"PREDRNN_STACK_{name.upper()}=PORT")
            seen[port] = name
        for name, (service, port) in self.ports().items():
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.host, port))
                except OSError:
                    raise StackError(f"port {port} on {self.host} ({service}, setting {name}) is in use by another "
                                     f"program: stop it, or move the stack's port with "
                                     f"PREDRNN_STACK_{name.upper()}=PORT (or every port with "
                                     f"PREDRNN_STACK_PORT_BASE=OFFSET)") from None
        root = self.state_dir.absolute()
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise StackError(f"the stack's state folder {root} is not writable ({err.strerror}); set "
                             "PREDRNN_STACK_STATE_DIR") from None

    def with_free_ports(self) -> StackSettings:
        """A copy with every port replaced by a free one (tests, or a second stack on one machine)."""
        names = [n for n in type(self).model_fields if n.endswith("_port")]
        return self.model_copy(update=dict(zip(names, free_ports(len(names)), strict=True)))

    @property
    def root(self) -> Path:
        return self.state_dir.absolute()

    @property
    def secrets_dir(self) -> Path:
        """The stack's credentials (mode 0700; each file 0600): see :class:`StackSecrets`."""
        return self.root / "secrets"

    @property
    def ray_token_path(self) -> Path:
        """Ray's token file: ``RAY_AUTH_TOKEN_PATH`` when the user gives one, else ``secrets/ray_auth_token``."""
        given = self.ray_auth_token_path
        return given.expanduser().absolute() if given else self.secrets_dir / "ray_auth_token"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def ray_address(self) -> str:
        return f"{self.host}:{self.ray_port}"

    @property
    def ray_temp_dir(self) -> Path:
        # Ray's unix socket paths must stay short, so its session folder cannot live under a deep state dir.
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"pr-{digest}"

    def urls(self) -> dict[str, str]:
        """Every URL a person or a client needs."""
        urls = {"prefect_ui": f"http://{self.host}:{self.prefect_port}", "prefect_api": self.prefect_api_url,
                "mlflow": self.mlflow_url, "s3": self.s3_endpoint, "ray": self.ray_address}
        if self.ray_dashboard:
            urls["ray_dashboard"] = f"http://{self.host}:{self.ray_dashboard_port}"
        return urls

    def tool_env(self) -> dict[str, str]:
        """Telemetry off, tool state inside the stack folder, Ray under token authentication and, on a
        loopback host, on loopback only (every service and client)."""
        # Ray turns 127.0.0.1 into the machine's external address unless it runs as a one-machine cluster
        local_ray = "0" if self.host in ("127.0.0.1", "localhost", "::1") else "1"
        return {"PREFECT_HOME": str(self.root / "prefect" / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_API_URL": self.prefect_api_url, "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.ray_token_path), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": local_ray}

    def client_env(self) -> dict[str, str]:
        """The environment a client (CLI, flow run, test) uses to talk to this stack, without its secrets
        (:meth:`Stack.client_env` adds them)."""
        env = {**self.tool_env(), "PREFECT_API_URL": self.prefect_api_url, "MLFLOW_TRACKING_URI": self.mlflow_url,
               "PREDRNN_STATE_DIR": str(self.root / "work"), "PREDRNN_DATASETS_ROOT": "s3://datasets"}
        if "mlflow" in self.services:
            env.update(MLFLOW_TRACKING_USERNAME=PIPELINE_USER, PREDRNN_PROMOTER_USERNAME=PROMOTER_USER)
        if "s3" in self.services:
            env.update(AWS_ACCESS_KEY_ID=self.s3_access_key, AWS_REGION=self.s3_region,
                       PREDRNN_S3_ENDPOINT_URL=self.s3_endpoint,
                       MLFLOW_S3_ENDPOINT_URL=self.s3_endpoint)
        if "ray" in self.services:
            env["PREDRNN_RAY_ADDRESS"] = self.ray_address
        return env


def check_dotenv(path: Path) -> None:
    """Refuse a ``.env`` that sets a secret (``*SECRET*``, ``*PASSWORD*``, ``*TOKEN*``) and that others can read.

    Raises:
        StackError: naming the file and the ``chmod`` that fixes it.
    """
    from predrnn.security import SecurityError, check_private

    if not path.is_file():
        return
    keys = [line.split("=", 1)[0].strip().upper() for line in path.read_text(errors="replace").splitlines()
            if "=" in line and not line.lstrip().startswith("#")]
    if any(word in key for key in keys for word in ("SECRET", "PASSWORD", "TOKEN", "AUTH_STRING")):
        try:
            check_private(path.absolute())
        except SecurityError as err:
            raise StackError(str(err)) from None


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free on 127.0.0.1 right now."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(int(s.getsockname()[1]))
    finally:
        for s in socks:
            s.close()
    return ports


def _bin(name: str) -> str:
    """A console script of this environment (next to the interpreter), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name!r} is not installed in this environment")
    return found


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own loopback URLs
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _wait(name: str, check: Callable[[], bool], proc: subprocess.Popen[bytes] | None, log: Path,
          timeout: float) -> float:
    """Poll ``check`` until it passes; fail with the log tail when the process exits or time runs out."""
    t0 = time.monotonic()
    while True:
        if check():
            return time.monotonic() - t0
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{name} exited with {proc.returncode}; last log lines:\n{_tail(log)}")
        if time.monotonic() - t0 > timeout:
            raise StackError(f"{name} not healthy after {timeout:.0f} s; last log lines:\n{_tail(log)}")
        time.sleep(0.5)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


class StackSecrets:
    """The stack's credentials: generated once per state folder, kept in ``<state>/secrets`` (0700).

    - ``stack.env`` (0600): the MLflow admin, pipeline and promoter passwords, MLflow's Flask secret
      key, the Prefect API password and, unless ``PREDRNN_STACK_S3_SECRET_KEY`` is set, the S3 secret
      key. Keys missing from an older file are added; to rotate one, delete its line (or the file) and
      restart the stack (``predrnn stack down && predrnn stack up``): passwords are set again at start.
    - ``ray_auth_token`` (0600): Ray's cluster token.
    - ``client.env`` (0600): the secret half of the client environment, ``export`` lines that
      ``predrnn stack env`` sources instead of printing them.
    - ``mlflow_auth.ini`` (0600): MLflow's basic-auth configuration (its user database, the admin's name).

    Each value is 256 bits from :func:`secrets.token_hex`; none is ever printed or logged.
    """

    KEYS = ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_PROMOTER_PASSWORD", "MLFLOW_FLASK_SECRET_KEY",
            "PREFECT_API_PASSWORD", "S3_SECRET_KEY")

    def __init__(self, settings: StackSettings) -> None:
        self.s = settings
        self.folder = settings.secrets_dir
        self._values: dict[str, str] | None = None

    @property
    def path(self) -> Path:
        return self.folder / "stack.env"

    def values(self) -> dict[str, str]:
        """Every secret of :attr:`KEYS`, generating (and saving) the missing ones.

        Raises:
            StackError: the file is readable by others.
        """
        if self._values is None:
            from predrnn.security import SecurityError, check_private, new_secret, write_private

            have: dict[str, str] = {}
            if self.path.exists():
                try:
                    check_private(self.path)
                except SecurityError as err:
                    raise StackError(str(err)) from None
                for line in self.path.read_text().splitlines():
                    key, sep, value = line.partition("=")
                    if sep and not key.startswith("#"):
                        have[key.strip()] = value.strip()
            missing = [k for k in self.KEYS if not have.get(k)]
            if missing:
                have.update({k: new_secret() for k in missing})
                body = "".join(f"{k}={have[k]}\n" for k in self.KEYS)
                write_private(self.path, "# predrnn stack credentials: generated, never printed; mode 0600\n" + body)
            self._values = have
        return self._values

    def s3_secret(self) -> str:
        given = self.s.s3_secret_key
        return given.get_secret_value() if given is not None else self.values()["S3_SECRET_KEY"]

    def ray_token(self) -> Path:
        """The Ray token file (generated on first use unless the user gave it).

        Raises:
            StackError: the user's token file is missing or others can read it.
        """
        from predrnn.security import SecurityError, ensure_secret_file

        path = self.s.ray_token_path
        if self.s.ray_auth_token_path is not None and not path.is_file():
            raise StackError(f"RAY_AUTH_TOKEN_PATH={path} is not a file holding a token")
        try:
            return ensure_secret_file(path)
        except SecurityError as err:
            raise StackError(str(err)) from None

    def prefect_auth_string(self) -> str:
        """``user:password`` of Prefect's API auth (``PREFECT_SERVER_API_AUTH_STRING``/``PREFECT_API_AUTH_STRING``)."""
        return f"{PREFECT_USER}:{self.values()['PREFECT_API_PASSWORD']}"

    def client(self) -> dict[str, str]:
        """The secret half of a client's environment (S3 secret, MLflow and Prefect passwords)."""
        v, s = self.values(), self.s
        out: dict[str, str] = {}
        if "s3" in s.services:
            out["AWS_SECRET_ACCESS_KEY"] = self.s3_secret()
        if "mlflow" in s.services:
            out.update(MLFLOW_TRACKING_PASSWORD=v["MLFLOW_PIPELINE_PASSWORD"],
                       PREDRNN_PROMOTER_PASSWORD=v["MLFLOW_PROMOTER_PASSWORD"])
        if "prefect" in s.services:
            out["PREFECT_API_AUTH_STRING"] = self.prefect_auth_string()
        return out

    def write_client_file(self) -> Path:
        """``client.env``: ``export`` lines of :meth:`client`, for ``predrnn stack env`` to source."""
        import shlex

        from predrnn.security import write_private

        body = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.client().items())
        return write_private(self.folder / "client.env", body)

    def mlflow_config(self) -> Path:
        """MLflow's basic-auth ini: its user database beside the tracking store, the admin's name, READ for
        every account by default (the roles add EDIT)."""
        from predrnn.security import write_private

        db = self.s.root / "mlflow" / "auth.db"
        return write_private(self.folder / "mlflow_auth.ini", (
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{db}\n"
            f"admin_username = {ADMIN_USER}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "grant_default_workspace_access = false\n"))


class Stack:
    """Start, stop and inspect the local stack described by ``settings``."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.s = settings or StackSettings()
        self.root = self.s.root
        self.logs = self.root / "logs"
        self.secrets = StackSecrets(self.s)

    def client_env(self) -> dict[str, str]:
        """The whole environment a client (CLI, flow run, test) uses to talk to this stack, secrets included:
        for a child process's environment, never for printing."""
        return {**self.s.client_env(), **self.secrets.client()}

    # -- state ---------------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    def read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, **self.s.tool_env(), **(extra or {})}
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps its own descriptor
        try:
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=str(self.root))
        finally:
            log.close()

    # -- services ------------------------------------------------------------------------------------

    def _s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.s.s3_access_key, "AWS_SECRET_ACCESS_KEY": self.secrets.s3_secret(),
                "AWS_REGION": self.s.s3_region}

    def _start_s3(self) -> subprocess.Popen[bytes]:
        data = self.root / "s3"
        data.mkdir(parents=True, exist_ok=True)
        return self._spawn("s3", self.s3_command(data), self._env(self._s3_env()))

    def s3_command(self, data: Path) -> list[str]:
        """The ``weed mini`` command line of the S3 service, storing under ``data``."""
        s = self.s
        ports = {"master.port": s.weed_master_port, "master.port.grpc": s.weed_master_grpc_port,
                 "volume.port": s.weed_volume_port, "volume.port.grpc": s.weed_volume_grpc_port,
                 "filer.port": s.weed_filer_port, "filer.port.grpc": s.weed_filer_grpc_port, "s3.port": s.s3_port,
                 "s3.port.grpc": s.s3_grpc_port, "admin.port": s.weed_admin_port,
                 "admin.port.grpc": s.weed_admin_grpc_port, "metricsPort": s.weed_metrics_port}
        # SeaweedFS also opens an Iceberg catalog (8181) and a Lance namespace server (9101) by default:
        # off, so that the stack binds only the ports its settings name (and preflight checks)
        cmd = [_bin("weed"), "mini", f"-dir={data}", f"-ip={s.host}", f"-ip.bind={s.host}", "-s3.port.iceberg=0",
               "-s3.port.lance=0",
               "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
               *[f"-{k}={v}" for k, v in ports.items()]]
        return cmd

    def s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.s.s3_endpoint, region_name=self.s.s3_region,
                            aws_access_key_id=self.s.s3_access_key,
                            aws_secret_access_key=self.secrets.s3_secret(),
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))

    def _buckets_ready(self) -> bool:
        try:
            client = self.s3_client()
            have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            for bucket in self.s.buckets:
                if bucket not in have:
                    client.create_bucket(Bucket=bucket)
            return True
        except Exception:
            return False

    def _start_mlflow(self) -> subprocess.Popen[bytes]:
        s = self.s
        folder = self.root / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        if "s3" in s.services:
            artifacts = "s3://mlflow/artifacts"
            extra = {**self._s3_env(), "MLFLOW_S3_ENDPOINT_URL": s.s3_endpoint}
        else:
            artifacts, extra = str(folder / "artifacts"), {}
        v = self.secrets.values()
        # basic auth (predrnn.tracking.auth_app): the admin's password applies on the first start only (later
        # starts keep the user database's); the Flask key signs the UI's forms
        auth = {"MLFLOW_AUTH_CONFIG_PATH": str(self.secrets.mlflow_config()),
                "MLFLOW_AUTH_ADMIN_PASSWORD": v["MLFLOW_ADMIN_PASSWORD"],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": v["MLFLOW_FLASK_SECRET_KEY"]}
        env = self._env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **extra, **auth})
        cmd = [_bin("mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", artifacts, "--host", s.host, "--port", str(s.mlflow_port), "--workers", "1",
               "--app-name", "predrnn-auth"]
        return self._spawn("mlflow", cmd, env)

    def ensure_mlflow_accounts(self) -> None:
        """The ``pipeline`` and ``promoter`` accounts and roles (:func:`infra.mlflow_accounts.ensure_accounts`),
        with the passwords of :class:`StackSecrets`, set again on every start so a rotated one takes effect.

        Raises:
            StackError: MLflow refused a call (the message names it).
        """
        from infra.mlflow_accounts import AccountsError, ensure_accounts

        v = self.secrets.values()
        try:
            ensure_accounts(self.s.mlflow_url, admin=(ADMIN_USER, v["MLFLOW_ADMIN_PASSWORD"]),
                            pipeline=(PIPELINE_USER, v["MLFLOW_PIPELINE_PASSWORD"]),
                            promoter=(PROMOTER_USER, v["MLFLOW_PROMOTER_PASSWORD"]))
        except AccountsError as err:
            raise StackError(str(err)) from None

    def _start_prefect(self) -> subprocess.Popen[bytes]:
        s = self.s
        # Deployment concurrency slots are held through leases; on disk (under PREFECT_HOME) they survive a
        # server restart and expire when nobody renews them, instead of holding the slot for ever.
        env = self._env({"PREFECT_API_URL": s.prefect_api_url,
                         "PREFECT_SERVER_API_AUTH_STRING": self.secrets.prefect_auth_string(),
                         "PREFECT_API_AUTH_STRING": self.secrets.prefect_auth_string(),
                         "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE":
                             "prefect.server.concurrency.lease_storage.filesystem"})
        return self._spawn("prefect", [_bin("prefect"), "server", "start", "--host", s.host, "--port",
                                       str(s.prefect_port)], env)

    def _ray_env(self) -> dict[str, str]:
        # Train workers run in the head's processes: they need the S3 and MLflow settings of a client, not the
        # promoter's account nor the Prefect API's (only the flow processes promote and report)
        client = {k: v for k, v in self.client_env().items()
                  if k not in ("PREDRNN_RAY_ADDRESS", "PREDRNN_PROMOTER_PASSWORD", "PREFECT_API_AUTH_STRING")}
        return self._env({**client, "AUTOSCALER_METRIC_PORT": str(self.s.ray_autoscaler_metrics_port),
                          "DASHBOARD_METRIC_PORT": str(self.s.ray_dashboard_metrics_port)})

    def _start_ray(self) -> subprocess.Popen[bytes]:
        self.s.ray_temp_dir.mkdir(parents=True, exist_ok=True)
        self.secrets.ray_token()  # RAY_AUTH_TOKEN_PATH of tool_env: the token exists before Ray reads it
        return self._spawn("ray", self.ray_command(), self._ray_env())

    def ray_command(self) -> list[str]:
        """The ``ray start --head`` command line of the Ray service."""
        s = self.s
        temp = s.ray_temp_dir
        # The dashboard (a web UI of ten processes, about 1 GB resident) only when asked for; the client
        # server, the dashboard agent and the workers get the stack's ports instead of Ray's defaults
        # (10001, 52365, and 10002-19999, where SeaweedFS's gRPC ports are).
        dashboard = (["--include-dashboard=true", f"--dashboard-host={s.host}",
                      f"--dashboard-port={s.ray_dashboard_port}"] if s.ray_dashboard else ["--include-dashboard=false"])
        cmd = [_bin("ray"), "start", "--head", f"--node-ip-address={s.host}", f"--port={s.ray_port}",
               f"--num-cpus={s.ray_cpus}", f"--object-store-memory={s.ray_object_store_bytes}",
               f"--temp-dir={temp}", *dashboard, f"--ray-client-server-port={s.ray_client_port}",
               f"--dashboard-agent-listen-port={s.ray_agent_port}", f"--min-worker-port={s.ray_worker_port_min}",
               f"--max-worker-port={s.ray_worker_port_max}", "--disable-usage-stats"]
        return cmd

    def _ray_ready(self, starter: subprocess.Popen[bytes]) -> bool:
        # ``ray start`` returns once the head is up; its daemons stay in the starter's process group.
        if starter.poll() is None:
            return False
        if starter.returncode != 0:
            raise StackError(f"ray start exited with {starter.returncode}:\n{_tail(self.logs / 'ray.log')}")
        return self._ray_healthy()

    def _ray_healthy(self) -> bool:
        s = self.s
        if s.ray_dashboard:
            return _http_ok(f"http://{s.host}:{s.ray_dashboard_port}/api/version")
        with socket.socket() as sock:  # the head's GCS
            sock.settimeout(2)
            return sock.connect_ex((s.host, s.ray_port)) == 0

    def _prefect_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = self._env({"PREFECT_API_URL": self.s.prefect_api_url,
                         "PREFECT_API_AUTH_STRING": self.secrets.prefect_auth_string()})
        return subprocess.run([_bin("prefect"), "--no-prompt", *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=str(self.root), check=False)

    def _start_worker(self) -> subprocess.Popen[bytes]:
        s = self.s
        out = self._prefect_cli("work-pool", "create", s.work_pool, "--type", "process", "--overwrite")
        if out.returncode != 0:
            raise StackError(f"cannot create work pool {s.work_pool}: {out.stdout[-1500:]}{out.stderr[-1500:]}")
        env = self._env({**self.client_env(), "PREFECT_WORKER_QUERY_SECONDS": str(s.worker_poll_seconds),
                         "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                         "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(s.heartbeat_seconds),
                         # flow runs log at INFO to the API (their progress lines), whatever the caller's shell has
                         "PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_LOGGING_TO_API_ENABLED": "true",
                         "TQDM_DISABLE": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no terminal
                         # the flows are run from this checkout (the package installs only the library)
                         "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                                   os.environ.get("PYTHONPATH")) if p)})
        Path(env["PREDRNN_STATE_DIR"]).mkdir(parents=True, exist_ok=True)
        cmd = [_bin("prefect"), "worker", "start", "--pool", s.work_pool, "--type", "process",
               "--name", f"predrnn-{s.prefect_port}", "--install-policy", "never"]
        return self._spawn("worker", cmd, env)

    def _worker_online(self) -> bool:
        try:
            workers = self._prefect_api(f"/work_pools/{self.s.work_pool}/workers/filter", {}, timeout=3)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(w.get("status") == "ONLINE" for w in workers)

    def _prefect_api(self, path: str, body: Any = None, *, method: str = "POST", timeout: float = 15) -> Any:
        """One call to the stack's Prefect REST API (JSON in and out), with its API auth; a 503 (the server
        busy, or still starting its services) is retried for up to :data:`PREFECT_BUSY_WAIT_S`."""
        import base64

        creds = base64.b64encode(self.secrets.prefect_auth_string().encode()).decode()
        req = urllib.request.Request(self.s.prefect_api_url + path,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Basic {creds}"},
                                     method=method)
        deadline = time.monotonic() + PREFECT_BUSY_WAIT_S
        while True:
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as err:  # 503: the server is up but busy or still starting its services
                if err.code != 503 or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    # -- runs cut off by a stop or a crash -----------------------------------------------------------

    def _flow_run_processes(self, worker_pid: int) -> list[psutil.Process]:
        """The flow-run processes the worker started (each in a session of its own, so outside its group)."""
        try:
            return [p for p in psutil.Process(worker_pid).children(recursive=True) if os.getpgid(p.pid) == p.pid]
        except (psutil.Error, OSError):
            return []

    def reconcile_runs(self, reason: str) -> list[str]:
        """Move every flow run of the stack's work pool that is still Pending, Running or Cancelling but whose
        process is gone to ``Crashed``, freeing its deployment concurrency slot.

        Runs record their process id (``infrastructure_pid``) when the worker starts them; a run whose
        process is not alive on this machine can never report again. Runs still alive are left alone.

        Args:
            reason: the state message (why the process is gone).

        Returns:
            The ids of the runs moved to ``Crashed``.
        """
        body = {"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING", "CANCELLING"]}}},
                "work_pools": {"name": {"any_": [self.s.work_pool]}}}
        crashed = []
        for run in self._prefect_api("/flow_runs/filter", body):
            pid = str(run.get("infrastructure_pid") or "").rsplit(":", 1)[-1]
            if pid.isdigit() and _engine_alive(int(pid)):
                continue
            state = {"type": "CRASHED", "name": "Crashed", "message": reason}
            self._prefect_api(f"/flow_runs/{run['id']}/set_state", {"state": state, "force": True})
            crashed.append(str(run["id"]))
        return crashed

    def _install_zombie_automation(self) -> None:
        """Prefect's own detector for runs whose process died with its worker (a lost machine): the engine
        sends a heartbeat event every ``heartbeat_seconds``; a run that sends none for ``zombie_after_s``
        and has not finished is set to ``Crashed`` by a proactive automation. Replaces an older copy."""
        name = "predrnn: crash flow runs without heartbeats"
        for old in self._prefect_api("/automations/filter", {"automations": {"name": {"any_": [name]}}}):
            self._prefect_api(f"/automations/{old['id']}", method="DELETE")
        finals = ["Completed", "Failed", "Cancelled", "Crashed"]
        self._prefect_api("/automations/", {
            "name": name, "enabled": True,
            "description": f"no heartbeat for {self.s.zombie_after_s} s: the run's process is gone",
            "trigger": {"type": "event", "posture": "Proactive", "after": ["prefect.flow-run.heartbeat"],
                        "expect": ["prefect.flow-run.heartbeat", *[f"prefect.flow-run.{f}" for f in finals]],
                        "match": {"prefect.resource.id": "prefect.flow-run.*"},
                        "for_each": ["prefect.resource.id"], "threshold": 1, "within": self.s.zombie_after_s},
            "actions": [{"type": "change-flow-run-state", "state": "CRASHED",
                         "message": f"no heartbeat for {self.s.zombie_after_s} s: its process or machine is gone"}]})

    def _install_failure_notification(self) -> str | None:
        """With ``failure_webhook`` set: a Prefect automation that posts to it when a flow run of one of
        ``notify_deployments`` ends Failed or Crashed, with the deployment, the run's name, its state message
        and its page in the UI. The URL is a secret value of a ``custom-webhook`` block (shown masked in the
        UI), so neither the automation nor a log holds it. Replaces older copies; returns the automation's
        id (None: no webhook set, older copies removed)."""
        name = "predrnn: notify a failed run"
        block = "predrnn-failure-webhook"
        for old in self._prefect_api("/automations/filter", {"automations": {"name": {"any_": [name]}}}):
            self._prefect_api(f"/automations/{old['id']}", method="DELETE")
        with contextlib.suppress(urllib.error.HTTPError):  # none yet
            doc = self._prefect_api(f"/block_types/slug/custom-webhook/block_documents/name/{block}", method="GET")
            self._prefect_api(f"/block_documents/{doc['id']}", method="DELETE")
        if self.s.failure_webhook is None:
            return None
        kind = self._prefect_api("/block_types/slug/custom-webhook", method="GET")
        (schema,) = self._prefect_api("/block_schemas/filter", {
            "block_schemas": {"block_type_id": {"any_": [kind["id"]]}}, "limit": 1})
        doc = self._prefect_api("/block_documents/", {
            "name": block, "block_type_id": kind["id"], "block_schema_id": schema["id"],
            "data": {"name": "predrnn", "url": "{{url}}", "method": "POST", "timeout": 10,
                     "allow_private_urls": True, "secrets": {"url": self.s.failure_webhook.get_secret_value()},
                     "json_data": {"text": "{{subject}}\n{{body}}", "subject": "{{subject}}", "body": "{{body}}"}}})
        body = ("Deployment: {{ deployment.name }}\nFlow run: {{ flow_run.name }} ({{ flow_run.id }})\n"
                "State: {{ flow_run.state.name }}\nReason: {{ flow_run.state.message }}\n"
                "Page: {{ flow_run|ui_url }}")
        made = self._prefect_api("/automations/", {
            "name": name, "enabled": True,
            "description": f"a run of {', '.join(self.s.notify_deployments)} failed or crashed: post to the webhook",
            "trigger": {"type": "event", "posture": "Reactive",
                        "expect": ["prefect.flow-run.Failed", "prefect.flow-run.Crashed"],
                        "match": {"prefect.resource.id": "prefect.flow-run.*"},
                        "match_related": {"prefect.resource.role": "deployment",
                                          "prefect.resource.name": list(self.s.notify_deployments)},
                        "for_each": ["prefect.resource.id"], "threshold": 1, "within": 0},
            "actions": [{"type": "send-notification", "block_document_id": doc["id"],
                         "subject": "{{ deployment.name }}: run {{ flow_run.name }} {{ flow_run.state.name }}",
                         "body": body}]})
        return str(made["id"])

    # -- public API ----------------------------------------------------------------------------------

    def _health_checks(self) -> dict[str, Callable[[], bool]]:
        """Readiness of the services whose health is an HTTP or S3 call (Ray and the worker differ)."""
        s = self.s
        return {"s3": self._buckets_ready, "prefect": lambda: _http_ok(f"{s.prefect_api_url}/health"),
                "mlflow": lambda: _http_ok(f"{s.mlflow_url}/health")}

    def up(self, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
        """Start every configured service, wait until each is healthy, and record them.

        Returns:
            ``{"urls", "env", "services": {name: {"pgid", "ready_s", "log"}}, "startup_s", "secrets"}``:
            ``env`` is the client environment without its secrets, ``secrets`` where they are (files, 0600).

        Raises:
            StackError: a service failed (everything started so far is stopped again).
        """
        if self.running():
            raise StackError(f"a stack is already running from {self.root} (predrnn stack down first)")
        s = self.s
        unknown = set(s.services) - set(SERVICES)
        if unknown:
            raise StackError(f"unknown services {sorted(unknown)}; choose from {SERVICES}")
        s.preflight()  # seconds, before any process starts
        self.root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        state: dict[str, Any] = {"settings": json.loads(s.model_dump_json(exclude=set(SECRET_SETTINGS))),
                                 "urls": s.urls(), "services": {}}
        procs: dict[str, subprocess.Popen[bytes]] = {}

        def record(name: str, proc: subprocess.Popen[bytes]) -> None:
            procs[name] = proc
            state["services"][name] = {"pgid": proc.pid, "log": str(self.logs / f"{name}.log")}
            self._write_state(state)

        try:
            starters = {"s3": self._start_s3, "mlflow": self._start_mlflow, "prefect": self._start_prefect,
                        "ray": self._start_ray}
            for name in ("s3", "prefect", "ray", "mlflow"):
                if name in s.services:
                    record(name, starters[name]())
            checks = {**self._health_checks(), "ray": lambda: self._ray_ready(procs["ray"])}
            errors: list[BaseException] = []

            def wait_one(name: str) -> None:
                try:
                    proc = None if name == "ray" else procs[name]
                    secs = _wait(name, checks[name], proc, self.logs / f"{name}.log", s.startup_timeout_s)
                    state["services"][name]["ready_s"] = round(time.monotonic() - t0, 1)
                    echo(f"{name:8} healthy after {time.monotonic() - t0:5.1f} s ({secs:.1f} s waiting)")
                except BaseException as err:  # reported below, after every wait ended
                    errors.append(err)

            threads = [threading.Thread(target=wait_one, args=(n,)) for n in procs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            if "mlflow" in s.services:
                self.ensure_mlflow_accounts()
            if "prefect" in s.services and self._install_failure_notification():
                echo(f"{'prefect':8} failed or crashed runs of {', '.join(s.notify_deployments)} are posted to "
                     "the failure webhook")
            if "worker" in s.services:
                if "prefect" not in s.services:
                    raise StackError("the worker needs the prefect service")
                self._install_zombie_automation()
                crashed = self.reconcile_runs("its process was gone when the stack started (stack down or a crash)")
                if crashed:
                    echo(f"{'prefect':8} {len(crashed)} run(s) cut off earlier set to Crashed; their slots are free")
                record("worker", self._start_worker())
                _wait("worker", self._worker_online, procs["worker"], self.logs / "worker.log", s.startup_timeout_s)
                state["services"]["worker"]["ready_s"] = round(time.monotonic() - t0, 1)
                echo(f"{'worker':8} online after {time.monotonic() - t0:5.1f} s (pool {s.work_pool})")
        except BaseException:
            self.down(echo=lambda _m: None)
            raise
        state["startup_s"] = round(time.monotonic() - t0, 1)
        state["env"] = s.client_env()  # no secret: those are in the files of state["secrets"]
        state["secrets"] = {"folder": str(self.secrets.folder), "credentials": str(self.secrets.path),
                            "client_env": str(self.secrets.write_client_file())}
        self._write_state(state)
        return state

    def running(self) -> bool:
        """Whether any recorded service process group is still alive."""
        return any(_group_alive(int(v["pgid"])) for v in self.read_state().get("services", {}).values())

    def down(self, *, echo: Callable[[str], None] = print, grace_s: float = 10.0) -> list[str]:
        """Stop every recorded service by process group: TERM, then KILL after its grace period.

        Ray's GCS and a Prefect worker ignore TERM for a long time, so they get at most 3 s.

        Returns:
            The names of the services that were stopped.
        """
        state = self.read_state()
        services = state.get("services", {})
        groups = {name: int(info["pgid"]) for name, info in services.items()}
        if "worker" in groups:  # first the worker and its runs, so that they end while Prefect still listens
            self._stop_worker(groups.pop("worker"), echo, grace_s, reason="stopped by `predrnn stack down`")
        order = [n for n in ("mlflow", "prefect", "ray", "s3") if n in groups]
        _stop_groups({n: groups[n] for n in order}, echo, grace_s)
        order = ["worker", *order] if "worker" in services else order
        if services:
            state["services"] = {}
            state["stopped_at"] = time.time()
            self._write_state(state)
        shutil.rmtree(self.s.ray_temp_dir, ignore_errors=True)
        return order

    def _stop_worker(self, pgid: int, echo: Callable[[str], None], grace_s: float, reason: str) -> None:
        """Stop the worker and the flow runs it started (TERM, then KILL), then set every run of the pool
        left unfinished to ``Crashed`` with ``reason`` (when Prefect answers), so no slot stays taken."""
        runs = {f"run {p.pid}": p.pid for p in self._flow_run_processes(pgid)}
        _stop_groups({"worker": pgid, **runs}, echo, grace_s)
        try:
            crashed = self.reconcile_runs(reason)
        except (urllib.error.URLError, OSError, ValueError) as err:
            echo(f"{'worker':8} could not mark its unfinished runs ({err}); the next stack up will")
            return
        if crashed:
            echo(f"{'worker':8} {len(crashed)} unfinished run(s) set to Crashed")

    def restart(self, name: str, *, down_s: float = 0.0, kill: bool = False,
                echo: Callable[[str], None] = print) -> float:
        """Stop one running service and start it again on the same ports and state, waiting until healthy.

        Args:
            name: ``s3``, ``mlflow``, ``prefect`` (their state is on disk, so nothing is lost) or ``worker``
                (its unfinished runs end ``Crashed``; so do runs cut off by an earlier crash).
            down_s: seconds to stay down between stop and start (an outage, for fault drills).
            kill: SIGKILL at once instead of TERM first (a crash rather than a shutdown).

        Returns:
            Seconds from the stop until the service was healthy again.
        """
        starters: dict[str, Callable[[], subprocess.Popen[bytes]]] = {
            "s3": self._start_s3, "mlflow": self._start_mlflow, "prefect": self._start_prefect,
            "worker": self._start_worker}
        if name not in starters:
            raise StackError(f"cannot restart {name!r}; restartable services: {sorted(starters)}")
        state = self.read_state()
        info = state.get("services", {}).get(name)
        if not info:
            raise StackError(f"{name} is not part of the running stack in {self.root}")
        t0 = time.monotonic()
        grace = 0.0 if kill else 10.0
        if name == "worker":  # its runs end with it; those cut off earlier (a crash) are marked too
            how = "killed" if kill else "stopped"
            self._stop_worker(int(info["pgid"]), echo, grace, reason=f"its worker was restarted ({how})")
        else:
            _stop_groups({name: int(info["pgid"])}, echo, grace)
        time.sleep(max(0.0, down_s))
        proc = starters[name]()
        info["pgid"] = proc.pid
        self._write_state(state)
        check = self._worker_online if name == "worker" else self._health_checks()[name]
        _wait(name, check, proc, self.logs / f"{name}.log", self.s.startup_timeout_s)
        if name == "mlflow":
            self.ensure_mlflow_accounts()
        took = time.monotonic() - t0
        echo(f"{name:8} restarted, healthy {took:.1f} s after the stop")
        return took

    def status(self) -> dict[str, Any]:
        """Each recorded service's process group, health and URL."""
        state = self.read_state()
        s = self.s
        health: dict[str, Callable[[], bool]] = {
            **self._health_checks(),
            "ray": self._ray_healthy,
            "worker": self._worker_online}
        urls = {"s3": s.s3_endpoint, "prefect": f"http://{s.host}:{s.prefect_port}", "mlflow": s.mlflow_url,
                "ray": s.ray_address + (f" (dashboard http://{s.host}:{s.ray_dashboard_port})" if s.ray_dashboard
                                        else ""),
                "worker": f"pool {s.work_pool}"}
        out = {}
        for name, info in state.get("services", {}).items():
            pgid = int(info["pgid"])
            alive = _group_alive(pgid)
            out[name] = {"pgid": pgid, "alive": alive, "healthy": alive and health[name](), "url": urls[name],
                         "log": info.get("log"), "rss_mb": round(_group_rss_kb(pgid) / 1024, 1)}
        return {"root": str(self.root), "services": out, "urls": s.urls(),
                "env": s.client_env(), "secrets": str(s.secrets_dir)}

    def deploy(self, project_dir: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """``prefect --no-prompt deploy --all`` in ``project_dir`` against this stack.

        The nightly schedule's time zone is ``settings.timezone`` (``PREDRNN_STACK_TIMEZONE``).
        """
        env = self._env({**self.client_env(), "PREDRNN_TIMEZONE": self.s.timezone})
        return subprocess.run([_bin("prefect"), "--no-prompt", "deploy", "--all", *extra], env=env,
                              capture_output=True, text=True, timeout=300, cwd=str(project_dir), check=False)


def _stop_groups(groups: dict[str, int], echo: Callable[[str], None], grace_s: float) -> None:
    """TERM each process group, KILL those still alive after ``grace_s`` (3 s at most for Ray and the worker)."""
    t0 = time.monotonic()
    for pgid in groups.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
    pending = set(groups)
    while pending:
        now = time.monotonic() - t0
        for name in sorted(pending):
            if not _group_alive(groups[name]):
                pending.discard(name)
                echo(f"{name:8} stopped ({now:.1f} s)")
            elif now > min(grace_s, 3.0 if name in ("ray", "worker") else grace_s):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(groups[name], signal.SIGKILL)
        if now > grace_s + 10:
            raise StackError(f"process groups still alive after KILL: {sorted(pending)}")
        time.sleep(0.2)


def _group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies hold no resources, so they do not count)."""
    pids = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getpgid(proc.info["pid"]) == pgid:
                pids.append(proc.info["pid"])
        except OSError:  # gone since the listing
            continue
    return pids


def _engine_alive(pid: int) -> bool:
    """Whether ``pid`` is a live Prefect flow-run process (not a reused pid of something else)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "prefect.engine" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


def _group_rss_kb(pgid: int) -> int:
    """Resident memory of the group's processes, in KiB."""
    total = 0
    for pid in _group_members(pgid):
        try:
            total += psutil.Process(pid).memory_info().rss // 1024
        except psutil.Error:  # gone, or not ours to read
            continue
    return total
