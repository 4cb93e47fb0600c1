"""The tuning driver: Ray Tune drives a function that builds one Ray Train ``TorchTrainer`` per trial.

``tune()`` checks everything that can be checked without a trial (config, search space, iteration
budget, dataset, tracking store, cluster resources), opens the MLflow parent run and runs a
``Tuner`` with Optuna's TPE sampler (``OptunaSearch`` over a define-by-run space) and ASHA on the
validation MSE per frame. Each trial (:func:`run_trial`) opens a nested MLflow child run, then
trains with the same per-worker loop as ``predrnn train``; that loop logs the child's curves and
reports every evaluation, which ``TuneReportCallback`` forwards to Tune for ASHA.

``resume()`` continues an interrupted search with ``Tuner.restore``: finished trials are kept,
an unfinished one continues from its last Ray Train checkpoint, the searcher and scheduler state
are restored. Ray and MLflow are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predrnn.config import ConfigError, ExperimentConfig
from predrnn.errors import PredrnnError
from predrnn.tracking import state_dir
from predrnn.tune.report import append_record, best_record, read_records, summary_markdown, trials_markdown
from predrnn.tune.space import SearchSpace, apply_params

CONTEXT_FILE = "predrnn_tune.json"
BEST_CONFIG = "best_config.json"
TRIAL_CPU = 0.01  # the trial's driver function only waits on its TorchTrainer; Tune refuses 0


class TuneError(PredrnnError, RuntimeError):
    """A search could not start (cluster, budget, resume path) or failed."""


@dataclass(frozen=True)
class TuneSettings:
    """How the search runs (the space itself is :class:`~predrnn.tune.space.SearchSpace`).

    Attributes:
        trials: number of trials (points sampled).
        max_iterations: each trial's iteration budget; ``None`` keeps the preset's.
        concurrency: trials run at once (each needs its TorchTrainer's workers).
        evaluations: validations per full-length trial; ASHA's rungs sit on them.
        grace_evaluations: evaluations every trial gets before ASHA may stop it.
        reduction_factor: ASHA's halving rate.
        seed: seeds the TPE sampler.
        startup_trials: random trials before TPE models the results; default half the trials (<= 10).
        max_failures: worker-group restarts per trial.
    """

    trials: int = 8
    max_iterations: int | None = None
    concurrency: int = 1
    evaluations: int = 8
    grace_evaluations: int = 1
    reduction_factor: int = 2
    seed: int = 0
    startup_trials: int | None = None
    max_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TuneResult:
    """What a search left: records per trial, the best one and where things are."""

    name: str
    experiment_dir: str
    dataset: str
    tracking_uri: str | None
    parent_run_id: str | None
    settings: dict[str, Any]
    budget: int
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    best_config: dict[str, Any] | None
    best_config_path: str | None
    interrupted: bool
    wall_s: float
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> str:
        return trials_markdown(self.trials, self.budget)

    def markdown(self) -> str:
        return summary_markdown(self.to_dict())


def plan(cfg: ExperimentConfig, settings: TuneSettings) -> tuple[int, int, int]:
    """``(budget, eval_interval, grace_period)`` in iterations, or a ConfigError before anything starts."""
    if settings.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {settings.trials}")
    if settings.concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {settings.concurrency}")
    if settings.evaluations < 1 or settings.grace_evaluations < 1 or settings.reduction_factor < 2:
        raise ConfigError("evaluations and grace_evaluations must be >= 1 and reduction_factor >= 2")
    budget = settings.max_iterations or cfg.optim.max_iterations
    if budget < 2:
        raise ConfigError(f"an iteration budget of {budget} is too small: a trial needs at least 2 iterations "
                          "(r_sampling_step_1 < r_sampling_step_2) and one evaluation")
    interval = max(1, budget // settings.evaluations)
    grace = interval * settings.grace_evaluations
    if grace > budget:
        raise ConfigError(f"an iteration budget of {budget} is too small for {settings.grace_evaluations} "
                          f"evaluation(s) every {interval} iterations before ASHA's first rung")
    return budget, interval, grace


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


# ---------------------------------------------------------------------------------------------
# Ray


def export_cluster_address() -> None:
    """Ray worker setup hook: put the cluster's GCS address in ``RAY_ADDRESS`` of every worker process.

    Ray Train's placement-group cleaner (which frees a trial's CPUs when Tune stops the trial) finds
    its cluster by address auto-detection, which fails when several Ray instances run on one
    machine; the stopped trial's CPUs would then stay reserved and the next trial would time out.
    """
    import ray

    with contextlib.suppress(Exception):  # not connected yet: auto-detection stays as it was
        os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def _ensure_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to (or start) Ray; True when this call started or connected it (and must shut it down)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}.items():
        os.environ.setdefault(key, value)
    runtime_env = {"worker_process_setup_hook": export_cluster_address}
    if address:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING, runtime_env=runtime_env)
        return True
    temp = os.environ.get("PREDRNN_RAY_TEMP_DIR") or str(state_dir() / "ray" / "tmp")
    if len(temp) > 60:  # Ray's socket paths have a length limit
        temp = tempfile.mkdtemp(prefix="predrnn-ray-")
    Path(temp).mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", _temp_dir=temp,
             log_to_driver=True, configure_logging=True, logging_level=logging.WARNING, runtime_env=runtime_env)
    return True


def run_trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """Tune's trainable: one PredRNN training on Ray Train for the point ``config``.

    ``context`` is the search's fixed part (base config, dataset, budget, tracking); see
    :func:`_context`. The child MLflow run is found again by trial id when a trial resumes.
    """
    import ray.tune
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from predrnn.train.data import ZarrSource
    from predrnn.train.loop import train_loop_per_worker

    tctx = ray.tune.get_context()
    trial_id = tctx.get_trial_id()
    base = ExperimentConfig.from_dict(context["cfg"])
    cfg = apply_params(base, config, context["budget"], eval_interval=context["interval"])
    cfg = dataclasses.replace(cfg, name=f"{base.name}-{trial_id}")
    run_id = None
    if context.get("tracking_uri"):
        run_id = _child_run(context, cfg, trial_id, tctx.get_trial_name(), config)
    c = cfg.compute
    use_gpu = c.gpus_per_worker > 0
    resources = {"CPU": c.cpus_per_worker, **({"GPU": c.gpus_per_worker} if use_gpu else {})}
    loop_config = {"cfg": cfg.to_dict(), "source": ZarrSource(context["dataset"]["uri"]),
                   "dataset": context["dataset"], "tracking_uri": context.get("tracking_uri"),
                   "mlflow_run_id": run_id, "log_every": context["interval"]}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=c.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(  # type: ignore[call-arg]  # Train V2's RunConfig (typed as V1's)
            name=f"trial-{trial_id}", storage_path=context["train_storage"],
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # a Train V2 UserCallback
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
            logging_config=LoggingConfig(log_level="WARNING"),
            failure_config=FailureConfig(max_failures=context["max_failures"]),
            checkpoint_config=CheckpointConfig(num_to_keep=max(2, min(cfg.optim.keep_best, 3)),
                                               checkpoint_score_attribute="val_mse",
                                               checkpoint_score_order="min"),
        ),
    )
    trainer.fit()


def _child_run(context: dict[str, Any], cfg: ExperimentConfig, trial_id: str, trial_name: str,
               params: dict[str, Any]) -> str:
    """The trial's nested MLflow run: created once, reopened when the trial resumes."""
    from mlflow.entities import Param

    from predrnn.tracking import Tracker

    tracker = Tracker(context["tracking_uri"], check=False)
    existing = _find_child(tracker, context, trial_id)
    if existing is not None:
        tracker.client.update_run(existing, status="RUNNING")
        return existing
    run_id = tracker.start_run(cfg, dataset=context["dataset"], run_name=f"{context['name']}-{trial_id}",
                               tags={"mlflow.parentRunId": context["parent_run_id"], "tune.trial_id": trial_id,
                                     "tune.experiment_dir": context["experiment_dir"], "tune.role": "trial"})
    tracker.client.log_batch(run_id, params=[Param(f"search.{k}", str(v)) for k, v in sorted(params.items())])
    return run_id


