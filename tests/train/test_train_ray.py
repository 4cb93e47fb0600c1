"""Real Ray Train runs on tiny configs: DDP over two workers, MLflow record and registry, worker loss,
corrupt-checkpoint fall-back on resume, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from listeners import Watch
from train_helpers import last_json, tiny_config, train_workers

from predrnn.sampling import probabilities
from predrnn.train import configure, finish, prepare, train
from predrnn.train.state import META_FILE, STATE_FILE, iteration_of

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow]


def test_ray_refuses_a_client_without_the_token(local_ray, tmp_path):
    """The local Ray (as ``predrnn train`` starts it) takes a client holding the token and refuses one
    without: Ray's token authentication on, not only its loopback binding."""
    import subprocess
    import sys

    import ray

    gcs = ray.get_runtime_context().gcs_address
    probe = (f"import ray; ray.init(address={gcs!r}, logging_level='ERROR'); "
             "print('joined', ray.cluster_resources()['CPU'])")
    base = {**os.environ, "HOME": str(tmp_path), "RAY_py_gcs_connect_timeout_s": "5"}
    ok = subprocess.run([sys.executable, "-c", probe], env=base, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "joined" in ok.stdout, ok.stderr[-2000:]
    intruder = {k: v for k, v in base.items() if not k.startswith("RAY_AUTH")} | {"RAY_AUTH_MODE": "disabled"}
    refused = subprocess.run([sys.executable, "-c", probe], env=intruder, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0 and "joined" not in refused.stdout
    assert "InvalidAuthToken" in refused.stderr, refused.stderr[-2000:]


def test_two_workers_track_and_register(local_ray, tiny_dataset, tracking_uri, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from predrnn.tracking import load_registered_model

    cfg = configure(tiny_config(), workers=2)
    with Watch([os.getpid()]) as sockets:  # every listener of this process's Ray, sampled during the run
        result = train(prepare(cfg, data=tiny_dataset, tracking_uri=tracking_uri,
                               storage_path=str(tmp_path / "runs")), log_every=1)
    assert iteration_of(result.latest_checkpoint) == 8
    names = {name for name, _, _ in sockets.seen}
    assert {"gcs_server", "raylet"} <= names, sockets.seen
    assert not sockets.outside, f"Ray listens beyond loopback: {sorted(sockets.outside)}"
    meta = json.loads((Path(result.latest_checkpoint) / META_FILE).read_text())
    assert meta["world_size"] == 2 and meta["dataset"]["uri"] == result.dataset["uri"]
    assert np.isfinite(result.best_metrics["val_mse"])
    summary = finish(result, out_dir=tmp_path / "out")
    assert summary["model_uri"] == "models:/predrnn-v2/1"
    assert Path(summary["gif"]).stat().st_size > 0 and Path(summary["plot"]).is_file()
    assert len(summary["test_mse_per_frame"]) == len(summary["persistence_mse_per_frame"]) == 4

    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.batch_size"] == "4" and run.data.params["compute.num_workers"] == "2"
    assert run.data.params["precision"] == "fp32"  # compute.amp auto, resolved for CPU workers
    assert run.data.tags["dataset.version"] in result.dataset["uri"]
    assert run.data.tags.get("predrnn.version")
    for key in ("loss", "mse", "decouple", "r_eta", "eta", "lr", "clips_per_s", "val_mse", "val_mse_f01",
                "val_ssim_f04", "val_persistence_mse_f04", "test_mse_f04", "test_persistence_mse"):
        assert key in run.data.metrics, key
    stall = client.get_metric_history(result.run_id, "data_stall_fraction")  # one per logging interval (1)
    assert [m.step for m in stall] == list(range(1, 9)) and all(0 <= m.value <= 1 for m in stall), stall
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [f"tiny@{result.dataset['version']}"]
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "evaluation")}
    assert {"evaluation/forecast.gif", "evaluation/forecast_grid.png", "evaluation/lead_time_metrics.png",
            "evaluation/config.json"} <= artifacts
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == result.dataset["version"]
    profile = json.loads(dataset_input.dataset.profile)
    assert profile["content_hash"].startswith(result.dataset["version"]) and len(profile["content_hash"]) == 64
    assert run.data.params["warm_start"] == "none"  # from scratch; a warm start says so (the nightly e2e)
    # every score's mean over lead times is a run metric (what a gate on that score reads), not a version tag
    assert {"test_mae", "test_rmse", "test_persistence_mae"} <= set(run.data.metrics)
    version = client.get_model_version_by_alias("predrnn-v2", "challenger")
    assert str(version.version) == "1" and set(version.tags) == {"dataset", "test_mse", "test_persistence_mse"}
    assert version.tags["dataset"] == f"tiny@{result.dataset['version']}"
    assert float(version.tags["test_mse"]) == pytest.approx(summary["test_mse"], rel=1e-3)
    assert "| mse |" in version.description and "persistence" in version.description

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        pyfunc = mlflow.pyfunc.load_model("models:/predrnn-v2@challenger")
        info = mlflow.models.get_model_info("models:/predrnn-v2@challenger")
    finally:
        mlflow.set_tracking_uri(previous)
    # the input schema says what the pyfunc takes: 8-bit levels, any clip count and context length, any frame
    (spec,) = info.signature.inputs.inputs
    assert spec.type == np.dtype(np.uint8) and spec.shape == (-1, -1, -1, -1, 1)
    from mlflow.models.utils import _enforce_schema

    fifteen = np.random.default_rng(1).integers(0, 256, (2, 15, 32, 32, 1)).astype(np.uint8)
    assert _enforce_schema(fifteen, info.signature.inputs) is fifteen
    levels = fifteen[:, :4]
    assert pyfunc.predict(levels).shape == (2, 4, 32, 32, 1)
    assert pyfunc.predict(levels, params={"horizon": 6}).shape == (2, 6, 32, 32, 1)
    # the registered model forecasts as the model does; floats are refused by the schema (predict, forecast and
    # serve take them: the model checks a context itself)
    from predrnn.predict import forecast_array

    direct, direct_cfg = load_registered_model("models:/predrnn-v2/1", tracking_uri=tracking_uri)
    want = forecast_array(direct, direct_cfg, levels, 3)
    np.testing.assert_allclose(pyfunc.predict(levels, params={"horizon": 3}), want, atol=1e-6)
    np.testing.assert_allclose(forecast_array(direct, direct_cfg, levels.astype(np.float32) / 255, 3), want, atol=1e-6)
    with pytest.raises(mlflow.exceptions.MlflowException, match="dtype of input float32 does not match"):
        pyfunc.predict(levels.astype(np.float32) / 255)
    for t_in in (1, 15):
        ctx = fifteen[:, :t_in]
        np.testing.assert_allclose(pyfunc.predict(ctx, params={"horizon": 2}),
                                   forecast_array(direct, direct_cfg, ctx, 2), atol=1e-6)
    wide = np.random.default_rng(2).integers(0, 256, (2, 4, 16, 48, 1)).astype(np.uint8)
    assert pyfunc.predict(wide, params={"horizon": 2}).shape == (2, 2, 16, 48, 1)
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"frames are \(16, 18, 1\); the model expects"):
        pyfunc.predict(np.zeros((2, 4, 16, 18, 1), np.uint8))
    model, loaded_cfg = load_registered_model("models:/predrnn-v2/1", tracking_uri=tracking_uri)
    assert loaded_cfg.data.img_height == 32 and sum(p.numel() for p in model.parameters()) > 0

    from typer.testing import CliRunner

    from predrnn.cli import app

    context = np.random.default_rng(0).random((3, 4, 32, 32, 1), dtype=np.float32)  # predict takes floats too
    np.save(tmp_path / "ctx.npy", context)
    res = CliRunner().invoke(app, ["predict", "--model", "models:/predrnn-v2@challenger", "--input",
                                   str(tmp_path / "ctx.npy"), "--horizon", "5", "--output",
                                   str(tmp_path / "pred.npy"), "--tracking-uri", tracking_uri])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "pred.npy").shape == (3, 5, 32, 32, 1)
    assert "Downloading artifacts" not in res.output  # not a terminal: no progress bar in the output

    # a registry version is downloaded once into the cache, whichever reference names it
    import hashlib

    cache, downloads = tmp_path / "model-cache", []
    download = mlflow.artifacts.download_artifacts
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts",
                        lambda *a, **k: downloads.append(k["artifact_uri"]) or download(*a, **k))
    for ref in ("models:/predrnn-v2@challenger", "models:/predrnn-v2/1", "models:/predrnn-v2@challenger"):
        cached, cached_cfg = load_registered_model(ref, tracking_uri=tracking_uri, cache_dir=cache)
        np.testing.assert_array_equal(forecast_array(cached, cached_cfg, levels, 3), want)
    assert len(downloads) == 1, downloads
    store = hashlib.sha1(tracking_uri.encode()).hexdigest()[:12]
    assert sorted(p.name for p in (cache / store / "predrnn-v2").iterdir()) == ["1"]  # no staging left behind
    assert (cache / store / "predrnn-v2" / "1" / "MLmodel").is_file()


