"""End to end on the local stack: up -> deploy -> the Prefect UI lists nightly-retrain with its schedule ->
nightly-retrain started from the UI's Custom run form, and a second one through the Prefect API while it
runs (rejected by the concurrency limit) -> a version registered and promoted, the MLflow UI shows the
champion alias on it -> forecast from @champion by the CLI and over HTTP (equal) -> down, nothing left
running. Browser screenshots are saved under ``.state/test-artifacts/browser``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_helpers import (
    browser_page,
    mlflow_model_alias,
    prefect_custom_run,
    prefect_deployment_listed,
    prefect_run_page,
)
from ops_helpers import TINY, make_stack

from infra.stack import _group_alive, free_ports

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow, pytest.mark.s3, pytest.mark.prefect]

REPO = Path(__file__).resolve().parents[2]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _api(base: str, path: str, body: Any = None, method: str = "POST") -> Any:
    """One Prefect API call; 503 and 429 (SQLite busy, rate limits: "retry later") are retried as Prefect's
    own client does."""
    for attempt in range(8):
        req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - loopback
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            if err.code not in (429, 503) or attempt == 7:
                raise
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_stack_nightly_promote_predict_serve(tmp_path, monkeypatch):
    stack = make_stack(["s3", "mlflow", "prefect", "ray", "worker"])
    s = stack.s
    timings: dict[str, float] = {}
    groups: list[int] = []
    serve: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.monotonic()
        state = stack.up(echo=print)
        timings["up"] = time.monotonic() - t0
        groups = [int(v["pgid"]) for v in state["services"].values()]
        rss = sum(v["rss_mb"] for v in stack.status()["services"].values())
        print(f"stack up in {timings['up']:.1f} s, RSS of all service groups {rss:.0f} MB")
        assert all(v["healthy"] for v in stack.status()["services"].values())

        t0 = time.monotonic()
        out = stack.deploy(REPO)
        timings["deploy"] = time.monotonic() - t0
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        api = s.prefect_api_url
        names = {d["name"] for d in _api(api, "/deployments/filter", {})}
        assert {"ingest", "train", "tune", "evaluate", "promote", "nightly-retrain"} <= names
        nightly = _api(api, "/deployments/name/nightly-retrain/nightly-retrain", method="GET")
        assert nightly["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
        assert nightly["global_concurrency_limit"]["limit"] == 1

        params = {"source_options": {"num_clips": 48, "frames": 8, "height": 32, "width": 32, "seed": 0},
                  "overrides": TINY, "workers": 1, "margin": 0.01}
        ui = api.removesuffix("/api")
        t0 = time.monotonic()
        with browser_page() as page:
            prefect_deployment_listed(page, ui, "nightly-retrain", "At 02:00 AM every day")
            run_name = prefect_custom_run(page, ui, "nightly-retrain", params)
        timings["ui"] = time.monotonic() - t0
        ui_run = _api(api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [run_name]}}})
        assert len(ui_run) == 1 and ui_run[0]["parameters"]["overrides"] == TINY, ui_run
        t0 = time.monotonic()
        while _api(api, f"/flow_runs/{ui_run[0]['id']}", method="GET")["state"]["type"] not in {"RUNNING", *FINAL}:
            assert time.monotonic() - t0 < 180, "the worker did not start the run triggered from the UI"
            time.sleep(1)
        runs = [ui_run[0], _api(api, f"/deployments/{nightly['id']}/create_flow_run", {"parameters": params})]
        states: dict[str, dict[str, Any]] = {}
        while time.monotonic() - t0 < 400:
            states = {r["id"]: _api(api, f"/flow_runs/{r['id']}", method="GET") for r in runs}
            if all(fr["state"]["type"] in FINAL for fr in states.values()):
                break
            time.sleep(2)
        timings["nightly"] = time.monotonic() - t0
        kinds = sorted(fr["state"]["type"] for fr in states.values())
        assert kinds == ["CANCELLED", "COMPLETED"], {k: v["state"] for k, v in states.items()}
        done = next(fr for fr in states.values() if fr["state"]["type"] == "COMPLETED")
        other = next(fr for fr in states.values() if fr["state"]["type"] == "CANCELLED")
        history = _api(api, f"/flow_run_states/?flow_run_id={other['id']}", method="GET")
        print("second run:", [(h["type"], h["name"], h.get("message")) for h in history])
        assert "RUNNING" not in {h["type"] for h in history}  # rejected by the deployment's limit

        arts = _api(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [done["id"]]}}})
        report = next(a["data"] for a in arts if a["key"] == "nightly-retrain")
        assert "ingested `s3://datasets/nightly@" in report and "promoted v1 to champion" in report
        assert "### scorecard" in report and "persistence MSE/frame" in report
        progress = next(a for a in arts if a["key"] == "nightly-progress")  # training progress in the UI
        assert progress["type"] == "progress" and float(progress["data"]) == 100.0, progress
        assert "MLflow run `" in next(a["data"] for a in arts if a["key"] == "nightly-mlflow-run")

        uri = s.mlflow_url
        from mlflow import MlflowClient

        client = MlflowClient(uri, uri)
        mv = client.get_model_version_by_alias("predrnn-v2", "champion")
        assert mv.version == "1" and mv.tags["promotion.decision"] == "promoted"
        run = client.get_run(mv.run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        keys = [o["Key"] for o in stack.s3_client().list_objects_v2(Bucket="mlflow").get("Contents", [])]
        assert any(k.endswith("MLmodel") for k in keys)  # the model's files are on S3
        assert done["id"] == ui_run[0]["id"]  # the UI's run ran; the API's was rejected while it did

        with browser_page() as page:
            prefect_run_page(page, ui, done["id"], "Completed")
            mlflow_model_alias(page, uri, "predrnn-v2", "1", "champion")

        # forecast from @champion with the CLI (artifacts come through the server from S3)
        for k, v in s.client_env().items():
            monkeypatch.setenv(k, v)
        from typer.testing import CliRunner

        from predrnn.cli import app

        ctx = np.random.default_rng(0).random((2, 4, 32, 32, 1), dtype=np.float32)
        np.save(tmp_path / "ctx.npy", ctx)
        res = CliRunner().invoke(app, ["predict", "--model", "models:/predrnn-v2@champion", "--input",
                                       str(tmp_path / "ctx.npy"), "--horizon", "4", "--output",
                                       str(tmp_path / "pred.npy"), "--tracking-uri", uri])
        assert res.exit_code == 0, res.output
        cli_pred = np.load(tmp_path / "pred.npy")

        # the same model served over HTTP
        t0 = time.monotonic()
        port = free_ports(1)[0]
        env = {**os.environ, **s.client_env()}
        serve = subprocess.Popen([str(Path(sys.executable).parent / "predrnn"), "serve", "--model",
                                  "models:/predrnn-v2@champion", "--port", str(port)], env=env,
                                 start_new_session=True, stdout=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115
                                 stderr=subprocess.STDOUT)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                assert time.monotonic() - t0 < 120, "scoring server did not start"
                time.sleep(0.5)
        body = {"inputs": ctx.tolist(), "params": {"horizon": 4}}
        pred = np.asarray(_api(f"http://127.0.0.1:{port}", "/invocations", body)["predictions"], np.float32)
        timings["serve"] = time.monotonic() - t0
        assert pred.shape == cli_pred.shape == (2, 4, 32, 32, 1)
        np.testing.assert_allclose(pred, cli_pred, atol=1e-5)
    finally:
        if serve is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(serve.pid, sig)
                    serve.wait(10)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        t0 = time.monotonic()
        stack.down(echo=print)
        timings["down"] = time.monotonic() - t0
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    assert not any(_group_alive(g) for g in groups)
    assert not any(_listening(p) for p in (s.prefect_port, s.mlflow_port, s.s3_port, s.ray_port,
                                           s.ray_dashboard_port))
    assert not stack.running()
