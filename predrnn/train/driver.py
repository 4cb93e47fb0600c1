"""The driver: validate, open the MLflow run, run Ray Train's ``TorchTrainer``, pick the best checkpoint.

``train()`` is what the CLI, the Prefect flow and the main job call. Everything that can be
checked without workers (config, dataset shape, tracking store) is checked here first, so bad
input fails in seconds with a clear message instead of inside a worker group.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predrnn.config import ConfigError, ExperimentConfig
from predrnn.errors import PredrnnError
from predrnn.tracking import state_dir
from predrnn.train import storage
from predrnn.train.data import ClipSource, DatasetInfo, ZarrSource, validate_dataset
from predrnn.train.loop import DIVERGED, SELECTION, per_worker_batch, train_loop_per_worker
from predrnn.train.state import iteration_of

RUN_INFO = "predrnn_run.json"


class TrainError(PredrnnError, RuntimeError):
    """Training could not start or did not finish."""


@dataclass
class TrainResult:
    """Where a finished training left its things."""

    cfg: ExperimentConfig
    dataset: dict[str, Any]
    run_dir: str
    best_checkpoint: str
    latest_checkpoint: str
    best_metrics: dict[str, Any]
    tracking_uri: str | None
    run_id: str | None
    wall_s: float
    checkpoints: list[str] = field(default_factory=list)
    last_report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["cfg"] = self.cfg.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        return cls(**{**data, "cfg": ExperimentConfig.from_dict(data["cfg"])})


def configure(cfg: ExperimentConfig, *, data: str | None = None, workers: int | None = None,
              gpus_per_worker: float | None = None, cpus_per_worker: float | None = None,
              tracking_uri: str | None = None) -> ExperimentConfig:
    """Fold command-line choices into the config and validate it (raises ConfigError)."""
    compute = cfg.compute
    if workers is not None:
        compute = dataclasses.replace(compute, num_workers=workers)
    if gpus_per_worker is not None:
        compute = dataclasses.replace(compute, gpus_per_worker=gpus_per_worker)
    if cpus_per_worker is not None:
        compute = dataclasses.replace(compute, cpus_per_worker=cpus_per_worker)
    cfg = dataclasses.replace(cfg, compute=compute)
    if data:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=data))
    if tracking_uri:
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, tracking_uri=tracking_uri))
    cfg = cfg.validate()
    try:
        per_worker_batch(cfg.optim.batch_size, cfg.compute.num_workers)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg


def resolve_resume(resume: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """``(storage_path, name)`` of the run to continue: a run directory, or an MLflow run id."""
    path = Path(resume)
    if path.is_dir():
        if iteration_of(path.name) is not None:  # a checkpoint inside a run directory
            path = path.parent
        return str(path.parent.absolute()), path.name
    if "://" in resume and not resume.startswith("runs:/"):
        storage, _, name = resume.rstrip("/").rpartition("/")
        return storage, name
    from predrnn.tracking import Tracker

    run_id = resume.removeprefix("runs:/").split("/")[0]
    try:
        run = Tracker(tracking_uri).client.get_run(run_id)
    except Exception as err:
        raise TrainError(f"--resume {resume!r} is neither a run directory nor a known MLflow run: "
                         f"{err}") from err
    tags = run.data.tags
    if "ray.storage_path" not in tags:
        raise TrainError(f"MLflow run {run_id} has no ray.storage_path tag; pass the run directory instead")
    return tags["ray.storage_path"], tags["ray.run_name"]


# What ``--resume`` may change: the cluster (compute.*), where the run is tracked, and a larger
# ``optim.max_iterations``. Anything else would make the continued run a different experiment.
_RESUME_FREE = ("compute.", "tracking.tracking_uri", "values.", "data.dataset")


def read_run_info(storage_path: str, run_name: str, s3: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The run's record (config, MLflow run id, dataset) written at its start, or None if absent."""
    return storage.read_json(f"{storage_path.rstrip('/')}/{run_name}", RUN_INFO, s3)


def run_config(ref: str, tracking_uri: str | None = None) -> ExperimentConfig:
    """The config a run was started with; ``ref`` as for ``--resume`` (run directory, checkpoint
    directory inside one, or MLflow run id). The base of ``--resume`` and ``--fork`` on the CLI.

    Raises:
        TrainError: ``ref`` is not a run of ``predrnn train``.
    """
    storage_path, run_name = resolve_resume(ref, tracking_uri)
    saved = read_run_info(storage_path, run_name)
    if saved is None:
        raise TrainError(f"{ref}: {storage_path.rstrip('/')}/{run_name} holds no {RUN_INFO}; "
                         "pass a run directory written by predrnn train")
    return ExperimentConfig.from_dict(saved["cfg"]).validate()


