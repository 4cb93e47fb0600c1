"""``predrnn tune``: search the sampling schedules, decoupling weight and learning rate (Ray Tune + ASHA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from predrnn.tune import TuneResult


def _summary(result: TuneResult) -> dict[str, Any]:
    """The search's outcome as the JSON summary printed last."""
    return {"experiment_dir": result.experiment_dir, "trials_finished": len(result.trials),
            "interrupted": result.interrupted, "best_config": result.best_config_path,
            "best_val_mse": result.best["best_val_mse"] if result.best else None,
            "best_trial": result.best["trial_id"] if result.best else None,
            "tracking_uri": result.tracking_uri, "parent_run_id": result.parent_run_id,
            "wall_s": round(result.wall_s, 1)}


def tune_cmd(
    data: Annotated[str | None, typer.Option("--data", help="dataset version URI ROOT/NAME@VERSION "
                                             "(or @latest)")] = None,
    preset: Annotated[str, typer.Option("--preset", help="base preset, e.g. quick")] = "quick",
    trials: Annotated[int, typer.Option("--trials", help="number of trials (points sampled by TPE)")] = 8,
    max_iterations: Annotated[int | None, typer.Option(
        "--max-iterations", help="iteration budget per trial (schedules are searched as fractions of it; "
                                 "default: the preset's)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="trials at once (each needs its "
                                             "workers' CPUs; 1 on a 2-core machine)")] = 1,
    set_: Annotated[list[str] | None, typer.Option("--set", help="config override section.field=value "
                                                   "(repeatable)")] = None,
    space: Annotated[list[str] | None, typer.Option(
        "--space", help="search range name=[low,high], name=value (fixed) or name=null (not searched); "
                        "names: rss_step1_frac, rss_step2_frac, rss_curves, rss_alpha_frac, ss_stop_frac, "
                        "ss_rate_frac, decouple_beta, lr")] = None,
    evaluations: Annotated[int, typer.Option("--evaluations", help="validations per full trial "
                                             "(ASHA's rungs)")] = 8,
    grace: Annotated[int, typer.Option("--grace", help="evaluations before ASHA may stop a trial")] = 1,
    reduction_factor: Annotated[int, typer.Option("--reduction-factor", help="ASHA halving rate")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="TPE sampler seed")] = 0,
    workers: Annotated[int | None, typer.Option("--workers", help="Ray Train workers per trial")] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow store (default: "
                                                     "local SQLite under .state/mlflow)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="folder for best_config.json and the trials "
                                             "table (default: the experiment directory)")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Tune experiment storage (default "
                                                ".state/ray/tune)")] = None,
    name: Annotated[str | None, typer.Option("--name", help="experiment name (its directory)")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="experiment directory of an "
                                                "interrupted search to continue")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="existing Ray cluster "
                                                    "HOST:PORT (default: start a local one)")] = None,
) -> None:
    """Tune the RSS/SS schedules, decoupling beta and learning rate with Optuna TPE and ASHA on val MSE.

    Each trial trains with Ray Train; MLflow gets a parent run and one nested run per trial. The
    best config is written as JSON that `predrnn train --config FILE` accepts. Ctrl+C stops the
    search and keeps its state: continue with --resume DIR. The last line is a JSON summary.
    """
    import time

    from predrnn.settings import tool_env

    root = tool_env()
    from predrnn.config import load_config
    from predrnn.settings import Settings
    from predrnn.train import configure, prepare
    from predrnn.tune import SearchSpace, TuneSettings, tune
    from predrnn.tune import resume as resume_search
    from predrnn.tune.plan import check_search

    env = Settings()  # read once, here; everything below takes values
    address = ray_address or env.ray_address
    if resume is not None:
        result = resume_search(str(resume), ray_address=address, s3=env.s3())
    else:
        cfg = configure(load_config(preset, None, set_ or []), workers=workers)
        settings = TuneSettings(trials=trials, max_iterations=max_iterations, concurrency=concurrency,
                                evaluations=evaluations, grace_evaluations=grace,
                                reduction_factor=reduction_factor, seed=seed)
        search_space = SearchSpace().with_overrides(space or [])
        check_search(cfg, settings, search_space)
        spec = prepare(cfg, data=data, tracking_uri=env.tracking(tracking_uri), state_dir=root,
                       storage_path=storage or str(root / "ray" / "tune"), ray_address=address, s3=env.s3(),
                       run_name=name or f"tune-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}", need_test=False)
        result = tune(spec, settings=settings, space=search_space,
                      out_dir=str(out) if out else None)
    typer.echo(result.table())
    typer.echo(json.dumps(_summary(result)))
    if result.interrupted:
        raise typer.Exit(130)
