"""The driver: validate, open the MLflow run, run Ray Train's ``TorchTrainer``, pick the best checkpoint.

``train()`` is what the CLI, the Prefect flow and the main job call. Everything that can be
checked without workers (config, dataset shape, tracking store) is checked here first, so bad
input fails in seconds with a clear message instead of inside a worker group.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predrnn.config import ConfigError, ExperimentConfig
from predrnn.tracking import state_dir
from predrnn.train.data import ClipSource, DatasetInfo, ZarrSource, validate_dataset
from predrnn.train.loop import per_worker_batch, train_loop_per_worker
from predrnn.train.state import iteration_of

RUN_INFO = "predrnn_run.json"


class TrainError(RuntimeError):
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
    from predrnn.predict import load_forecaster

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
          init_weights: str | None = None, need_test: bool = True) -> TrainResult:
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

    Raises:
        ConfigError, DatasetError, TrackingError: before any worker starts.
        TrainError: the worker group failed more than ``max_failures`` times.
    """
    import pyarrow.fs  # noqa: F401 - Ray's storage layer needs it; fail early if missing

    t0 = time.perf_counter()
    from predrnn.tracking import Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or cfg.tracking.tracking_uri) if track else None
    run_id: str | None = None
    if resume:
        storage_path, run_name = resolve_resume(resume, uri)
        info_file = Path(storage_path) / run_name / RUN_INFO
        if "://" not in storage_path and info_file.is_file():
            saved = json.loads(info_file.read_text())
            cfg = ExperimentConfig.from_dict(saved["cfg"]).validate()
            run_id = saved.get("mlflow_run_id")
            data = data or saved.get("dataset", {}).get("uri")
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

    storage_path = storage_path or str(state_dir() / "ray" / "results")
    run_name = run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = f"{storage_path.rstrip('/')}/{run_name}"
    if "://" not in storage_path:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    if tracker is not None and run_id is None:
        run_id = tracker.start_run(cfg, dataset=dataset_info.to_dict(), run_name=run_name,
                                   tags={"ray.storage_path": storage_path, "ray.run_name": run_name,
                                         "workers": str(world),
                                         **({"init_weights": str(init_weights)} if init_state else {})})
    if "://" not in storage_path:
        info = {"cfg": cfg.to_dict(), "mlflow_run_id": run_id, "tracking_uri": uri,
                "dataset": dataset_info.to_dict()}
        Path(run_dir, RUN_INFO).write_text(json.dumps(info, indent=2))

    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    c = cfg.compute
    use_gpu = c.gpus_per_worker > 0
    resources = {"CPU": c.cpus_per_worker, **({"GPU": c.gpus_per_worker} if use_gpu else {}),
                 **(resources_per_worker or {})}
    started = _init_ray(ray_address, num_cpus)
    loop_config = {"cfg": cfg.to_dict(), "source": source, "dataset": dataset_info.to_dict(),
                   "tracking_uri": uri, "mlflow_run_id": run_id, "init_state": init_state,
                   "log_every": log_every or max(1, min(50, cfg.optim.max_iterations // 30))}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=world, use_gpu=use_gpu, resources_per_worker=resources,
                                     placement_strategy=placement_strategy),
        run_config=RunConfig(  # type: ignore[call-arg]  # Train V2's RunConfig (typed as V1's)
            name=run_name, storage_path=storage_path,
            # Plain prints from the workers (progress lines) instead of Train's print-to-logger tee.
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
            logging_config=LoggingConfig(log_level="WARNING"),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.optim.keep_best,
                                               checkpoint_score_attribute="val_mse",
                                               checkpoint_score_order="min"),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as err:
        if tracker is not None and run_id:
            tracker.end_run(run_id, "FAILED")
        raise TrainError(f"training run {run_dir} failed: {err}") from err
    except BaseException:  # SIGTERM (SystemExit) or Ctrl-C: the run was stopped, not failed
        disarm_native_abort()
        if tracker is not None and run_id:
            tracker.end_run(run_id, "KILLED")
        raise
    finally:
        if started:
            import ray

            ray.shutdown()
    if result.error is not None:
        if tracker is not None and run_id:
            tracker.end_run(run_id, "FAILED")
        raise TrainError(f"training run {run_dir} failed: {result.error}")
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
                       last_report=dict(result.metrics or {}))
