"""A real search on 2 CPUs: Optuna TPE + ASHA over Ray Train trials, recorded in MLflow.

One search of 4 tiny trials serves every test here. It starts as ``predrnn tune`` in a subprocess
(attached to this module's Ray), is interrupted with Ctrl+C (SIGINT) once two trials have
finished, and is resumed through the Prefect flow ``tune``; the tests then check the resume, ASHA,
MLflow, the flow artifact and that the best config trains.

Each phase waits on state (records written, the process gone, the interrupted search's resources given
back to Ray) with a generous deadline rather than for a fixed time, so a slow, loaded machine only
makes it slower.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tune_helpers import TINY

from predrnn.config import load_config
from predrnn.train import prepare
from predrnn.tune import TuneError, TuneSettings, tune
from predrnn.tune.report import read_records

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow]

TRIALS, BUDGET = 4, 8
# deadlines for states that come in seconds on an idle machine and in minutes on a loaded one
FIRST_TRIALS_S, STOP_S, RELEASE_S = 900.0, 600.0, 600.0


def _wait_for(condition, what: str, deadline_s: float, failed=lambda: None, log: Path | None = None) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` past the deadline or when ``failed()`` says why."""
    end = time.monotonic() + deadline_s
    while not condition():
        why = failed()
        if why or time.monotonic() > end:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"{what}: {why or f'not within {deadline_s:.0f} s'}\n{tail}")
        time.sleep(0.5)


def _resources_released() -> bool:
    """Every CPU of the cluster is free again (the interrupted search's trial actors are gone)."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    return total > 0 and ray.available_resources().get("CPU", 0.0) >= total - 1e-6


def _checkpoints(train_dir: Path) -> dict[str, list[str]]:
    return {d.name: sorted(p.name for p in d.glob("iter_*")) for d in sorted(train_dir.iterdir()) if d.is_dir()}


@pytest.fixture(scope="module")
def search(local_ray, tune_dataset, tmp_path_factory):
    """Start, interrupt and resume one search; returns what each phase left."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.tune import tune_flow

    tmp = tmp_path_factory.mktemp("search")
    uri = f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}"
    exp_dir = tmp / "tune" / "s"
    cmd = [sys.executable, "-m", "predrnn.cli", "tune", "--data", tune_dataset, "--preset", "quick",
           "--trials", str(TRIALS), "--max-iterations", str(BUDGET), "--evaluations", "4",
           "--tracking-uri", uri, "--storage", str(tmp / "tune"), "--name", "s", "--ray-address", local_ray]
    for item in TINY:
        cmd += ["--set", item]
    env = {**os.environ, "PREDRNN_STATE_DIR": str(tmp / "state")}
    log = open(tmp / "cli.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    try:
        _wait_for(lambda: len(read_records(exp_dir)) >= 2, "search did not reach 2 finished trials", FIRST_TRIALS_S,
                  failed=lambda: proc.poll() is not None and f"the CLI exited with {proc.returncode}",
                  log=tmp / "cli.log")
        proc.send_signal(signal.SIGINT)  # Ctrl+C: Tune saves its state and stops
        _wait_for(lambda: proc.poll() is not None, "the interrupted search did not stop", STOP_S, log=tmp / "cli.log")
        rc = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    # the driver is gone; Ray releases its trial actors and placement groups a moment later (long on a loaded
    # machine): the resumed trials must not start into a cluster still held by them
    _wait_for(_resources_released, "Ray did not release the interrupted search's resources", RELEASE_S)
    cli_out = (tmp / "cli.log").read_text()
    before = read_records(exp_dir)
    ckpts_before = _checkpoints(exp_dir / "train")

    with prefect_test_harness(server_startup_timeout=300):  # a deadline on the server answering, not a wait
        summary = tune_flow(resume=str(exp_dir))
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[summary["artifact_key"]])))
    return {"rc": rc, "cli_out": cli_out, "before": before, "ckpts_before": ckpts_before, "summary": summary,
            "artifacts": artifacts, "exp_dir": exp_dir, "uri": uri, "tmp": tmp}