def _find_child(tracker: Any, context: dict[str, Any], trial_id: str) -> str | None:
    exp = tracker.experiment_id(context["experiment"])
    runs = tracker.client.search_runs(
        [exp], filter_string=f"tags.`tune.trial_id` = '{trial_id}' and "
                             f"tags.`mlflow.parentRunId` = '{context['parent_run_id']}'", max_results=1)
    return runs[0].info.run_id if runs else None


def _callback_class() -> type:
    from ray.tune import Callback

    class TrialRecorder(Callback):
        """Main-process side: closes each child run and appends the trial's record as trials end."""

        def __init__(self, context: dict[str, Any]) -> None:
            self.context = context

        def _record(self, trial: Any, status: str) -> None:
            ctx = self.context
            last = trial.last_result or {}
            analysis = (trial.metric_analysis or {}).get("val_mse", {})
            best = float(analysis.get("min", math.nan))
            its = int(last.get("iteration", 0) or 0)
            early = status == "TERMINATED" and its < ctx["budget"]
            rec = {"trial_id": trial.trial_id, "params": dict(trial.config), "best_val_mse": best,
                   "last_val_mse": float(last.get("val_mse", math.nan)), "iterations": its,
                   "stopped_early": early, "status": status, "child_run_id": None}
            if ctx.get("tracking_uri"):
                rec["child_run_id"] = _close_child(ctx, trial.trial_id, rec)
            append_record(ctx["experiment_dir"], rec)
            done = len(read_records(ctx["experiment_dir"]))
            val = "nan" if not math.isfinite(best) else f"{best:.3f}"
            print(f"tune: trial {done}/{ctx['settings']['trials']} {trial.trial_id} {status.lower()}: best val "
                  f"MSE/frame {val} at {its}/{ctx['budget']} iterations"
                  f"{' (stopped early by ASHA)' if early else ''}", flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial, "TERMINATED")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial, "ERROR")

    TrialRecorder.__module__ = __name__
    TrialRecorder.__qualname__ = "TrialRecorder"
    return TrialRecorder


