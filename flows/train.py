"""Prefect flow ``train``: resolve the run, train on Ray Train, evaluate and register, each step a task.

The flow is a door: it reads the settings once (:class:`flows.settings.PipelineSettings`), resolves
the run into a :class:`predrnn.train.RunSpec` (config, dataset version, MLflow store, Ray address)
and hands that to the tasks. Tasks return small serialisable values (dicts of paths, URIs and
metrics); tensors never cross task boundaries. Only the tracking-store check retries (it is the one
I/O step worth retrying).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.progress import TRAIN_PHASES, Phases, TrainingProgress, link_model_version
from flows.settings import PipelineSettings
from flows.settle import settle_task


@task(name="check-tracking", retries=2, retry_delay_seconds=5)
def check_tracking_task(tracking_uri: str) -> str:
    """The MLflow URI, after checking that the store answers."""
    from predrnn.tracking import check_tracking

    check_tracking(tracking_uri)
    return tracking_uri


@task(name="prepare-run")
def prepare_task(preset: str, overrides: list[str], dataset: str, workers: int | None, *, tracking_uri: str | None,
                 state_dir: str, storage_path: str | None = None, ray_address: str | None = None,
                 s3: dict[str, Any] | None = None, run_name: str | None = None, init_weights: str | None = None,
                 need_test: bool = True) -> dict[str, Any]:
    """The run resolved once (:func:`predrnn.train.prepare`): an unknown preset or key, a dataset that
    does not fit (frames, clip length, splits) or an unreachable store fails here, before any worker."""
    from predrnn.config import load_config
    from predrnn.train import configure, prepare

    cfg = configure(load_config(preset, None, overrides), workers=workers)
    spec = prepare(cfg, data=dataset, tracking_uri=tracking_uri, storage_path=storage_path, state_dir=state_dir,
                   ray_address=ray_address, s3=s3, run_name=run_name, init_weights=init_weights, need_test=need_test)
    return spec.to_dict()


@task(name="train-ray")
def train_task(spec: dict[str, Any], phases: dict[str, Any] | None = None) -> dict[str, Any]:
    """Distributed training; returns the run directory, checkpoints and MLflow run id. Its progress (the
    flow's ``phases``) is the Prefect progress artifact and flow-run log lines; the MLflow run a markdown
    artifact."""
    from predrnn.train import RunSpec, train

    run = RunSpec.from_dict(spec)
    steps = Phases.from_dict(phases) or Phases.create("train", TRAIN_PHASES)
    with TrainingProgress(steps, run.cfg.optim.max_iterations, run.tracking_uri) as progress:
        return train(run, on_start=progress.start).to_dict()


@task(name="evaluate-and-register")
def finish_task(result: dict[str, Any], out_dir: str, split: str = "test",
                s3: dict[str, Any] | None = None, phases: dict[str, Any] | None = None) -> dict[str, Any]:
    """Test metrics, pictures, the MLflow model and its registry version (alias ``challenger``); the
    flow's ``phases`` enter ``evaluating`` and ``registering``."""
    from predrnn.train import finish
    from predrnn.train.driver import TrainResult

    steps = Phases.from_dict(phases)
    return finish(TrainResult.from_dict(result), out_dir=out_dir, split=split, s3=s3,
                  on_phase=steps.enter if steps is not None else None)


@flow(name="train")
def train_flow(dataset: str, preset: str = "quick", overrides: list[str] | None = None, workers: int = 2,
               tracking_uri: str | None = None, storage_path: str | None = None,
               out_dir: str | None = None, ray_address: str | None = None) -> dict[str, Any]:
    """Train ``preset`` on ``dataset`` with ``workers`` Ray Train workers and register the model.

    Args:
        dataset: dataset version URI (``ROOT/NAME@VERSION`` or ``@latest``).
        preset: a named preset (``quick``, ``moving_mnist_v2``, ...).
        overrides: ``section.field=value`` strings.
        workers: Ray Train workers; ``optim.batch_size`` is the global batch.
        tracking_uri: MLflow store; default ``$MLFLOW_TRACKING_URI``, else the local SQLite under the state folder.
        storage_path: Ray run storage; default ``STATE/ray/results``.
        out_dir: folder for the GIF, plots and metrics; default ``STATE/runs/<run>``.
        ray_address: Ray cluster; default ``$PREDRNN_RAY_ADDRESS`` (the stack's head), else a local Ray.
    """
    from pathlib import Path

    log = get_run_logger()
    settings = PipelineSettings()
    s3 = settings.s3()
    phases = Phases.create("train", TRAIN_PHASES)
    phases.enter("resolving the run")
    uri = check_tracking_task(settings.tracking(tracking_uri))
    settle_task(uri)  # MLflow runs (and task runs) a crashed earlier run left running end now
    spec = prepare_task(preset, list(overrides or []), dataset, workers, tracking_uri=uri,
                        state_dir=str(settings.state), storage_path=storage_path,
                        ray_address=ray_address or settings.ray_address, s3=s3)
    info = spec["dataset"]
    log.info("dataset %s: %s clips (train %s, val %s, test %s)", info["uri"], info["shape"][0],
             info["splits"]["train"], info["splits"]["val"], info["splits"]["test"])
    result = train_task(spec, phases.to_dict())
    out = out_dir or str(settings.state / "runs" / Path(result["run_dir"]).name)
    summary = finish_task(result, out, s3=s3, phases=phases.to_dict())
    if summary.get("model_version"):
        link_model_version(uri, summary["registered_model"], summary["model_version"])
    phases.done(f"registered {summary.get('model_uri')}" if summary.get("model_uri") else "done")
    log.info("registered %s (test MSE/frame %.2f vs persistence %.2f)", summary.get("model_uri"),
             summary["test_mse"], summary["persistence_mse"])
    return summary