def resumed_config(saved: ExperimentConfig, given: ExperimentConfig) -> ExperimentConfig:
    """The config a resumed run continues with: the run's own, with ``given``'s cluster settings and,
    if larger, its ``optim.max_iterations``.

    Raises:
        TrainError: ``given`` changes anything else (each changed key named, old -> new), or lowers
            ``optim.max_iterations``.
    """
    a, b = saved.flat(), given.flat()
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
               and not any(k.startswith(free) or k == free for free in _RESUME_FREE)]
    refused = [k for k in changed if k != "optim.max_iterations"]
    if refused:
        what = ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in refused)
        raise TrainError(f"--resume continues the run with its own config; only optim.max_iterations may grow, "
                         f"refused: {what} (start a new run from this state with --fork RUN --set ...)")
    if given.optim.max_iterations < saved.optim.max_iterations:
        raise TrainError(f"--resume: optim.max_iterations may only grow; the run was started with "
                         f"{saved.optim.max_iterations}, asked {given.optim.max_iterations}")
    optim = dataclasses.replace(saved.optim, max_iterations=given.optim.max_iterations)
    return dataclasses.replace(saved, optim=optim, compute=given.compute,
                               tracking=dataclasses.replace(saved.tracking,
                                                            tracking_uri=given.tracking.tracking_uri))


def _init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to (or start) Ray; returns True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Ray's socket paths must stay short, so its temp dir sits in /tmp unless given.
        temp = os.environ.get("PREDRNN_RAY_TEMP_DIR") or str(state_dir() / "ray" / "tmp")
        if len(temp) > 60:
            temp = tempfile.mkdtemp(prefix="predrnn-ray-")
        Path(temp).mkdir(parents=True, exist_ok=True)
        # The dashboard serves the state API that Ray Train's placement-group cleaner polls.
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", _temp_dir=temp,
                 log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)
    return True


def disarm_native_abort() -> None:
    """Cancel the abort that Ray's native failure handler arms when the driver gets SIGTERM.

    On SIGTERM that handler sets a 3 s alarm whose expiry aborts the process (SIGABRT), however far the
    clean-up has got. Stopping training (closing the MLflow run, marking the flow run crashed, stopping
    Ray) takes longer than that on a busy machine, so the stop path cancels the alarm and finishes.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and hasattr(signal, "alarm"):
        signal.alarm(0)


def _initial_weights(cfg: ExperimentConfig, ref: str, tracking_uri: str | None) -> dict[str, Any]:
    """The state dict of ``ref`` (model directory or registry URI), checked against ``cfg``'s model."""
    from predrnn.checkpoint import CheckpointError, load_state_checked
    from predrnn.models import build_model
    from predrnn.tracking import load_forecaster

    try:
        source_model, _ = load_forecaster(ref, tracking_uri=tracking_uri)
    except Exception as err:
        raise TrainError(f"cannot load the warm-start weights {ref}: {err}") from err
    core = getattr(source_model, "module", source_model)
    state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
    try:
        load_state_checked(build_model(cfg), state, source=ref)
    except CheckpointError as err:
        raise TrainError(f"warm-start weights do not fit the config: {err}") from err
    return state