def recorder_class() -> type:
    """The Tune callback class (built on first use; it subclasses Ray's ``Callback``)."""
    return globals().get("TrialRecorder") or __getattr__("TrialRecorder")


def __getattr__(name: str) -> Any:
    # The callback subclasses Ray's, so it is built on first use (also when a restored Tuner unpickles it).
    if name == "TrialRecorder":
        cls = _callback_class()
        globals()["TrialRecorder"] = cls
        return cls
    raise AttributeError(name)


def _close_child(ctx: dict[str, Any], trial_id: str, rec: dict[str, Any]) -> str | None:
    from predrnn.tracking import Tracker

    try:
        tracker = Tracker(ctx["tracking_uri"], check=False)
        run_id = _find_child(tracker, ctx, trial_id)
        if run_id is None:
            return None
        metrics = {k: rec[k] for k in ("best_val_mse", "last_val_mse") if math.isfinite(rec[k])}
        metrics["iterations_reached"] = float(rec["iterations"])
        tracker.log_metrics(run_id, metrics, step=rec["iterations"])
        tracker.set_tags(run_id, {"tune.stopped_early": str(rec["stopped_early"]).lower(),
                                  "tune.status": rec["status"]})
        tracker.end_run(run_id, "FINISHED" if rec["status"] == "TERMINATED" else "FAILED")
        return run_id
    except Exception as err:  # a tracking outage must not kill the search; the record still lands
        print(f"warning: closing the MLflow run of trial {trial_id} failed: {err}", file=sys.stderr, flush=True)
        return None


# ---------------------------------------------------------------------------------------------
# The search


