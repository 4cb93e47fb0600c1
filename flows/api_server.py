"""A Prefect API server owned by one job process, for jobs run without the local stack.

Prefect's ephemeral mode starts a temporary API server as a plain child process and stops it from an
``atexit`` hook, so a job ended by a signal (``kill``, a scheduler's SIGTERM, the OOM killer) leaves the
server running. The server started here is the same application (``prefect.server.api.server:create_app``
under uvicorn, UI off, ephemeral services), but the kernel sends it SIGTERM when the job process dies,
however it dies. On a normal exit it is stopped after Prefect's queued logs and events have been sent.

Set ``PREFECT_API_URL`` (the stack's worker does) and the job uses that server instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

_PR_SET_PDEATHSIG = 1


class APIServerError(RuntimeError):
    """The job's Prefect API server did not come up."""


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with(parent: int):
    """``preexec_fn``: ask the kernel for SIGTERM when the parent dies (Linux), and close the race."""

    def setup() -> None:
        os.setpgid(0, 0)  # own process group: a Ctrl-C to the job does not reach the server first
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(1)

    return setup


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _drain_prefect_workers() -> None:
    """Send Prefect's queued run logs and events while the server is still up."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    EventsWorker.drain_all()


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def job_api_server(timeout_s: float | None = None) -> Iterator[str]:
    """Serve a Prefect API for the duration of the block and yield its URL (``.../api``).

    ``PREFECT_API_URL`` is set for the block, before Prefect is imported by the caller. If it is set
    already, that server is used and nothing is started.
    """
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        yield existing
        return
    timeout_s = timeout_s or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    with tempfile.TemporaryFile() as log:
        proc = None
        for _attempt in range(3):  # a server that exits may have lost its port between probe and bind
            port = _free_port()
            url = f"http://127.0.0.1:{port}/api"
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with(os.getpid()))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and proc.poll() is None and not _healthy(url):
                time.sleep(0.2)
            if proc.poll() is None and _healthy(url):
                break
            timed_out = proc.poll() is None
            _stop(proc)
            if timed_out:  # a hung server is not retried
                break
        if proc is None or proc.returncode is not None:
            log.seek(0)
            tail = log.read()[-4000:].decode(errors="replace")
            raise APIServerError(f"the Prefect API server did not become healthy within {timeout_s:.0f} s "
                                 f"(exit code {proc.returncode if proc else None}); its output:\n{tail}")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            try:
                _drain_prefect_workers()
            finally:
                _stop(proc)
                os.environ.pop("PREFECT_API_URL", None)