def train(cfg: ExperimentConfig, *, data: str | None = None, tracking_uri: str | None = None,
          track: bool = True, storage_path: str | None = None, run_name: str | None = None,
          resume: str | None = None, max_failures: int = 2, log_every: int | None = None,
          ray_address: str | None = None, num_cpus: int | None = None,
          placement_strategy: str = "PACK", resources_per_worker: dict[str, float] | None = None,
          source: ClipSource | None = None, dataset_info: DatasetInfo | None = None,
          init_weights: str | None = None, need_test: bool = True, fork: str | None = None) -> TrainResult:
    """Train ``cfg`` on Ray Train and return where the checkpoints are.

    Args:
        cfg: the experiment (use :func:`configure` to fold in CLI choices).
        data: dataset version URI; defaults to ``cfg.data.dataset``.
        tracking_uri: MLflow store; defaults to ``cfg.tracking.tracking_uri``, then the local SQLite.
        track: log to MLflow (rank 0 metrics, params, dataset input).
        storage_path: where Ray keeps run directories (local path or ``s3://``);
            default ``.state/ray/results``.
        run_name: the run directory name; default ``<preset>-<time>``.
        resume: a run directory, a checkpoint directory inside one, or an MLflow run id: continue
            that run from its latest readable checkpoint with the config it was started with.
        max_failures: worker-group restarts Ray Train may do after a worker dies.
        log_every: progress/metrics interval in iterations.
        ray_address: an existing cluster (``HOST:PORT``); default starts a local one.
        placement_strategy: ``PACK``, ``SPREAD``, ``STRICT_SPREAD`` (one worker per node) ...
        resources_per_worker: extra Ray resources per worker (defaults from ``cfg.compute``).
        source, dataset_info: an alternative clip source (tests); default reads the Zarr version.
        init_weights: warm start: a model directory or ``models:/NAME@ALIAS`` whose weights
            initialise a fresh run (ignored when resuming; must fit the config exactly).
        need_test: the run ends with a test evaluation (:func:`predrnn.train.finish`): a dataset without a
            test split is refused before anything starts, not after training.
        fork: a run (as for ``resume``) whose latest checkpoint (weights, optimiser, iteration, RNG) a
            **new** run starts from, with ``cfg`` (any change that keeps the architecture); its MLflow run
            is tagged with the parent's. ``optim.max_iterations`` must lie beyond that checkpoint.

    Run lifecycle: ``resume`` continues the same run directory and MLflow run, refusing any config
    change but a larger ``optim.max_iterations`` (:func:`resumed_config`); ``fork`` starts a new run
    from a run's full training state; ``init_weights`` starts a new run from weights only. The MLflow
    run ends FAILED (with the error as the tag ``error``) or KILLED on any way out of this function
    but success; on success it stays RUNNING for :func:`predrnn.train.finish`, which ends it.
    A non-finite training loss, or one above ``optim.divergence_loss``, stops every rank at that
    iteration and raises TrainError (the run FAILED, nothing registered).

    Raises:
        ConfigError, DatasetError, TrackingError: before any worker starts.
        TrainError: the worker group failed more than ``max_failures`` times, training diverged, or a
            resume/fork request that cannot be honoured (named).
    """
    import pyarrow.fs  # noqa: F401 - Ray's storage layer needs it; fail early if missing

    t0 = time.perf_counter()
    from predrnn.tracking import Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or cfg.tracking.tracking_uri) if track else None
    s3 = storage.settings()  # read once; passed to every s3:// location of this run and to the workers
    run_id: str | None = None
    extended_from: int | None = None
    if resume:
        storage_path, run_name = resolve_resume(resume, uri)
        saved = read_run_info(storage_path, run_name, s3)
        if saved is None:
            raise TrainError(f"--resume {resume}: {storage_path.rstrip('/')}/{run_name} holds no {RUN_INFO}; "
                             "pass a run directory written by predrnn train")
        saved_cfg = ExperimentConfig.from_dict(saved["cfg"]).validate()
        saved_data = saved.get("dataset", {}).get("uri")
        if data and saved_data and data != saved_data and data != saved_cfg.data.dataset:
            raise TrainError(f"--resume continues on the run's own dataset {saved_data}; refused: --data {data}")
        cfg = resumed_config(saved_cfg, cfg)
        if cfg.optim.max_iterations != saved_cfg.optim.max_iterations:
            extended_from = saved_cfg.optim.max_iterations
        run_id = saved.get("mlflow_run_id")
        data = saved_data
    cfg = configure(cfg, data=data or cfg.data.dataset)
    world = cfg.compute.num_workers
    if source is None:
        dataset_info = validate_dataset(cfg, cfg.data.dataset, world_size=world, need_test=need_test)
        source = ZarrSource(dataset_info.uri)
    elif dataset_info is None:
        raise TrainError("a custom source needs its dataset_info")
    assert dataset_info is not None
    if dataset_info.values:  # what the values are comes from the dataset, never from the preset
        from predrnn.values import with_values

        cfg = with_values(cfg, dataset_info.values)
    tracker = Tracker(uri) if track else None  # checks reachability before anything starts
    init_state = _initial_weights(cfg, init_weights, uri) if init_weights and not resume else None
    fork_tags: dict[str, str] = {}
    fork_checkpoint: str | None = None
    if fork and not resume:
        parent_storage, parent_name = resolve_resume(fork, uri)
        parent = read_run_info(parent_storage, parent_name, s3) or {}
        fork_checkpoint = storage.latest_checkpoint(f"{parent_storage.rstrip('/')}/{parent_name}", s3)
        if fork_checkpoint is None:
            raise TrainError(f"--fork {fork}: the run has no checkpoint to start from")
        at = iteration_of(fork_checkpoint) or 0
        if cfg.optim.max_iterations <= at:
            raise TrainError(f"--fork {fork}: its latest checkpoint is at iteration {at}; set "
                             f"optim.max_iterations above it (now {cfg.optim.max_iterations})")
        fork_tags = {"fork.parent_checkpoint": fork_checkpoint, "fork.parent_iteration": str(at),
                     **({"fork.parent_run_id": str(parent["mlflow_run_id"])} if parent.get("mlflow_run_id") else {})}

    storage_path = storage_path or str(state_dir() / "ray" / "results")
    run_name = run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = f"{storage_path.rstrip('/')}/{run_name}"
    if "://" not in storage_path:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    if tracker is not None and run_id is None:
        run_id = tracker.start_run(cfg, dataset=dataset_info.to_dict(), run_name=run_name,
                                   tags={"ray.storage_path": storage_path, "ray.run_name": run_name,
                                         "workers": str(world),
                                         **({"init_weights": str(init_weights)} if init_state else {}),
                                         **fork_tags})
    elif tracker is not None and run_id is not None:  # a resumed run: the same MLflow run continues
        tracker.reopen_run(run_id)
        if extended_from is not None:
            tracker.set_tags(run_id, {"resume.max_iterations": f"{extended_from} -> {cfg.optim.max_iterations}"})
    storage.write_json(run_dir, RUN_INFO, {"cfg": cfg.to_dict(), "mlflow_run_id": run_id, "tracking_uri": uri,
                                           "dataset": dataset_info.to_dict()}, s3)
    storage.remove(run_dir, DIVERGED, s3)

    # Ray gets the filesystem opened with our S3 settings (a bare s3:// URI would make it look for AWS)
    ray_fs, ray_storage = storage.filesystem(storage_path, s3) if "://" in storage_path else (None, storage_path)
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    c = cfg.compute
    use_gpu = c.gpus_per_worker > 0
    resources = {"CPU": c.cpus_per_worker, **({"GPU": c.gpus_per_worker} if use_gpu else {}),
                 **(resources_per_worker or {})}
    try:
        started = _init_ray(ray_address, num_cpus)
    except BaseException as err:
        if tracker is not None and run_id:
            tracker.end_run(run_id, "FAILED", error=f"cannot start or reach Ray: {err}")
        raise
    loop_config = {"cfg": cfg.to_dict(), "source": source, "dataset": dataset_info.to_dict(),
                   "tracking_uri": uri, "mlflow_run_id": run_id, "init_state": init_state,
                   "fork_checkpoint": fork_checkpoint, "run_dir": run_dir, "s3": s3,
                   "log_every": log_every or max(1, min(50, cfg.optim.max_iterations // 30))}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=world, use_gpu=use_gpu, resources_per_worker=resources,
                                     placement_strategy=placement_strategy),
        run_config=RunConfig(  # type: ignore[call-arg]  # Train V2's RunConfig (typed as V1's)
            name=run_name, storage_path=ray_storage, storage_filesystem=ray_fs,
            # Plain prints from the workers (progress lines) instead of Train's print-to-logger tee.
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
            logging_config=LoggingConfig(log_level="WARNING"),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.optim.keep_best,
                                               checkpoint_score_attribute=SELECTION,
                                               checkpoint_score_order="min"),
        ),
    )
    def failed(message: str) -> TrainError:
        if tracker is not None and run_id:
            tracker.end_run(run_id, "FAILED", error=message)
        return TrainError(message)

    try:
        result = trainer.fit()
    except Exception as err:
        raise failed(f"training run {run_dir} failed: {err}") from err
    except BaseException:  # SIGTERM (SystemExit) or Ctrl-C: the run was stopped, not failed
        disarm_native_abort()
        if tracker is not None and run_id:
            tracker.end_run(run_id, "KILLED", error="stopped (signal or interrupt)")
        raise
    finally:
        if started:
            import ray

            ray.shutdown()
    if result.error is not None:
        raise failed(f"training run {run_dir} failed: {result.error}")
    report = dict(result.metrics or {})
    diverged = storage.read_json(run_dir, DIVERGED, s3)
    if diverged is not None:
        loss = float(diverged["loss"])
        raise failed(f"training diverged at iteration {diverged['iteration']}: loss {loss:g}"
                     + (f" above optim.divergence_loss={cfg.optim.divergence_loss:g}" if math.isfinite(loss) else "")
                     + f" (optim.lr={cfg.optim.lr:g}); nothing was registered")
    scored = [(m.get("val_mse", math.nan), ck) for ck, m in (result.best_checkpoints or [])]
    finite = [(s, ck) for s, ck in scored if isinstance(s, float) and math.isfinite(s)]
    latest = result.checkpoint
    if latest is None:
        raise TrainError(f"training run {run_dir} produced no checkpoint")
    best_score, best = min(finite, key=lambda x: x[0]) if finite else (math.nan, latest)
    scheme = storage_path.split("://", 1)[0] + "://" if "://" in storage_path else ""

    def where(ck: Any) -> str:
        # Ray gives filesystem paths; keep the scheme so remote checkpoints stay addressable.
        return ck.path if not scheme or ck.path.startswith(scheme) else scheme + ck.path

    return TrainResult(cfg=cfg, dataset=dataset_info.to_dict(), run_dir=run_dir, best_checkpoint=where(best),
                       latest_checkpoint=where(latest), best_metrics={"val_mse": best_score},
                       tracking_uri=uri, run_id=run_id, wall_s=time.perf_counter() - t0,
                       checkpoints=sorted(where(ck) for _, ck in scored),
                       last_report=report)