def test_interrupted_search_resumes_without_rerunning_finished_trials(search):
    before, summary = search["before"], search["summary"]
    assert search["rc"] == 130, search["cli_out"][-3000:]
    assert '"interrupted": true' in search["cli_out"]
    assert 2 <= len(before) < TRIALS
    after = {r["trial_id"]: r for r in summary["trials"]}
    assert len(after) == TRIALS and not summary["interrupted"]
    for rec in before:  # finished trials are kept as they were: same record, no new checkpoint
        assert after[rec["trial_id"]] == rec
        name = f"trial-{rec['trial_id']}"
        assert _checkpoints(search["exp_dir"] / "train")[name] == search["ckpts_before"][name]
    # each of the 4 trials trained in its own Ray Train run
    assert len(_checkpoints(search["exp_dir"] / "train")) == TRIALS


def test_asha_stopped_a_trial_early(search):
    trials = search["summary"]["trials"]
    assert all(r["status"] == "TERMINATED" for r in trials)
    early = [r for r in trials if r["stopped_early"]]
    assert early, trials
    assert all(r["iterations"] < BUDGET for r in early)
    assert any(r["iterations"] == BUDGET for r in trials)


def test_mlflow_parent_and_nested_trial_runs(search):
    from mlflow import MlflowClient

    summary = search["summary"]
    client = MlflowClient(search["uri"])
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_finished"] == TRIALS
    assert parent.data.metrics["best_val_mse"] == pytest.approx(summary["best"]["best_val_mse"])
    assert parent.data.params["tune.trials"] == str(TRIALS)
    assert float(parent.data.params["best.lr"]) == pytest.approx(summary["best"]["params"]["lr"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"best_config.json", "trials.json",
                                                                           "tune_summary.md"}
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == TRIALS
    by_trial = {r["trial_id"]: r for r in summary["trials"]}
    for child in children:
        rec = by_trial[child.data.tags["tune.trial_id"]]
        assert child.info.status == "FINISHED"
        assert child.data.tags["tune.stopped_early"] == str(rec["stopped_early"]).lower()
        assert child.data.metrics["best_val_mse"] == pytest.approx(rec["best_val_mse"])
        assert {"loss", "r_eta", "eta", "val_mse", "val_mse_f01"} <= set(child.data.metrics)
        curve = client.get_metric_history(child.info.run_id, "val_mse")
        # the worker may log an evaluation or two after ASHA's stop before it is torn down
        seen = [m.value for m in curve if m.step <= rec["iterations"]]
        assert seen and min(seen) == pytest.approx(rec["best_val_mse"])
        assert float(child.data.params["optim.lr"]) == pytest.approx(rec["params"]["lr"])
        assert child.data.params["optim.max_iterations"] == str(BUDGET)
        assert child.data.params["search.lr"]


def test_flow_publishes_the_trials_table(search):
    (artifact,) = search["artifacts"]
    md = artifact.data
    assert "| trial |" in md and "stopped early" in md and "## Best config" in md
    for rec in search["summary"]["trials"]:
        assert rec["trial_id"] in md
    assert "(best)" in md


def test_best_config_trains(search, tune_dataset):
    from predrnn.train import prepare, train
    from predrnn.train.state import iteration_of

    path = Path(search["summary"]["best_config_path"])
    data = json.loads(path.read_text())
    assert data["optim"]["max_iterations"] == BUDGET and data["data"]["dataset"] == tune_dataset
    cfg = load_config(None, str(path), ["optim.max_iterations=4"])
    s = cfg.sampling
    assert s.r_sampling_step_1 < s.r_sampling_step_2
    result = train(prepare(cfg, storage_path=str(search["tmp"] / "retrain")))
    assert iteration_of(result.latest_checkpoint) == 4


def test_unsatisfiable_resources_fail_before_any_trial(local_ray, tune_dataset, tmp_path):
    cfg = load_config("quick", overrides=[*TINY, "compute.cpus_per_worker=3"])
    storage = tmp_path / "tune"
    with pytest.raises(TuneError, match="one trial needs 3.01 CPU .* the Ray cluster has 2"):
        tune(prepare(cfg, data=tune_dataset, storage_path=str(storage), run_name="big", need_test=False),
             settings=TuneSettings(trials=2, max_iterations=8))
    cfg = load_config("quick", overrides=TINY)
    with pytest.raises(TuneError, match="--concurrency 2 needs 2.02 CPU .* use --concurrency 1"):
        tune(prepare(cfg, data=tune_dataset, storage_path=str(storage), run_name="wide", need_test=False),
             settings=TuneSettings(trials=2, max_iterations=8, concurrency=2))
    assert not storage.exists() or not any(storage.rglob("experiment_state*"))
