"""Prefect flow ``tune``: validate, search (or resume a search) with Ray Tune, publish the trials table.

Each task calls one library function and returns something small (a config dict, a URI, the
search summary). The flow ends with a Prefect markdown artifact: one row per trial (searched
params, best validation MSE, iterations reached, stopped early or not) and the best config.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.train import check_tracking_task, validate_dataset_task


@task(name="load-config")
def load_config_task(preset: str, overrides: list[str], dataset: str, workers: int | None,
                     tracking_uri: str | None) -> dict[str, Any]:
    """The validated base config (unknown preset or override key fails here)."""
    from predrnn.config import load_config
    from predrnn.train import configure

    return configure(load_config(preset, None, overrides), data=dataset, workers=workers,
                     tracking_uri=tracking_uri).to_dict()


@task(name="check-space")
def check_space_task(cfg: dict[str, Any], space: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """The search space with overrides, checked against the config and the iteration budget."""
    from predrnn.config import ExperimentConfig
    from predrnn.tune import SearchSpace, TuneSettings, plan

    c = ExperimentConfig.from_dict(cfg)
    budget, _, _ = plan(c, TuneSettings(**settings))
    s = SearchSpace().with_overrides(space)
    s.check(c, budget)
    return s.to_dict()


@task(name="search")
def search_task(cfg: dict[str, Any], dataset: str, settings: dict[str, Any], space: dict[str, Any],
                tracking_uri: str, storage_path: str | None, name: str | None,
                out_dir: str | None) -> dict[str, Any]:
    """The Ray Tune search (Optuna TPE + ASHA over Ray Train trials); returns its summary."""
    from predrnn.config import ExperimentConfig
    from predrnn.tune import SearchSpace, TuneSettings, tune

    result = tune(ExperimentConfig.from_dict(cfg), data=dataset, settings=TuneSettings(**settings),
                  space=SearchSpace.from_dict(space), tracking_uri=tracking_uri, storage_path=storage_path,
                  name=name, out_dir=out_dir)
    return {**result.to_dict(), "markdown": result.markdown()}


@task(name="resume-search")
def resume_task(experiment_dir: str) -> dict[str, Any]:
    """Continue an interrupted search; finished trials are kept as they are."""
    from predrnn.tune import resume

    result = resume(experiment_dir)
    return {**result.to_dict(), "markdown": result.markdown()}


@task(name="publish-table")
def publish_task(summary: dict[str, Any]) -> str:
    """The Prefect markdown artifact with the trials table and the best config; returns its key."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"tune-{summary['name']}".lower()).strip("-")[:100]
    create_markdown_artifact(key=key, markdown=summary["markdown"],
                             description=f"Ray Tune search {summary['name']}: trials and best config")
    return key


@flow(name="tune")
def tune_flow(dataset: str = "", preset: str = "quick", trials: int = 8, max_iterations: int | None = None,
              concurrency: int = 1, overrides: list[str] | None = None, space: list[str] | None = None,
              evaluations: int = 8, grace_evaluations: int = 1, reduction_factor: int = 2, seed: int = 0,
              workers: int | None = None, tracking_uri: str | None = None, storage_path: str | None = None,
              name: str | None = None, out_dir: str | None = None, resume: str | None = None) -> dict[str, Any]:
    """Search the sampling schedules, decoupling weight and learning rate of ``preset`` on ``dataset``.

    Args:
        dataset: dataset version URI (``ROOT/NAME@VERSION``); not needed with ``resume``.
        preset: the base preset (``quick``, ``moving_mnist_v2``, ...).
        trials: number of trials.
        max_iterations: iteration budget per trial; default the preset's.
        concurrency: trials at once.
        overrides: config overrides ``section.field=value``.
        space: search range overrides ``name=[low,high]`` / ``name=value`` / ``name=null``.
        evaluations: validations per full trial (ASHA's rungs).
        grace_evaluations: evaluations before ASHA may stop a trial.
        reduction_factor: ASHA's halving rate.
        seed: TPE sampler seed.
        workers: Ray Train workers per trial.
        tracking_uri: MLflow store; default the local SQLite under ``.state/mlflow``.
        storage_path: Tune experiment storage; default ``.state/ray/tune``.
        name: experiment name.
        out_dir: folder for ``best_config.json`` and the tables; default the experiment directory.
        resume: the experiment directory of an interrupted search to continue (other inputs ignored).
    """
    log = get_run_logger()
    if resume:
        summary = resume_task(resume)
    else:
        settings = {"trials": trials, "max_iterations": max_iterations, "concurrency": concurrency,
                    "evaluations": evaluations, "grace_evaluations": grace_evaluations,
                    "reduction_factor": reduction_factor, "seed": seed}
        cfg = load_config_task(preset, list(overrides or []), dataset, workers, tracking_uri)
        checked_space = check_space_task(cfg, list(space or []), settings)
        info = validate_dataset_task(cfg, dataset)
        uri = check_tracking_task(tracking_uri)
        summary = search_task(cfg, info["uri"], settings, checked_space, uri, storage_path, name, out_dir)
    summary["artifact_key"] = publish_task(summary)
    best = summary.get("best") or {}
    log.info("search %s: %d trial(s) finished%s; best %s (val MSE/frame %s); best config %s", summary["name"],
             len(summary["trials"]), " (interrupted)" if summary["interrupted"] else "",
             best.get("trial_id"), best.get("best_val_mse"), summary.get("best_config_path"))
    return summary
