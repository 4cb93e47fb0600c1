"""Prefect flow ``train``: validate, train on Ray Train, evaluate and register, each step a task.

Tasks return small serialisable values (dicts of paths, URIs and metrics); tensors never cross
task boundaries. Only the tracking-store check retries (it is the one I/O step worth retrying).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task


@task(name="load-config")
def load_config_task(preset: str, overrides: list[str], dataset: str, workers: int,
                     tracking_uri: str | None) -> dict[str, Any]:
    """The validated experiment config (unknown preset or override key fails here)."""
    from predrnn.config import load_config
    from predrnn.train import configure

    cfg = configure(load_config(preset, None, overrides), data=dataset, workers=workers,
                    tracking_uri=tracking_uri)
    return cfg.to_dict()


@task(name="validate-dataset")
def validate_dataset_task(cfg: dict[str, Any], dataset: str, need_test: bool = False) -> dict[str, Any]:
    """The dataset version checked against the config before any worker starts (with ``need_test``, also
    that it has the test split the final evaluation uses)."""
    from predrnn.config import ExperimentConfig
    from predrnn.train import validate_dataset

    c = ExperimentConfig.from_dict(cfg)
    return validate_dataset(c, dataset, world_size=c.compute.num_workers, need_test=need_test).to_dict()


@task(name="check-tracking", retries=2, retry_delay_seconds=5)
def check_tracking_task(tracking_uri: str | None) -> str:
    """The resolved MLflow URI, after checking that the store answers."""
    from predrnn.tracking import check_tracking, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking(uri)
    return uri


@task(name="train-ray")
def train_task(cfg: dict[str, Any], dataset: str, tracking_uri: str,
               storage_path: str | None) -> dict[str, Any]:
    """Distributed training; returns the run directory, checkpoints and MLflow run id."""
    from predrnn.config import ExperimentConfig
    from predrnn.train import train

    result = train(ExperimentConfig.from_dict(cfg), data=dataset, tracking_uri=tracking_uri,
                   storage_path=storage_path)
    return result.to_dict()


@task(name="evaluate-and-register")
def finish_task(result: dict[str, Any], out_dir: str, split: str = "test") -> dict[str, Any]:
    """Test metrics, pictures, the MLflow model and its registry version (alias ``challenger``)."""
    from predrnn.train import finish
    from predrnn.train.driver import TrainResult

    return finish(TrainResult.from_dict(result), out_dir=out_dir, split=split)


@flow(name="train")
def train_flow(dataset: str, preset: str = "quick", overrides: list[str] | None = None, workers: int = 2,
               tracking_uri: str | None = None, storage_path: str | None = None,
               out_dir: str | None = None) -> dict[str, Any]:
    """Train ``preset`` on ``dataset`` with ``workers`` Ray Train workers and register the model.

    Args:
        dataset: dataset version URI (``ROOT/NAME@VERSION`` or ``@latest``).
        preset: a named preset (``quick``, ``moving_mnist_v2``, ...).
        overrides: ``section.field=value`` strings.
        workers: Ray Train workers; ``optim.batch_size`` is the global batch.
        tracking_uri: MLflow store; default the local SQLite under ``.state/mlflow``.
        storage_path: Ray run storage; default ``.state/ray/results``.
        out_dir: folder for the GIF, plots and metrics; default ``.state/runs/<run>``.
    """
    from pathlib import Path

    from predrnn.tracking import state_dir

    log = get_run_logger()
    cfg = load_config_task(preset, list(overrides or []), dataset, workers, tracking_uri)
    info = validate_dataset_task(cfg, dataset, need_test=True)
    log.info("dataset %s: %s clips (train %s, val %s, test %s)", info["uri"], info["shape"][0],
             info["splits"]["train"], info["splits"]["val"], info["splits"]["test"])
    uri = check_tracking_task(tracking_uri)
    result = train_task(cfg, info["uri"], uri, storage_path)
    out = out_dir or str(state_dir() / "runs" / Path(result["run_dir"]).name)
    summary = finish_task(result, out)
    log.info("registered %s (test MSE/frame %.2f vs persistence %.2f)", summary.get("model_uri"),
             summary["test_mse"], summary["persistence_mse"])
    return summary
