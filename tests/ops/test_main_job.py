"""The main job (``python -m flows.run``, README command 1) on a tiny budget, as a user runs it.

A real run: Prefect API server owned by the job, Ray Train, MLflow (SQLite), the model registered.
Then the ways a job ends early: SIGTERM part-way through training, and SIGKILL of a process holding
the job's API server. Nothing the job started may outlive it.
"""

from __future__ import annotations

import contextlib
import json
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

_DROP = ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "PREDRNN_TRACKING_URI",
         "PREDRNN_DATASETS_ROOT", "PREDRNN_RAY_ADDRESS", "RAY_ADDRESS")


def _job_env(state: Path) -> tuple[dict[str, str], str]:
    """A user's environment with a fresh state folder, plus a marker to find every process it starts."""
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update(PREDRNN_STATE_DIR=str(state), PREDRNN_TEST_JOB=mark, PREFECT_LOGGING_LEVEL="INFO")
    return env, mark


def _processes_with(mark: str) -> dict[int, str]:
    """Live processes whose environment carries ``mark`` (the job and everything it started)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"PREDRNN_TEST_JOB={mark}".encode() in (entry / "environ").read_bytes():
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
        except OSError:
            continue
    return found


def _wait_until_gone(mark: str, timeout_s: float, keep=lambda cmd: True) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = {pid: cmd for pid, cmd in _processes_with(mark).items() if keep(cmd)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _kill_all(mark: str) -> None:
    for pid in _processes_with(mark):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _is_api_server(cmd: str) -> bool:
    return "prefect.server.api.server" in cmd


def _files_holding(folders: list[Path], secrets: dict[str, str]) -> tuple[int, list[str]]:
    """How many files the folders hold, and which of them hold one of the secrets in clear."""
    scanned, found = 0, []
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            try:
                data = path.read_bytes()
            except OSError:  # gone since the listing
                continue
            scanned += 1
            found += [f"{path}: {name}" for name, secret in secrets.items() if secret.encode() in data]
    return scanned, found


# the forecast flow on the main job's model and dataset, in a process of its own as a deployment runs it
_FORECAST = """
import json, sys
from predrnn.settings import tool_env
tool_env()
from flows.api_server import job_api_server
with job_api_server():
    from flows.forecast import forecast_flow
    print(json.dumps(forecast_flow(model="models:/predrnn-v2/1", dataset=sys.argv[1], workers=1, batch_size=8)))
