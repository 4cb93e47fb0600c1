"""The run lifecycle on real Ray Train and MLflow: resume extends the same run, fork starts a new one
from a run's training state, divergence stops training, and every MLflow run ends in a terminal state."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from train_helpers import TINY, last_json, tiny_config, train_workers

from predrnn.train import TrainError, configure, finish, prepare, train
from predrnn.train.state import META_FILE, MODEL_DIR, iteration_of

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow]


@pytest.fixture(scope="module")
def local_ray(short_tmp: str, s3_server):
    """The module's local Ray, started with the S3 server's credentials in its environment, as a door starts
    it (or as a cluster's nodes are configured): credentials are never carried in a spec, so Ray's own
    processes (the train controller opening the run storage, the workers) read them from theirs."""
    from train_helpers import free_port

    from predrnn.train.launch import ensure_ray, shutdown

    temp = os.path.join(short_tmp, f"r{free_port()}")
    os.makedirs(temp)
    saved = dict(os.environ)
    os.environ.update(s3_server.env())
    try:
        started = ensure_ray(None, num_cpus=2, temp_dir=temp)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield
    shutdown(started)


def _cli(*args: str):
    from typer.testing import CliRunner

    from predrnn.cli import app

    return CliRunner().invoke(app, list(args))


def _sets(*items: str) -> list[str]:
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


def _loss_steps(client, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "loss"))


def test_resume_extends_the_same_run_and_refuses_other_changes(local_ray, tiny_dataset, tracking_uri, tmp_path):
    from mlflow import MlflowClient

    common = ["--tracking-uri", tracking_uri, "--storage", str(tmp_path / "runs"), "--no-register",
              "--out", str(tmp_path / "out")]
    res = _cli("train", "--data", tiny_dataset, "--preset", "quick", "--workers", "1", *common,
               *_sets(*TINY, "optim.max_iterations=4"))
    assert res.exit_code == 0, res.output
    first = last_json(res.output)
    assert first["iterations"] == 4 and first["run_id"]
    client = MlflowClient(tracking_uri)
    assert client.get_run(first["run_id"]).info.status == "FINISHED"  # --no-register ends the run too

    # any change but a larger optim.max_iterations is refused, naming it, before anything starts
    t0 = time.perf_counter()
    res = _cli("train", "--resume", first["run_dir"], *common, *_sets("optim.lr=0.5", "optim.max_iterations=8"))
    assert res.exit_code == 2 and "refused: optim.lr 0.001 -> 0.5" in res.output, res.output
    assert time.perf_counter() - t0 < 10
    res = _cli("train", "--resume", first["run_dir"], "--preset", "quick", *common)
    assert res.exit_code == 2 and "drop --preset/--config" in res.output, res.output

    res = _cli("train", "--resume", first["run_dir"], *common, *_sets("optim.max_iterations=8"))
    assert res.exit_code == 0, res.output
    second = last_json(res.output)
    assert second["run_id"] == first["run_id"] and second["iterations"] == 8
    assert "iterations 5..8" in res.output
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["resume.max_iterations"] == "4 -> 8"
    assert _loss_steps(client, first["run_id"]) == list(range(1, 9))

    # nothing left to train is refused before anything starts (no re-evaluation, no new model version);
    # --data naming the run's own version as @latest is the same dataset, not a refused change
    t0 = time.perf_counter()
    latest = tiny_dataset.rsplit("@", 1)[0] + "@latest"
    res = _cli("train", "--resume", first["run_dir"], "--data", latest, *common, *_sets("optim.max_iterations=8"))
    assert res.exit_code == 2 and "already trained to iteration 8" in res.output, res.output
    assert time.perf_counter() - t0 < 10 and client.get_run(first["run_id"]).info.status == "FINISHED"


def test_fork_starts_a_new_run_from_the_training_state(local_ray, tiny_dataset, tracking_uri, tmp_path):
    from mlflow import MlflowClient

    parent = train(prepare(configure(tiny_config("optim.max_iterations=4"), workers=1), data=tiny_dataset,
                           tracking_uri=tracking_uri, storage_path=str(tmp_path / "runs")), log_every=1)

    class Broken:
        def open(self, *args, **kwargs):
            raise OSError("the dataset store went away")

    # a failure in the final evaluation ends the MLflow run FAILED with the error, not RUNNING
    with pytest.raises(OSError):
        finish(parent, out_dir=tmp_path / "p", source=Broken())
    client = MlflowClient(tracking_uri)
    run = client.get_run(parent.run_id)
    assert run.info.status == "FAILED" and "the dataset store went away" in run.data.tags["error"]
    res = _cli("train", "--fork", parent.run_dir, "--tracking-uri", tracking_uri, "--storage",
               str(tmp_path / "runs"), "--no-register", "--out", str(tmp_path / "f"),
               *_sets("optim.max_iterations=6", "optim.lr=0.0005"))
    assert res.exit_code == 0, res.output
    child = last_json(res.output)
    assert child["run_id"] != parent.run_id and child["iterations"] == 6
    run = client.get_run(child["run_id"])
    assert run.data.tags["fork.parent_run_id"] == parent.run_id and run.data.tags["fork.parent_iteration"] == "4"
    assert run.data.params["optim.lr"] == "0.0005" and run.info.status == "FINISHED"
    assert _loss_steps(client, child["run_id"]) == [5, 6]  # continues the parent's iterations
    assert [m.value for m in client.get_metric_history(child["run_id"], "lr")] == [0.0005, 0.0005]
    # a fork must train beyond the state it starts from
    res = _cli("train", "--fork", parent.run_dir, "--tracking-uri", tracking_uri, "--storage",
               str(tmp_path / "runs"), *_sets("optim.max_iterations=4"))
    assert res.exit_code == 2 and "latest checkpoint is at iteration 4" in res.output, res.output


def test_a_diverging_loss_stops_training_and_registers_nothing(local_ray, tiny_dataset, tracking_uri, tmp_path):
    from mlflow import MlflowClient

    res = _cli("train", "--data", tiny_dataset, "--preset", "quick", "--workers", "2", "--tracking-uri",
               tracking_uri, "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
               *_sets(*TINY, "optim.lr=1e30", "optim.max_iterations=20", "optim.checkpoint_interval=20"))
    assert res.exit_code == 2, res.output
    line = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "training diverged at iteration" in line[0] and "nothing was registered" in line[0]
    stopped = int(line[0].split("training diverged at iteration ")[1].split(":")[0])
    assert stopped < 20
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("predrnn").experiment_id])
    assert run.info.status == "FAILED" and "training diverged" in run.data.tags["error"]
    assert max(_loss_steps(client, run.info.run_id)) < stopped  # the non-finite loss itself is not logged
    assert client.search_model_versions("name='predrnn-v2'") == []
    assert not (tmp_path / "out" / "model").exists()


def _weights(checkpoint: str) -> dict[str, torch.Tensor]:
    from predrnn.checkpoint import load_model_dir

    model, _ = load_model_dir(Path(checkpoint) / MODEL_DIR)
    return model.state_dict()


def test_a_killed_run_resumes_from_its_latest_complete_checkpoint_exactly(local_ray, tiny_dataset, tracking_uri,
                                                                           tmp_path):
    """Checkpoints every 10, evaluation every 20 (checkpoints without an evaluation in between): a run
    killed after iter_20 resumes from the newest complete checkpoint on disk, and ends bit-identical to an
    uninterrupted run."""
    from mlflow import MlflowClient

    cfg = configure(tiny_config("optim.max_iterations=80", "optim.checkpoint_interval=10",
                                "optim.eval_interval=20", "optim.keep_best=2"), workers=1)
    reference = train(prepare(cfg, data=tiny_dataset, storage_path=str(tmp_path / "ref")), log_every=20)
    storage, name = tmp_path / "runs", "killed"
    killed: dict[str, int] = {}

    def killer() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            done = [p for p in (storage / name).glob("iter_*") if (p / META_FILE).exists()]
            if any((iteration_of(p.name) or 0) >= 20 for p in done):
                for pid in train_workers():
                    os.kill(pid, signal.SIGKILL)
                    killed["pid"] = pid
                return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with pytest.raises(TrainError):  # the worker died and no restart was allowed
        train(prepare(cfg, data=tiny_dataset, tracking_uri=tracking_uri, storage_path=str(storage), run_name=name),
                      max_failures=0, log_every=20)
    thread.join(timeout=5)
    assert "pid" in killed, "no worker was killed"
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("predrnn").experiment_id])
    assert run.info.status == "FAILED"
    complete = max(iteration_of(p.name) or 0 for p in (storage / name).glob("iter_*") if (p / META_FILE).exists())
    assert complete >= 20

    resumed = train(prepare(cfg, resume=str(storage / name), tracking_uri=tracking_uri), log_every=20)
    assert resumed.run_id == run.info.run_id
    assert client.get_run(resumed.run_id).info.status == "RUNNING"  # continued, until finish() ends it
    starts = client.get_metric_history(resumed.run_id, "resumed_from_iteration")
    assert [int(m.value) for m in starts] == [complete]
    assert iteration_of(resumed.latest_checkpoint) == 80
    ref, got = _weights(reference.latest_checkpoint), _weights(resumed.latest_checkpoint)
    for key, value in ref.items():
        assert torch.equal(value, got[key]), key


def test_a_run_on_s3_storage_with_the_project_s3_settings_resumes_in_the_same_run(local_ray, tiny_dataset,
                                                                                   tracking_uri, s3_env,
                                                                                   monkeypatch):
    """Run storage on S3 (SeaweedFS) with only the project's S3 settings (PREDRNN_S3_ENDPOINT_URL and the
    AWS keys; no AWS_ENDPOINT_URL): checkpoints and the run record land in the bucket, resume reads them
    back and continues the same MLflow run, and the final evaluation reads the best checkpoint from S3."""
    from mlflow import MlflowClient

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    storage = f"s3://{s3_env.bucket}/runs"
    cfg = configure(tiny_config("optim.max_iterations=4"), workers=1)
    from predrnn.settings import Settings

    s3 = Settings.s3()  # what a door reads: the project's PREDRNN_S3_ENDPOINT_URL
    first = train(prepare(cfg, data=tiny_dataset, tracking_uri=tracking_uri, storage_path=storage, run_name="ons3",
                          s3=s3))
    assert first.latest_checkpoint == f"{storage}/ons3/iter_0000004"
    keys = {o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix="runs/ons3/")["Contents"]}
    assert "runs/ons3/predrnn_run.json" in keys and any(k.startswith("runs/ons3/iter_0000004/") for k in keys)

    again = train(prepare(configure(tiny_config("optim.max_iterations=6"), workers=1), resume=f"{storage}/ons3",
                          tracking_uri=tracking_uri, s3=s3))
    assert again.run_id == first.run_id and again.latest_checkpoint == f"{storage}/ons3/iter_0000006.1"
    client = MlflowClient(tracking_uri)
    assert [int(m.value) for m in client.get_metric_history(first.run_id, "resumed_from_iteration")] == [4]
    summary = finish(again, out_dir=Path(tracking_uri.removeprefix("sqlite:///")).parent / "out", register=False)
    assert summary["iterations"] == 6 and client.get_run(first.run_id).info.status == "FINISHED"
