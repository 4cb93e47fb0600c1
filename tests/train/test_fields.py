"""A physical field end to end: ingest in mm/h, train, evaluate, register, and forecast in mm/h through the
model directory, the registered model and ``predrnn serve`` (real Ray, MLflow and scoring server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from train_helpers import TINY, free_port, last_json
from typer.testing import CliRunner

from predrnn.checkpoint import load_model_dir
from predrnn.cli import app
from predrnn.predict import forecast_array

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow]
runner = CliRunner()


@pytest.fixture(scope="module")
def static_rain(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    """A rain-rate field in mm/h that never changes (persistence is perfect), with a no-data corner."""
    folder = tmp_path_factory.mktemp("static")
    rng = np.random.default_rng(0)
    frames = rng.gamma(1.5, 6.0, (24, 1, 32, 32)).astype(np.float32)
    clips = np.repeat(frames, 8, axis=1)
    clips[:, :, :3, :3] = np.nan  # outside the radar's range
    np.save(folder / "rain.npy", clips)
    res = runner.invoke(app, ["ingest", "--kind", "npy", "--source", str(folder / "rain.npy"), "--name", "rain",
                              "--root", str(folder / "root"), "-o", "units=mm/h", "-o", "valid_min=0"])
    assert res.exit_code == 0, res.output
    return res.output.strip().splitlines()[-1], clips


def test_static_field_end_to_end_in_mm_per_hour(local_ray, static_rain, tmp_path, monkeypatch):
    import mlflow

    uri, clips = static_rain
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("PREDRNN_STATE_DIR", str(tmp_path / "state"))
    args = ["train", "--data", uri, "--preset", "quick", "--workers", "1", "--tracking-uri", tracking,
            "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    for item in [*TINY, "optim.max_iterations=4"]:
        args += ["--set", item]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = last_json(res.output)
    assert summary["units"] == "mm/h" and summary["persistence_mse_per_frame"] == [0.0] * 4

    # evaluate: persistence of a static field is a perfect forecast, exactly 0 in (mm/h)^2
    res = runner.invoke(app, ["evaluate", "--model", summary["model_uri"], "--data", uri, "--tracking-uri", tracking,
                              "--thresholds", "0.5,2,5", "--fss-scales", "1,3", "--log"])
    assert res.exit_code == 0, res.output
    out = last_json(res.output)
    pers, model = out["persistence"], out["model"]
    assert pers["mse"] == [0.0] * 4 and pers["mae"] == [0.0] * 4 and pers["rmse"] == [0.0] * 4
    assert pers["csi"] == {"0.5": [1.0] * 4, "2": [1.0] * 4, "5": [1.0] * 4}
    assert pers["fss"]["5"]["3"] == [1.0] * 4 and out["persistence_mse"] == 0.0
    assert out["units"] == "mm/h" and "ssim" not in model and min(model["rmse"]) > 1.0
    client = mlflow.MlflowClient(tracking)
    history = client.get_metric_history(out["run_id"], "test_persistence_lead_csi_2")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)]
    run_files = {a.path for a in client.list_artifacts(out["run_id"], "evaluation")}
    assert {"evaluation/scorecard.md", "evaluation/scorecard.png"} <= run_files
    # another protocol than the training one (as KTH's 10 -> 20): 3 context frames, 5 lead times
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "out" / "model"), "--data", uri,
                              "--context", "3", "--horizon", "5"])
    assert res.exit_code == 0, res.output
    longer = last_json(res.output)
    assert longer["persistence"]["mse"] == [0.0] * 5 and longer["model"]["lead_times"] == 5
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "out" / "model"), "--data", uri,
                              "--horizon", "6"])
    assert res.exit_code == 2 and "has clips of 8 frames; context + horizon need 10" in res.output
    version = client.get_model_version("predrnn-v2", "1")
    assert "in mm/h" in version.description and "| csi_m |" in version.description
    assert client.get_run(version.run_id).data.metrics["test_csi_m"] >= 0.0
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking)
    try:
        (spec,) = mlflow.models.get_model_info("models:/predrnn-v2/1").signature.inputs.inputs
    finally:
        mlflow.set_tracking_uri(previous)
    assert spec.type == np.dtype(np.float32) and spec.shape[:2] == (-1, -1)  # a field: float32 in mm/h

    # the same forecast in mm/h from the model directory, the registered model and the HTTP server
    test_ctx = clips[-2:, :4, ..., None].copy()  # (clips, T_in, H, W, C) in mm/h, NaN where there is no data
    np.save(tmp_path / "ctx.npy", test_ctx)
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "out" / "model"), "--input",
                              str(tmp_path / "ctx.npy"), "--horizon", "3", "--output", str(tmp_path / "p.npy"),
                              "--gif", str(tmp_path / "p.gif"), "--precision", "fp32"])  # compared in fp32 below
    assert res.exit_code == 0 and "in mm/h" in res.output, res.output
    from_dir = np.load(tmp_path / "p.npy")
    assert from_dir.shape == (2, 3, 32, 32, 1) and np.isfinite(from_dir).all() and from_dir.min() >= 0.0
    finite = clips[np.isfinite(clips)]
    assert abs(float(from_dir.mean()) - float(finite.mean())) < 2 * float(finite.std())  # mm/h, not standardised
    res = runner.invoke(app, ["predict", "--model", "models:/predrnn-v2/1", "--input", str(tmp_path / "ctx.npy"),
                              "--horizon", "3", "--output", str(tmp_path / "r.npy"), "--tracking-uri", tracking,
                              "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), from_dir)
    bad = runner.invoke(app, ["predict", "--model", str(tmp_path / "out" / "model"), "--input",
                              str(_save(tmp_path / "neg.npy", -test_ctx - 1)), "--horizon", "3", "--output",
                              str(tmp_path / "x.npy")])
    assert bad.exit_code == 2 and "valid range (mm/h, valid >= 0)" in bad.output
    assert bad.output.strip().count("\n") == 0 and not (tmp_path / "x.npy").exists()

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    serve = subprocess.Popen([str(Path(sys.executable).parent / "predrnn"), "serve", "--model",
                              "models:/predrnn-v2/1", "--port", str(port), "--tracking-uri", tracking,
                              "--precision", "fp32"], env=env,
                             start_new_session=True, stdout=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115
                             stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                assert time.monotonic() - t0 < 150, "scoring server did not start"
                time.sleep(0.5)
        body = json.dumps({"inputs": test_ctx.tolist(), "params": {"horizon": 3}}).encode()  # NaN travels as NaN
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
            served = np.asarray(json.loads(resp.read())["predictions"], np.float32)
        np.testing.assert_allclose(served, from_dir, rtol=1e-6, atol=1e-5)
        # another context length and frame size (the model has no layer norm) give predict's forecast
        model_dir, dir_cfg = load_model_dir(tmp_path / "out" / "model")
        other = np.nan_to_num(clips[-2:, :2, :16, :24, None], nan=1.0).astype(np.float64)
        body = json.dumps({"inputs": other.tolist(), "params": {"horizon": 2}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
            served = np.asarray(json.loads(resp.read())["predictions"], np.float32)
        np.testing.assert_allclose(served, forecast_array(model_dir, dir_cfg, other, 2), rtol=1e-6, atol=1e-5)
        # a context the model cannot take: HTTP 400 and one line naming what was expected, not the array
        body = json.dumps({"inputs": np.zeros((1, 2, 16, 18, 1)).tolist()}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=60)  # noqa: S310
        assert refused.value.code == 400
        message = json.loads(refused.value.read())["message"]
        assert "multiples of the patch size 4" in message and "\n" not in message and len(message) < 300
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)

    # the evaluate flow publishes the scorecard as a Prefect artifact
    from prefect.testing.utilities import prefect_test_harness

    from flows.evaluate import evaluate_flow
    from predrnn.precision import resolve_precision

    with prefect_test_harness(server_startup_timeout=90):
        from prefect.client.orchestration import get_client

        state = evaluate_flow(model=str(tmp_path / "out" / "model"), dataset=uri, thresholds=[2.0, 5.0],
                              return_state=True)
        result = state.result()
        with get_client(sync_client=True) as client:
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

            arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["evaluation"])))
    assert result["scores"]["persistence"]["csi"] == {"2": [1.0] * 4, "5": [1.0] * 4}
    assert result["summary"]["csi_m"] >= 0.0 and result["persistence_summary"]["mse"] == 0.0
    text = "\n".join(str(a.data) for a in arts)
    assert "values in mm/h" in text and "**CSI** at thresholds (mm/h)" in text and "**FSS**" in text
    precision = resolve_precision("auto", "cpu", "forecast")  # the flow's default, resolved for this CPU
    assert result["precision"] == precision and f"forecast in {precision}" in text


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path
