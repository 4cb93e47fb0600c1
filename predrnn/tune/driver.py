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

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predrnn.config import ConfigError, ExperimentConfig
from predrnn.errors import PredrnnError
from predrnn.train.spec import RunSpec
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


def check_search(cfg: ExperimentConfig, settings: TuneSettings, space: SearchSpace) -> tuple[int, int, int]:
    """:func:`plan`, then the space against the config and budget, and the rescaled preset itself: a door
    calls this before resolving the dataset, so a bad search fails first and in milliseconds.

    Raises:
        ConfigError, SpaceError: naming the setting or range.
    """
    budget, interval, grace = plan(cfg, settings)
    space.define_by_run(cfg, budget)
    apply_params(cfg, {}, budget, eval_interval=interval)
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


@dataclass(frozen=True)
class Search:
    """A search's fixed part, written to ``predrnn_tune.json`` and given to every trial.

    ``spec`` is the base run (experiment, dataset, MLflow store, the experiment directory as
    ``spec.run_dir``); ``budget``, ``interval`` and ``grace`` are each trial's iterations, evaluation
    interval and ASHA grace period; ``parent_run_id`` the MLflow run of the search.
    """

    spec: RunSpec
    settings: TuneSettings
    space: dict[str, Any]
    budget: int
    interval: int
    grace: int
    out_dir: str
    parent_run_id: str | None = None

    @property
    def experiment_dir(self) -> str:
        return self.spec.run_dir

    def to_dict(self) -> dict[str, Any]:
        """JSON types; the S3 settings stay out (credentials never go to disk)."""
        return {**dataclasses.asdict(self), "spec": {**self.spec.to_dict(), "s3": {}},
                "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Search:
        return cls(**{**data, "spec": RunSpec.from_dict(data["spec"]), "settings": TuneSettings(**data["settings"])})


def run_trial(config: dict[str, Any], search: Search) -> None:
    """Tune's trainable: one PredRNN training on Ray Train for the point ``config``.

    The trial is a run of the search's spec with the point's config, in ``EXPERIMENT/train/trial-ID``,
    logging to a nested MLflow run (found again by trial id when the trial resumes).
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from predrnn.data.batches import ZarrSource
    from predrnn.train import launch
    from predrnn.train.loop import SELECTION, train_loop_per_worker

    tctx = ray.tune.get_context()
    trial_id = tctx.get_trial_id()
    base = search.spec.cfg
    cfg = apply_params(base, config, search.budget, eval_interval=search.interval)
    cfg = dataclasses.replace(cfg, name=f"{base.name}-{trial_id}")
    run_id = _child_run(search, cfg, trial_id, config) if search.spec.tracking_uri else None
    spec = dataclasses.replace(search.spec, cfg=cfg, storage_path=f"{search.experiment_dir}/train",
                               run_name=f"trial-{trial_id}", mlflow_run_id=run_id, tags={})
    loop_config = {"spec": spec.to_dict(), "source": ZarrSource(spec.dataset.uri), "init_state": None,
                   "log_every": search.interval}
    trainer = launch.torch_trainer(train_loop_per_worker, loop_config, cfg, name=spec.run_name,
                                   storage_path=spec.storage_path, max_failures=search.settings.max_failures,
                                   num_to_keep=max(2, min(cfg.optim.keep_best, 3)), score_attribute=SELECTION,
                                   callbacks=[TuneReportCallback()])
    trainer.fit()


def _trial_tags(search: Search, trial_id: str) -> dict[str, str]:
    return {"tune.trial_id": trial_id, "mlflow.parentRunId": str(search.parent_run_id)}


def _child_run(search: Search, cfg: ExperimentConfig, trial_id: str, params: dict[str, Any]) -> str:
    """The trial's nested MLflow run: created once, reopened when the trial resumes."""
    from predrnn.tracking import Tracker

    tracker = Tracker(search.spec.tracking_uri, check=False)
    existing = tracker.find_run(cfg.tracking.experiment, _trial_tags(search, trial_id))
    if existing is not None:
        tracker.reopen_run(existing)
        return existing
    run_id = tracker.start_run(cfg, dataset=search.spec.dataset.to_dict(),
                               run_name=f"{search.spec.run_name}-{trial_id}",
                               tags={**_trial_tags(search, trial_id), "tune.experiment_dir": search.experiment_dir,
                                     "tune.role": "trial"})
    tracker.log_params(run_id, {f"search.{k}": v for k, v in sorted(params.items())})
    return run_id


def _callback_class() -> type:
    from ray.tune import Callback

    class TrialRecorder(Callback):
        """Main-process side: closes each child run and appends the trial's record as trials end."""

        def __init__(self, search: Search) -> None:
            self.search = search

        def _record(self, trial: Any, status: str) -> None:
            search = self.search
            last = trial.last_result or {}
            analysis = (trial.metric_analysis or {}).get("val_mse", {})
            best = float(analysis.get("min", math.nan))
            its = int(last.get("iteration", 0) or 0)
            early = status == "TERMINATED" and its < search.budget
            rec = {"trial_id": trial.trial_id, "params": dict(trial.config), "best_val_mse": best,
                   "last_val_mse": float(last.get("val_mse", math.nan)), "iterations": its,
                   "stopped_early": early, "status": status, "child_run_id": None}
            if search.spec.tracking_uri:
                rec["child_run_id"] = _close_child(search, trial.trial_id, rec)
            append_record(search.experiment_dir, rec)
            done = len(read_records(search.experiment_dir))
            val = "nan" if not math.isfinite(best) else f"{best:.3f}"
            print(f"tune: trial {done}/{search.settings.trials} {trial.trial_id} {status.lower()}: best val "
                  f"MSE/frame {val} at {its}/{search.budget} iterations"
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


def _close_child(search: Search, trial_id: str, rec: dict[str, Any]) -> str | None:
    from predrnn.tracking import Tracker

    try:
        tracker = Tracker(search.spec.tracking_uri, check=False)
        run_id = tracker.find_run(search.spec.cfg.tracking.experiment, _trial_tags(search, trial_id))
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
        from predrnn.tracking import Tracker

        tracker = Tracker(spec.tracking_uri, check=False)
        parent = tracker.start_run(cfg, dataset=spec.dataset.to_dict(), run_name=spec.run_name,
                                   tags={"tune.role": "search", "tune.experiment_dir": str(experiment_dir)})
        tracker.log_params(parent, {**{f"tune.{k}": json.dumps(v) for k, v in settings.to_dict().items()},
                                    "tune.budget": json.dumps(budget), "tune.eval_interval": json.dumps(interval),
                                    **{f"space.{k}": json.dumps(v) for k, v in space.to_dict().items()}})
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
           s3: dict[str, Any] | None = None) -> TuneResult:
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
                                                                  s3=dict(s3 or {})))
    started = launch.ensure_ray(search.spec.ray_address, num_cpus=num_cpus, temp_dir=f"{search.spec.state_dir}/ray/tmp")
    try:
        check_resources(search.spec.cfg, search.settings.concurrency)
    except TuneError:
        launch.shutdown(started)
        raise
    if search.spec.tracking_uri and search.parent_run_id:
        from predrnn.tracking import Tracker

        Tracker(search.spec.tracking_uri).reopen_run(search.parent_run_id)
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
        _close_parent(search, "FAILED", error=f"search failed: {err}")
        raise TuneError(f"search {search.experiment_dir} failed: {err}") from err
    except BaseException:  # SIGTERM or Ctrl-C: stopped, resumable with --resume
        launch.disarm_native_abort()
        _close_parent(search, "KILLED", error="stopped (signal or interrupt)")
        raise
    finally:
        launch.shutdown(started)
    return finalize(search, wall_s=time.perf_counter() - t0)


