"""The tuning driver: Ray Tune drives a function that builds one Ray Train ``TorchTrainer`` per trial.

``tune()`` checks everything that can be checked without a trial (config, search space, iteration
budget, dataset, tracking store, cluster resources), opens the MLflow parent run and runs a
``Tuner`` with Optuna's TPE sampler (``OptunaSearch`` over a define-by-run space) and ASHA on the
validation MSE per frame. Each trial (:func:`run_trial`) opens a nested MLflow child run, then
trains with the same launch recipe and per-worker loop as ``predrnn train``
(:mod:`predrnn.train.launch`); that loop logs the child's curves and reports every evaluation, which
``TuneReportCallback`` forwards to Tune for ASHA. The plan is :mod:`predrnn.tune.plan`, the MLflow
record :mod:`predrnn.tune.recorder`.

``resume()`` continues an interrupted search with ``Tuner.restore``: finished trials are kept,
an unfinished one continues from its last Ray Train checkpoint, the searcher and scheduler state
are restored. Ray and MLflow are imported inside functions only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from predrnn.config import ExperimentConfig
from predrnn.data.store import S3Settings, keyless
from predrnn.train.spec import RunSpec
from predrnn.tune.plan import Search, TuneError, TuneResult, TuneSettings, check_search
from predrnn.tune.recorder import (
    close_parent,
    log_parent,
    open_child_run,
    open_parent,
    recorder_class,
    reopen_parent,
)
from predrnn.tune.report import best_record, read_records
from predrnn.tune.space import SearchSpace, apply_params

CONTEXT_FILE = "predrnn_tune.json"
BEST_CONFIG = "best_config.json"
TRIAL_CPU = 0.01  # the trial's driver function only waits on its TorchTrainer; Tune refuses 0


def check_resources(cfg: ExperimentConfig, concurrency: int) -> dict[str, float]:
    """What one trial needs; a TuneError when the running Ray cluster cannot hold ``concurrency`` of them."""
    import ray

    c = cfg.compute
    need = {"CPU": TRIAL_CPU + c.num_workers * c.cpus_per_worker}
    if c.gpus_per_worker > 0:
        need["GPU"] = c.num_workers * c.gpus_per_worker
    have = ray.cluster_resources()
    for key, amount in need.items():
        total = float(have.get(key, 0.0))
        if amount > total + 1e-9:
            raise TuneError(f"one trial needs {amount:g} {key} ({c.num_workers} worker(s) x "
                            f"{c.cpus_per_worker if key == 'CPU' else c.gpus_per_worker:g} + its driver) but the "
                            f"Ray cluster has {total:g}; lower compute.num_workers / cpus_per_worker / "
                            "gpus_per_worker or add nodes")
        if concurrency * amount > total + 1e-9:
            fit = max(1, int((total + 1e-9) // amount))
            raise TuneError(f"--concurrency {concurrency} needs {concurrency * amount:g} {key} "
                            f"({amount:g} per trial) but the Ray cluster has {total:g}; use --concurrency {fit}")
    return need


def run_trial(config: dict[str, Any], search: Search) -> None:
    """Tune's trainable: one PredRNN training on Ray Train for the point ``config``.

    The trial is a run of the search's spec with the point's config, in ``EXPERIMENT/train/trial-ID``,
    logging to a nested MLflow run (found again by trial id when the trial resumes).
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from predrnn.data.batches import ZarrSource
    from predrnn.train import launch
    from predrnn.train.loop import SELECTION, WorkerJob, train_loop_per_worker

    tctx = ray.tune.get_context()
    trial_id = tctx.get_trial_id()
    base = search.spec.cfg
    cfg = apply_params(base, config, search.budget, eval_interval=search.interval)
    cfg = dataclasses.replace(cfg, name=f"{base.name}-{trial_id}")
    run_id = open_child_run(search, cfg, trial_id, config) if search.spec.tracking_uri else None
    spec = dataclasses.replace(search.spec, cfg=cfg, storage_path=f"{search.experiment_dir}/train",
                               run_name=f"trial-{trial_id}", mlflow_run_id=run_id, tags={})
    job = WorkerJob(spec=spec, source=ZarrSource(spec.dataset.uri, spec.s3 or None), log_every=search.interval)
    trainer = launch.torch_trainer(train_loop_per_worker, job.config(), cfg, name=spec.run_name,
                                   storage_path=spec.storage_path, max_failures=search.settings.max_failures,
                                   num_to_keep=max(2, min(cfg.optim.keep_best, 3)), score_attribute=SELECTION,
                                   callbacks=[TuneReportCallback()])
    trainer.fit()