def _context(cfg: ExperimentConfig, *, dataset: dict[str, Any], settings: TuneSettings, space: SearchSpace,
             budget: int, interval: int, grace: int, tracking_uri: str | None, parent_run_id: str | None,
             experiment_dir: str, storage_path: str, name: str, out_dir: str) -> dict[str, Any]:
    return {"cfg": cfg.to_dict(), "dataset": dataset, "settings": settings.to_dict(), "space": space.to_dict(),
            "budget": budget, "interval": interval, "grace": grace, "tracking_uri": tracking_uri,
            "parent_run_id": parent_run_id, "experiment": cfg.tracking.experiment,
            "experiment_dir": experiment_dir, "storage_path": storage_path, "name": name,
            "train_storage": str(Path(experiment_dir) / "train"), "out_dir": out_dir,
            "max_failures": settings.max_failures}


def _trainable(context: dict[str, Any]) -> Any:
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, context=context), {"CPU": TRIAL_CPU})


def tune(cfg: ExperimentConfig, *, data: str | None = None, settings: TuneSettings | None = None,
         space: SearchSpace | None = None, tracking_uri: str | None = None, track: bool = True,
         storage_path: str | None = None, name: str | None = None, out_dir: str | None = None,
         ray_address: str | None = None, num_cpus: int | None = None) -> TuneResult:
    """Search the schedules, decoupling weight and learning rate of ``cfg`` on ``data``.

    Args:
        cfg: the base experiment (a preset with overrides).
        data: dataset version URI; default ``cfg.data.dataset``.
        settings: trials, budget, concurrency, ASHA; default :class:`TuneSettings()`.
        space: the ranges; default :class:`SearchSpace()`.
        tracking_uri: MLflow store; default ``cfg.tracking.tracking_uri``, then the local SQLite.
        track: record the search in MLflow (parent run + one nested run per trial).
        storage_path: where Tune keeps experiments; default ``.state/ray/tune``.
        name: the experiment name (its directory); default ``tune-<preset>-<time>``.
        out_dir: where ``best_config.json`` and the tables go; default the experiment directory.
        ray_address: an existing cluster; default starts a local one.
        num_cpus: CPUs of a local cluster started here.

    Raises:
        ConfigError, SpaceError, DatasetError, TrackingError, TuneError: before any trial starts.
    """
    from predrnn.tracking import Tracker, resolve_tracking_uri
    from predrnn.train import configure, validate_dataset

    t0 = time.perf_counter()
    settings = settings or TuneSettings()
    space = space or SearchSpace()
    cfg = configure(cfg, data=data or cfg.data.dataset)
    budget, interval, grace = plan(cfg, settings)
    space.define_by_run(cfg, budget)  # checks the space against this config and budget
    apply_params(cfg, {}, budget, eval_interval=interval)  # the rescaled preset itself must be valid
    info = validate_dataset(cfg, cfg.data.dataset, world_size=cfg.compute.num_workers)
    if info.values:  # what the values are comes from the dataset (units, training-split normalisation)
        from predrnn.values import with_values

        cfg = with_values(cfg, info.values)
    uri = resolve_tracking_uri(tracking_uri or cfg.tracking.tracking_uri) if track else None
    tracker = Tracker(uri) if uri else None

    storage_path = str(Path(storage_path or state_dir() / "ray" / "tune").absolute())
    name = name or f"tune-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment_dir = str(Path(storage_path) / name)
    if (Path(experiment_dir) / CONTEXT_FILE).exists():
        raise TuneError(f"{experiment_dir} already holds a search; resume it with --resume or pick another --name")
    started = _ensure_ray(ray_address, num_cpus)
    try:
        check_resources(cfg, settings.concurrency)
    except TuneError:
        if started:
            import ray

            ray.shutdown()
        raise
    Path(experiment_dir).mkdir(parents=True, exist_ok=True)
    parent = None
    if tracker is not None:
        parent = tracker.start_run(cfg, dataset=info.to_dict(), run_name=name,
                                   tags={"tune.role": "search", "tune.experiment_dir": experiment_dir})
        from mlflow.entities import Param

        params = [Param(f"tune.{k}", json.dumps(v)) for k, v in {**settings.to_dict(), "budget": budget,
                                                                 "eval_interval": interval}.items()]
        params += [Param(f"space.{k}", json.dumps(v)) for k, v in space.to_dict().items()]
        tracker.client.log_batch(parent, params=params)
    context = _context(cfg, dataset=info.to_dict(), settings=settings, space=space, budget=budget,
                       interval=interval, grace=grace, tracking_uri=uri, parent_run_id=parent,
                       experiment_dir=experiment_dir, storage_path=storage_path, name=name,
                       out_dir=str(Path(out_dir).absolute()) if out_dir else experiment_dir)
    Path(experiment_dir, CONTEXT_FILE).write_text(json.dumps(context, indent=2, sort_keys=True))
    print(f"tune: {settings.trials} trial(s) of {budget} iterations (evaluation every {interval}, ASHA grace "
          f"{grace}), concurrency {settings.concurrency}; experiment {experiment_dir}", flush=True)
    tuner = _new_tuner(context, space, cfg, budget)
    return _run(tuner, context, started, t0)