def test_worker_killed_mid_training_resumes_exactly(local_ray, tiny_dataset, tracking_uri, tmp_path):
    from mlflow import MlflowClient

    cfg = configure(tiny_config("optim.max_iterations=120", "optim.checkpoint_interval=10",
                                "optim.eval_interval=60", "sampling.r_sampling_step_1=20",
                                "sampling.r_sampling_step_2=100", "sampling.r_exp_alpha=20"), workers=2)
    storage, name = tmp_path / "runs", "killed"
    killed: dict[str, object] = {}

    def killer() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            seen = [iteration_of(p.name) for p in (storage / name).glob("iter_*")]
            # Reports are consumed in order through a queue of one, so once iteration 30 is on disk the
            # checkpoint of iteration 20 (at least) is registered and a restart must resume from it.
            if any(i is not None and i >= 30 for i in seen):
                workers = train_workers()
                if workers:
                    killed["seen"] = max(i for i in seen if i is not None)
                    killed["pid"] = workers[-1]
                    os.kill(workers[-1], signal.SIGKILL)
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = train(prepare(cfg, data=tiny_dataset, tracking_uri=tracking_uri, storage_path=str(storage),
                           run_name=name), max_failures=2, log_every=1)
    thread.join(timeout=5)
    assert "pid" in killed, "no worker was killed"
    assert iteration_of(result.latest_checkpoint) == 120

    client = MlflowClient(tracking_uri)
    resumed = client.get_metric_history(result.run_id, "resumed_from_iteration")
    losses = sorted(m.step for m in client.get_metric_history(result.run_id, "loss"))
    assert len(resumed) == 1, f"no resume recorded; loss steps {losses[:40]}"
    start = int(resumed[0].value)
    seen = int(killed["seen"])  # type: ignore[call-overload]
    assert start % 10 == 0 and seen - 20 <= start <= seen + 10, (start, seen)
    # The schedule after the restart continues from the checkpoint's iteration, as a closed form.
    for key, index in (("r_eta", 0), ("eta", 1)):
        history = client.get_metric_history(result.run_id, key)
        after = [m for m in history if m.step > start]
        assert min(m.step for m in after) == start + 1
        for m in history:
            expected = probabilities(m.step, cfg.sampling)[index]
            assert m.value == pytest.approx(expected, abs=1e-12), (key, m.step)
    assert {m.step for m in client.get_metric_history(result.run_id, "loss")} == set(range(1, 121))