# ---------------------------------------------------------------------------------------------
# The search


def _trainable(search: Search) -> Any:
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, search=search), {"CPU": TRIAL_CPU})


def tune(spec: RunSpec, *, settings: TuneSettings | None = None, space: SearchSpace | None = None,
         out_dir: str | None = None, num_cpus: int | None = None) -> TuneResult:
    """Search the schedules, decoupling weight and learning rate of ``spec.cfg`` on ``spec.dataset``.

    Args:
        spec: the base run, resolved at the door by :func:`predrnn.train.prepare` (``need_test=False``):
            the experiment directory is ``spec.run_dir`` (a local folder), the search is recorded in
            MLflow when ``spec.tracking_uri`` is set (a parent run + one nested run per trial), Ray is
            ``spec.ray_address`` or a local cluster.
        settings: trials, budget, concurrency, ASHA; default :class:`TuneSettings()`.
        space: the ranges; default :class:`SearchSpace()`.
        out_dir: where ``best_config.json`` and the tables go; default the experiment directory.
        num_cpus: CPUs of a local cluster started here.

    Raises:
        ConfigError, SpaceError, TuneError: before any trial starts.
    """
    from predrnn.train import launch

    t0 = time.perf_counter()
    settings = settings or TuneSettings()
    space = space or SearchSpace()
    cfg = spec.cfg
    budget, interval, grace = check_search(cfg, settings, space)
    if "://" in spec.storage_path:
        raise TuneError(f"a search keeps its experiment in a local folder; got {spec.storage_path}")
    experiment_dir = Path(spec.run_dir).absolute()
    if (experiment_dir / CONTEXT_FILE).exists():
        raise TuneError(f"{experiment_dir} already holds a search; resume it with --resume or pick another --name")
    spec = dataclasses.replace(spec, storage_path=str(experiment_dir.parent))
    started = launch.ensure_ray(spec.ray_address, num_cpus=num_cpus, temp_dir=f"{spec.state_dir}/ray/tmp")
    try:
        check_resources(cfg, settings.concurrency)
    except TuneError:
        launch.shutdown(started)
        raise
    experiment_dir.mkdir(parents=True, exist_ok=True)
    parent = None
    if spec.tracking_uri:
        parent = open_parent(spec, cfg, {**{f"tune.{k}": json.dumps(v) for k, v in settings.to_dict().items()},
                                         "tune.budget": json.dumps(budget), "tune.eval_interval": json.dumps(interval),
                                         **{f"space.{k}": json.dumps(v) for k, v in space.to_dict().items()}},
                             str(experiment_dir))
    search = Search(spec=spec, settings=settings, space=space.to_dict(), budget=budget, interval=interval,
                    grace=grace, out_dir=str(Path(out_dir).absolute()) if out_dir else str(experiment_dir),
                    parent_run_id=parent)
    (experiment_dir / CONTEXT_FILE).write_text(json.dumps(search.to_dict(), indent=2, sort_keys=True))
    print(f"tune: {settings.trials} trial(s) of {budget} iterations (evaluation every {interval}, ASHA grace "
          f"{grace}), concurrency {settings.concurrency}; experiment {experiment_dir}", flush=True)
    return _run(_new_tuner(search, space), search, started, t0)