"""


def test_main_job_runs_end_to_end_and_leaves_nothing_running(tmp_path):
    """The main job (ingest and train flows) and then the forecast flow end to end, with canary credentials in
    their environment for the whole run (S3 keys, the promoter's and MLflow's passwords): none of them appears
    in a line printed or in any file the runs wrote (Prefect's database, MLflow's store and artifacts, Ray's
    session and logs, the run folders, the forecast dataset)."""
    env, mark = _job_env(tmp_path / "state")
    canary = {var: f"canary-{var.lower()}-{uuid.uuid4().hex}" for var in
              ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PREDRNN_PROMOTER_PASSWORD",
               "MLFLOW_TRACKING_PASSWORD")}
    temp = Path(tempfile.mkdtemp(prefix="mj", dir="/tmp"))  # short: Ray's sockets live under it
    env.update(canary, TMPDIR=str(temp))
    try:
        out = subprocess.run([sys.executable, "-m", "flows.run", "--clips", "40", "--iterations", "3",
                              "--workers", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        fc = subprocess.run([sys.executable, "-c", _FORECAST, summary["dataset"]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
        assert fc.returncode == 0, fc.stdout[-3000:] + fc.stderr[-3000:]
        forecast = json.loads(fc.stdout.strip().splitlines()[-1])
        assert forecast["clips"] > 0 and "digits-forecast@" in forecast["uri"], forecast
        printed = [name for name, secret in canary.items() if secret in out.stdout + out.stderr + fc.stdout + fc.stderr]
        assert not printed, f"printed: {printed}"
        scanned, leaked = _files_holding([tmp_path, temp], canary)
        assert not leaked, leaked
        assert scanned > 50, scanned  # the Prefect and MLflow databases, Ray's logs, the run folders
        horizon = len(summary["test_mse_per_frame"])
        assert horizon == len(summary["persistence_mse_per_frame"]) == 10
        assert 0 < summary["test_mse"] < 1e4 and 0 < summary["persistence_mse"] < 1e4
        assert summary["model_uri"] == "models:/predrnn-v2/1"
        assert Path(summary["gif"]).stat().st_size > 0 and Path(summary["png"]).stat().st_size > 0
        assert summary["tracking_uri"] == f"sqlite:///{tmp_path / 'state' / 'mlflow' / 'mlflow.db'}"
        assert summary["dataset"].startswith(str(tmp_path / "state" / "datasets" / "digits@"))

        import mlflow

        client = mlflow.MlflowClient(tracking_uri=summary["tracking_uri"])
        version = client.get_model_version("predrnn-v2", "1")
        assert version.run_id == summary["run_id"]
        run = client.get_run(summary["run_id"])
        assert run.info.status == "FINISHED"

        left = _wait_until_gone(mark, 30)
        assert not left, f"still running after the job finished: {left}"
    finally:
        _kill_all(mark)
        shutil.rmtree(temp, ignore_errors=True)


def test_sigterm_mid_training_stops_the_job_and_everything_it_started(tmp_path):
    env, mark = _job_env(tmp_path / "state")
    log = tmp_path / "job.log"
    with log.open("w") as sink:
        job = subprocess.Popen([sys.executable, "-m", "flows.run", "--clips", "40", "--iterations", "5000",
                                "--workers", "1"], cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "training quick: iterations" not in log.read_text() and time.monotonic() < deadline:
            assert job.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert "training quick: iterations" in log.read_text(), log.read_text()[-3000:]
        started = _processes_with(mark)
        assert any(_is_api_server(cmd) for cmd in started.values()), started
        assert any("raylet" in cmd for cmd in started.values()), started

        job.send_signal(signal.SIGTERM)  # to the job process only, as `kill PID` does
        rc = job.wait(timeout=120)
        text = log.read_text()
        assert rc == 128 + signal.SIGTERM, text[-3000:]
        assert "Crashed" in text  # the flow runs are closed, not left RUNNING
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'state' / 'mlflow' / 'mlflow.db'}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert [r.info.status for r in runs] == ["KILLED"]  # the training run is closed as stopped
        left = _wait_until_gone(mark, 30)
        assert not left, f"still running after SIGTERM: {left}"
    finally:
        if job.poll() is None:
            job.kill()
        _kill_all(mark)


_HOLD_SERVER = """
import sys, time
from flows.api_server import job_api_server
with job_api_server() as url:
    print(url, flush=True)
    time.sleep(600)
"""


def test_api_server_dies_with_a_killed_job(tmp_path):
    env, mark = _job_env(tmp_path / "state")
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_SERVER], cwd=Path(__file__).parents[2], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = holder.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api"), url
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # serving
        holder.kill()  # SIGKILL: no exit handler of the job runs
        holder.wait(timeout=30)
        left = _wait_until_gone(mark, 30, keep=_is_api_server)
        assert not left, f"the API server outlived its job: {left}"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        if holder.poll() is None:
            holder.kill()
        _kill_all(mark)


def test_api_server_reports_a_server_that_cannot_start(tmp_path, monkeypatch):
    from flows import api_server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "notadialect://nowhere")
    with pytest.raises(api_server.APIServerError, match="did not become healthy"), \
            api_server.job_api_server(timeout_s=60):
        pass
    assert "PREFECT_API_URL" not in os.environ


def test_api_server_uses_the_server_already_configured(monkeypatch):
    from flows import api_server

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    with api_server.job_api_server() as url:
        assert url == "http://127.0.0.1:4200/api"
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