def _new_tuner(context: dict[str, Any], space: SearchSpace, cfg: ExperimentConfig, budget: int) -> Any:
    import optuna
    from ray import tune as rtune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    s = TuneSettings(**context["settings"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = s.startup_trials if s.startup_trials is not None else max(1, min(10, s.trials // 2))
    searcher = OptunaSearch(space=space.define_by_run(cfg, budget), metric="val_mse", mode="min",
                            sampler=optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup))
    scheduler = ASHAScheduler(time_attr="iteration", max_t=budget, grace_period=context["grace"],
                              reduction_factor=s.reduction_factor)
    return rtune.Tuner(
        _trainable(context),
        tune_config=rtune.TuneConfig(metric="val_mse", mode="min", search_alg=searcher, scheduler=scheduler,
                                     num_samples=s.trials, max_concurrent_trials=s.concurrency),
        run_config=rtune.RunConfig(name=context["name"], storage_path=context["storage_path"], verbose=0,
                                   callbacks=[recorder_class()(context)]),
    )


def resume(experiment_dir: str, *, ray_address: str | None = None, num_cpus: int | None = None) -> TuneResult:
    """Continue an interrupted search; finished trials are not run again.

    Raises:
        TuneError: ``experiment_dir`` is not a search started by :func:`tune`, or it cannot be restored.
    """
    from ray import tune as rtune

    t0 = time.perf_counter()
    path = Path(experiment_dir).absolute()
    ctx_file = path / CONTEXT_FILE
    if not ctx_file.is_file():
        raise TuneError(f"{path} is not a predrnn search directory (no {CONTEXT_FILE})")
    context = json.loads(ctx_file.read_text())
    if not rtune.Tuner.can_restore(str(path)):
        raise TuneError(f"{path} holds no Tune experiment state to restore (did the search start any trial?)")
    started = _ensure_ray(ray_address, num_cpus)
    try:
        check_resources(ExperimentConfig.from_dict(context["cfg"]), context["settings"]["concurrency"])
    except TuneError:
        if started:
            import ray

            ray.shutdown()
        raise
    if context.get("tracking_uri") and context.get("parent_run_id"):
        from predrnn.tracking import Tracker

        Tracker(context["tracking_uri"]).client.update_run(context["parent_run_id"], status="RUNNING")
    done = len(read_records(path))
    print(f"tune: resuming {path} ({done} of {context['settings']['trials']} trial(s) finished)", flush=True)
    tuner = rtune.Tuner.restore(str(path), trainable=_trainable(context), resume_unfinished=True,
                                resume_errored=False, restart_errored=False)
    return _run(tuner, context, started, t0)


def _run(tuner: Any, context: dict[str, Any], started: bool, t0: float) -> TuneResult:
    try:
        tuner.fit()
    except Exception as err:
        _close_parent(context, "FAILED")
        raise TuneError(f"search {context['experiment_dir']} failed: {err}") from err
    except BaseException:  # SIGTERM or Ctrl-C: stopped, resumable with --resume
        from predrnn.train.driver import disarm_native_abort

        disarm_native_abort()
        _close_parent(context, "KILLED")
        raise
    finally:
        if started:
            import ray

            ray.shutdown()
    return finalize(context, wall_s=time.perf_counter() - t0)


def _close_parent(context: dict[str, Any], status: str) -> None:
    if context.get("tracking_uri") and context.get("parent_run_id"):
        from predrnn.tracking import Tracker

        Tracker(context["tracking_uri"], check=False).end_run(context["parent_run_id"], status)


def finalize(context: dict[str, Any], *, wall_s: float = math.nan) -> TuneResult:
    """Tables, the best config (file + MLflow artifact) and the parent run's summary from the records."""
    records = read_records(context["experiment_dir"])
    total = context["settings"]["trials"]
    interrupted = len(records) < total
    best = best_record(records)
    out = Path(context["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    best_cfg: dict[str, Any] | None = None
    best_path: str | None = None
    files: dict[str, str] = {}
    if best is not None:
        base = ExperimentConfig.from_dict(context["cfg"])
        cfg = apply_params(base, best["params"], context["budget"], eval_interval=context["interval"])
        cfg = dataclasses.replace(cfg, name=f"{base.name}-tuned")
        best_cfg = cfg.to_dict()
        best_path = str(out / BEST_CONFIG)
        Path(best_path).write_text(cfg.to_json() + "\n")
        files["best_config"] = best_path
    result = TuneResult(name=context["name"], experiment_dir=context["experiment_dir"],
                        dataset=context["dataset"]["uri"], tracking_uri=context.get("tracking_uri"),
                        parent_run_id=context.get("parent_run_id"), settings=context["settings"],
                        budget=context["budget"], trials=records, best=best, best_config=best_cfg,
                        best_config_path=best_path, interrupted=interrupted, wall_s=wall_s)
    files["trials_json"] = str(out / "trials.json")
    files["summary_md"] = str(out / "tune_summary.md")
    Path(files["trials_json"]).write_text(json.dumps(records, indent=2, sort_keys=True))
    result.files = files
    Path(files["summary_md"]).write_text(result.markdown())
    if context.get("tracking_uri") and context.get("parent_run_id"):
        _log_parent(context, result, files)
    state = "interrupted" if interrupted else "finished"
    best_s = "-" if best is None else f"{best['trial_id']} val MSE/frame {best['best_val_mse']:.3f}"
    print(f"tune: search {state}: {len(records)}/{total} trial(s); best {best_s}", flush=True)
    return result


def _log_parent(context: dict[str, Any], result: TuneResult, files: dict[str, str]) -> None:
    from mlflow.entities import Param

    from predrnn.tracking import Tracker

    tracker = Tracker(context["tracking_uri"], check=False)
    run_id = context["parent_run_id"]
    records = result.trials
    metrics = {"trials_finished": float(len(records)),
               "trials_stopped_early": float(sum(bool(r.get("stopped_early")) for r in records))}
    if result.best is not None:
        metrics["best_val_mse"] = float(result.best["best_val_mse"])
        tracker.set_tags(run_id, {"tune.best_trial_id": result.best["trial_id"]})
    if result.best is not None and not result.interrupted:  # params are immutable: log the final best once
        existing = tracker.client.get_run(run_id).data.params
        params = [Param(f"best.{k}", str(v)) for k, v in sorted(result.best["params"].items())
                  if f"best.{k}" not in existing]
        params += [Param("best.trial_id", result.best["trial_id"])] if "best.trial_id" not in existing else []
        try:
            tracker.client.log_batch(run_id, params=params)
        except Exception as err:  # a resumed search may find a different best: params are immutable
            print(f"warning: best params not logged on the parent run ({err}); see the best_config artifact",
                  file=sys.stderr, flush=True)
    tracker.log_metrics(run_id, metrics, step=len(records))
    for path in files.values():
        tracker.log_artifact(run_id, path)
    tracker.end_run(run_id, "KILLED" if result.interrupted else "FINISHED")
