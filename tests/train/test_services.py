"""The train flow through Prefect, and training tracked on a real ``mlflow server`` over http."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from train_helpers import TINY, free_port, tiny_config

from predrnn.train import configure, finish, prepare, train

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A lean ``mlflow server`` on 127.0.0.1 (one worker, no job runner), stopped by process group."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "server-artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                tail = (tmp_path / "server.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server did not start: {tail}")
            time.sleep(0.5)
        yield uri
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def test_remote_tracking_server(local_ray, mlflow_server, tiny_dataset, tmp_path):
    import mlflow

    cfg = configure(tiny_config(), workers=1)
    result = train(prepare(cfg, data=tiny_dataset, tracking_uri=mlflow_server, storage_path=str(tmp_path / "runs")))
    summary = finish(result, out_dir=tmp_path / "out")
    assert summary["model_uri"] == "models:/predrnn-v2/1"
    run = mlflow.MlflowClient(mlflow_server).get_run(result.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert "val_mse_f01" in run.data.metrics and "test_mse" in run.data.metrics
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pyfunc.load_model("models:/predrnn-v2@challenger")
    finally:
        mlflow.set_tracking_uri(previous)
    assert model.predict(np.zeros((2, 4, 32, 32, 1), np.uint8)).shape == (2, 4, 32, 32, 1)  # its input schema


@pytest.mark.prefect
def test_train_flow(local_ray, tiny_dataset, tracking_uri, tmp_path, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness

    from flows.train import train_flow

    monkeypatch.setenv("PREDRNN_STATE_DIR", str(tmp_path / "state"))
    import logging

    from log_lines import Lines

    seen = Lines()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(seen)
        logger.setLevel(logging.INFO)
    try:
        with prefect_test_harness(server_startup_timeout=90):
            cut_off, alive = _cut_off_runs(tracking_uri, tmp_path)
            state = train_flow(dataset=tiny_dataset, preset="quick", overrides=TINY, workers=2,
                               tracking_uri=tracking_uri, storage_path=str(tmp_path / "runs"), return_state=True)
            summary = state.result()
            progress = _progress_artifact("train-progress")
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                task_state = client.read_task_run(cut_off["task_run"]).state
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(seen)
            logger.setLevel(level)
    from mlflow import MlflowClient

    from flows.progress import FLOW_RUN_TAG
    from flows.settle import ENDED_TAG

    mlflow = MlflowClient(tracking_uri)
    # what an earlier crashed run left running was ended by this one; a run still going was left alone
    ended = mlflow.get_run(cut_off["mlflow_run"]).info
    assert ended.status == "KILLED" and ended.end_time, ended
    assert mlflow.get_run(cut_off["mlflow_run"]).data.tags[ENDED_TAG] == "its flow run ended Crashed: lost machine"
    assert task_state.type.value == "CRASHED" and task_state.message.endswith("lost machine"), task_state
    assert mlflow.get_run(alive).info.status == "RUNNING"
    trained = mlflow.get_run(summary["run_id"])
    assert trained.info.status == "FINISHED"
    assert trained.data.tags[FLOW_RUN_TAG].endswith(f"/runs/flow-run/{state.state_details.flow_run_id}"), \
        trained.data.tags  # the UI's own path, as the failure notification links it
    lines = seen.lines
    assert summary["model_uri"] == "models:/predrnn-v2/1"
    # progress in phases, each in the log as it starts, in order; the bar ends at 100 % with what was made
    phases = ["1 of 5: resolving the run", "2 of 5: starting Ray", "3 of 5: training (iteration",
              "4 of 5: evaluating", "5 of 5: registering"]
    at = [next((i for i, line in enumerate(lines) if line.startswith(f"phase {p}")), -1) for p in phases]
    assert -1 not in at and at == sorted(at), lines
    assert any("iteration 8 of 8" in line for line in lines), lines
    assert progress.data == 100.0 and progress.description.startswith("registered models:/predrnn-v2/1"), progress
    assert Path(summary["gif"]).is_file() and str(tmp_path / "state") in summary["gif"]
    assert summary["test_mse"] > 0 and len(summary["persistence_mse_per_frame"]) == 4


def _cut_off_runs(tracking_uri: str, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """An earlier flow run cut off mid-training (Crashed, its task run still Running, its MLflow run still
    RUNNING), and the MLflow run of a flow run still going; returns ``({"task_run", "mlflow_run"}, run id)``."""
    from mlflow import MlflowClient
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    from flows.progress import FLOW_RUN_TAG

    @flow(name="cut-off")
    def cut() -> None: ...

    @task(name="train-new-model")
    def step() -> None: ...

    mlflow = MlflowClient(tracking_uri)
    experiment = mlflow.create_experiment("cut-off", artifact_location=(tmp_path / "cut-off").as_uri())
    with get_client(sync_client=True) as client:
        dead = client.create_flow_run(cut, state=Running())
        task_run = client.create_task_run(step, dead.id, dynamic_key="0", state=Running())
        client.set_flow_run_state(dead.id, Crashed(message="lost machine"), force=True)
        live = client.create_flow_run(cut, state=Running())
    runs = []
    for flow_run in (dead, live):
        run = mlflow.create_run(experiment, tags={FLOW_RUN_TAG: f"http://127.0.0.1/runs/flow-run/{flow_run.id}"})
        runs.append(run.info.run_id)
    return {"task_run": task_run.id, "mlflow_run": runs[0]}, runs[1]


def _progress_artifact(key: str) -> Any:
    """The progress artifact ``key`` of the harness's server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return art