def _close_parent(search: Search, status: str, error: str | None = None) -> None:
    if search.spec.tracking_uri and search.parent_run_id:
        from predrnn.tracking import Tracker

        Tracker(search.spec.tracking_uri, check=False).end_run(search.parent_run_id, status, error=error)


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
        _log_parent(search, result, files)
    state = "interrupted" if interrupted else "finished"
    best_s = "-" if best is None else f"{best['trial_id']} val MSE/frame {best['best_val_mse']:.3f}"
    print(f"tune: search {state}: {len(records)}/{total} trial(s); best {best_s}", flush=True)
    return result


def _log_parent(search: Search, result: TuneResult, files: dict[str, str]) -> None:
    from predrnn.tracking import Tracker

    tracker = Tracker(search.spec.tracking_uri, check=False)
    run_id = str(search.parent_run_id)
    records = result.trials
    metrics = {"trials_finished": float(len(records)),
               "trials_stopped_early": float(sum(bool(r.get("stopped_early")) for r in records))}
    if result.best is not None:
        metrics["best_val_mse"] = float(result.best["best_val_mse"])
        tracker.set_tags(run_id, {"tune.best_trial_id": result.best["trial_id"]})
    if result.best is not None and not result.interrupted:  # params are immutable: log the final best once
        existing = tracker.run_params(run_id)
        params = {f"best.{k}": v for k, v in sorted(result.best["params"].items())}
        params["best.trial_id"] = result.best["trial_id"]
        try:
            tracker.log_params(run_id, {k: v for k, v in params.items() if k not in existing})
        except Exception as err:  # a resumed search may find a different best: params are immutable
            print(f"warning: best params not logged on the parent run ({err}); see the best_config artifact",
                  file=sys.stderr, flush=True)
    tracker.log_metrics(run_id, metrics, step=len(records))
    for path in files.values():
        tracker.log_artifact(run_id, path)
    tracker.end_run(run_id, "KILLED" if result.interrupted else "FINISHED")
