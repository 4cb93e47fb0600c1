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

from flows.settings import PipelineSettings
from flows.train import check_tracking_task, prepare_task


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
def search_task(spec: dict[str, Any], settings: dict[str, Any], space: dict[str, Any],
                out_dir: str | None) -> dict[str, Any]:
    """The Ray Tune search (Optuna TPE + ASHA over Ray Train trials); returns its summary."""
    from predrnn.train import RunSpec
    from predrnn.tune import SearchSpace, TuneSettings, tune

    result = tune(RunSpec.from_dict(spec), settings=TuneSettings(**settings), space=SearchSpace.from_dict(space),
                  out_dir=out_dir)
    return {**result.to_dict(), "markdown": result.markdown()}


@task(name="resume-search")
def resume_task(experiment_dir: str, ray_address: str | None, s3: dict[str, Any]) -> dict[str, Any]:
    """Continue an interrupted search; finished trials are kept as they are."""
    from predrnn.tune import resume

    result = resume(experiment_dir, ray_address=ray_address, s3=s3)
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
              name: str | None = None, out_dir: str | None = None, resume: str | None = None,
              ray_address: str | None = None) -> dict[str, Any]:
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
        tracking_uri: MLflow store; default ``$MLFLOW_TRACKING_URI``, else the local SQLite under the state folder.
        storage_path: Tune experiment storage; default ``STATE/ray/tune``.
        name: experiment name.
        out_dir: folder for ``best_config.json`` and the tables; default the experiment directory.
        resume: the experiment directory of an interrupted search to continue (other inputs ignored).
        ray_address: Ray cluster; default ``$PREDRNN_RAY_ADDRESS`` (the stack's head), else a local Ray.
    """
    import time

    log = get_run_logger()
    env = PipelineSettings()
    address = ray_address or env.ray_address
    if resume:
        summary = resume_task(resume, address, env.s3())
    else:
        settings = {"trials": trials, "max_iterations": max_iterations, "concurrency": concurrency,
                    "evaluations": evaluations, "grace_evaluations": grace_evaluations,
                    "reduction_factor": reduction_factor, "seed": seed}
        uri = check_tracking_task(env.tracking(tracking_uri))
        spec = prepare_task(preset, list(overrides or []), dataset, workers, tracking_uri=uri,
                            state_dir=str(env.state), storage_path=storage_path or str(env.state / "ray" / "tune"),
                            ray_address=address, s3=env.s3(), need_test=False,
                            run_name=name or f"tune-{preset}-{time.strftime('%Y%m%d-%H%M%S')}")
        checked_space = check_space_task(spec["cfg"], list(space or []), settings)
        summary = search_task(spec, settings, checked_space, out_dir)
    summary["artifact_key"] = publish_task(summary)
    best = summary.get("best") or {}
    log.info("search %s: %d trial(s) finished%s; best %s (val MSE/frame %s); best config %s", summary["name"],
             len(summary["trials"]), " (interrupted)" if summary["interrupted"] else "",
             best.get("trial_id"), best.get("best_val_mse"), summary.get("best_config_path"))
    return summary