def test_resume_falls_back_past_a_corrupt_checkpoint(local_ray, tiny_dataset, tracking_uri, tmp_path):
    from mlflow import MlflowClient

    cfg = configure(tiny_config(), workers=1)
    first = train(prepare(cfg, data=tiny_dataset, tracking_uri=tracking_uri, storage_path=str(tmp_path / "runs"),
                          run_name="r"), log_every=1)
    latest = Path(first.latest_checkpoint)
    assert latest.name == "iter_0000008"
    (latest / STATE_FILE).write_bytes(b"corrupted on purpose")
    again = train(prepare(tiny_config(), resume=first.run_dir, tracking_uri=tracking_uri), log_every=1)
    assert again.run_id == first.run_id and again.cfg.optim.lr == cfg.optim.lr  # the run's own config
    assert Path(again.latest_checkpoint).name == "iter_0000008.1"
    resumed = MlflowClient(tracking_uri).get_metric_history(first.run_id, "resumed_from_iteration")
    assert [int(m.value) for m in resumed] == [4]



def test_cli_train_and_evaluate(local_ray, tiny_dataset, tracking_uri, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from train_helpers import TINY
    from typer.testing import CliRunner

    from predrnn.cli import app

    monkeypatch.setenv("PREDRNN_STATE_DIR", str(tmp_path / "state"))
    runner = CliRunner()
    args = ["train", "--data", tiny_dataset, "--preset", "quick", "--workers", "1", "--tracking-uri",
            tracking_uri, "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    for item in TINY:
        args += ["--set", item]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "precision fp32 (auto: training on the CPU stays fp32" in res.output
    summary = last_json(res.output)
    assert summary["model_uri"].startswith("models:/predrnn-v2/")
    res = runner.invoke(app, ["evaluate", "--model", summary["model_uri"], "--data", tiny_dataset,
                              "--tracking-uri", tracking_uri, "--log", "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    out = last_json(res.output)
    assert out["test_mse"] == pytest.approx(summary["test_mse"], rel=1e-6) and out["run_id"]
    assert out["precision"] == "fp32"  # asked below; recorded on the evaluation's run
    assert MlflowClient(tracking_uri).get_run(out["run_id"]).data.params["precision"] == "fp32"
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "out" / "model"), "--data", tiny_dataset,
                              "--split", "val"])
    assert res.exit_code == 0 and "lead" in res.output, res.output


def test_warm_start_initialises_a_fresh_run_from_a_model(local_ray, tiny_dataset, tmp_path):
    import torch

    from predrnn.checkpoint import load_model_dir, save_model_dir
    from predrnn.models import build_model
    from predrnn.train import TrainError
    from predrnn.train.state import MODEL_DIR

    # A near-zero learning rate: the trained weights must stay those of the warm-start model.
    cfg = configure(tiny_config("optim.max_iterations=2", "optim.lr=1e-9", "optim.checkpoint_interval=2",
                                "optim.eval_interval=2"), workers=1)
    torch.manual_seed(123)  # differs from the run's own seed, so a fresh init would not match
    source = build_model(cfg)
    save_model_dir(tmp_path / "init", source, cfg)
    result = train(prepare(cfg, data=tiny_dataset, storage_path=str(tmp_path / "runs"),
                           init_weights=str(tmp_path / "init")))
    trained, _ = load_model_dir(Path(result.latest_checkpoint) / MODEL_DIR)
    torch.manual_seed(cfg.optim.seed)
    fresh = build_model(cfg)
    for (key, a), b, c in zip(source.state_dict().items(), trained.state_dict().values(),
                              fresh.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), key
        assert not torch.allclose(a, c), key
    # Weights of another architecture are refused before any worker starts.
    with pytest.raises(TrainError, match="warm-start weights do not fit the config"):
        train(prepare(configure(tiny_config("model.num_hidden=[4]"), workers=1), data=tiny_dataset,
                      storage_path=str(tmp_path / "runs2"), init_weights=str(tmp_path / "init")))