def _new_tuner(search: Search, space: SearchSpace) -> Any:
    import optuna
    from ray import tune as rtune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    s = search.settings
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = s.startup_trials if s.startup_trials is not None else max(1, min(10, s.trials // 2))
    searcher = OptunaSearch(space=space.define_by_run(search.spec.cfg, search.budget), metric="val_mse", mode="min",
                            sampler=optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup))
    scheduler = ASHAScheduler(time_attr="iteration", max_t=search.budget, grace_period=search.grace,
                              reduction_factor=s.reduction_factor)
    return rtune.Tuner(
        _trainable(search),
        tune_config=rtune.TuneConfig(metric="val_mse", mode="min", search_alg=searcher, scheduler=scheduler,
                                     num_samples=s.trials, max_concurrent_trials=s.concurrency),
        run_config=rtune.RunConfig(name=search.spec.run_name, storage_path=search.spec.storage_path, verbose=0,
                                   callbacks=[recorder_class()(search)]),
    )


def resume(experiment_dir: str, *, ray_address: str | None = None, num_cpus: int | None = None,
           s3: S3Settings | None = None) -> TuneResult:
    """Continue an interrupted search; finished trials are not run again.

    Args:
        experiment_dir: the search's folder (holding ``predrnn_tune.json``).
        ray_address: an existing cluster; default starts a local one.
        s3: the S3 settings of the dataset store, if the dataset is on S3 (read at the door).

    Raises:
        TuneError: ``experiment_dir`` is not a search started by :func:`tune`, or it cannot be restored.
    """
    from ray import tune as rtune

    from predrnn.train import launch

    t0 = time.perf_counter()
    path = Path(experiment_dir).absolute()
    ctx_file = path / CONTEXT_FILE
    if not ctx_file.is_file():
        raise TuneError(f"{path} is not a predrnn search directory (no {CONTEXT_FILE})")
    try:
        search = Search.from_dict(json.loads(ctx_file.read_text()))
    except (KeyError, TypeError, ValueError) as err:
        raise TuneError(f"{ctx_file} is not a search record of this version of predrnn: {err}") from err
    if not rtune.Tuner.can_restore(str(path)):
        raise TuneError(f"{path} holds no Tune experiment state to restore (did the search start any trial?)")
    search = dataclasses.replace(search, spec=dataclasses.replace(search.spec, ray_address=ray_address or None,
                                                                  s3=keyless(s3)))
    started = launch.ensure_ray(search.spec.ray_address, num_cpus=num_cpus, temp_dir=f"{search.spec.state_dir}/ray/tmp")
    try:
        check_resources(search.spec.cfg, search.settings.concurrency)
    except TuneError:
        launch.shutdown(started)
        raise
    reopen_parent(search)
    done = len(read_records(path))
    print(f"tune: resuming {path} ({done} of {search.settings.trials} trial(s) finished)", flush=True)
    tuner = rtune.Tuner.restore(str(path), trainable=_trainable(search), resume_unfinished=True,
                                resume_errored=False, restart_errored=False)
    return _run(tuner, search, started, t0)


def _run(tuner: Any, search: Search, started: bool, t0: float) -> TuneResult:
    from predrnn.train import launch

    try:
        tuner.fit()
    except Exception as err:
        close_parent(search, "FAILED", error=f"search failed: {err}")
        raise TuneError(f"search {search.experiment_dir} failed: {err}") from err
    except BaseException:  # SIGTERM or Ctrl-C: stopped, resumable with --resume
        launch.disarm_native_abort()
        close_parent(search, "KILLED", error="stopped (signal or interrupt)")
        raise
    finally:
        launch.shutdown(started)
    return finalize(search, wall_s=time.perf_counter() - t0)


def finalize(search: Search, *, wall_s: float = math.nan) -> TuneResult:
    """Tables, the best config (file + MLflow artifact) and the parent run's summary from the records."""
    records = read_records(search.experiment_dir)
    total = search.settings.trials
    interrupted = len(records) < total
    best = best_record(records)
    out = Path(search.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    best_cfg: dict[str, Any] | None = None
    best_path: str | None = None
    files: dict[str, str] = {}
    if best is not None:
        base = search.spec.cfg
        cfg = apply_params(base, best["params"], search.budget, eval_interval=search.interval)
        cfg = dataclasses.replace(cfg, name=f"{base.name}-tuned")
        best_cfg = cfg.to_dict()
        best_path = str(out / BEST_CONFIG)
        Path(best_path).write_text(cfg.to_json() + "\n")
        files["best_config"] = best_path
    result = TuneResult(name=search.spec.run_name, experiment_dir=search.experiment_dir,
                        dataset=search.spec.dataset.uri, tracking_uri=search.spec.tracking_uri,
                        parent_run_id=search.parent_run_id, settings=search.settings.to_dict(),
                        budget=search.budget, trials=records, best=best, best_config=best_cfg,
                        best_config_path=best_path, interrupted=interrupted, wall_s=wall_s)
    files["trials_json"] = str(out / "trials.json")
    files["summary_md"] = str(out / "tune_summary.md")
    Path(files["trials_json"]).write_text(json.dumps(records, indent=2, sort_keys=True))
    result.files = files
    Path(files["summary_md"]).write_text(result.markdown())
    if search.spec.tracking_uri and search.parent_run_id:
        log_parent(search, result, files)
    state = "interrupted" if interrupted else "finished"
    best_s = "-" if best is None else f"{best['trial_id']} val MSE/frame {best['best_val_mse']:.3f}"
    print(f"tune: search {state}: {len(records)}/{total} trial(s); best {best_s}", flush=True)
    return result


