"""The driver: open (or reopen) the MLflow run, run Ray Train's ``TorchTrainer``, pick the best checkpoint.

``train(spec)`` takes a :class:`~predrnn.train.spec.RunSpec` that the door (CLI, flow, main job)
resolved once with :func:`~predrnn.train.spec.prepare`, where everything that can be checked without
workers was checked; the workers receive the spec's dict form.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predrnn.config import ExperimentConfig
from predrnn.data.batches import ClipSource, ZarrSource
from predrnn.train import launch, storage
from predrnn.train.loop import DIVERGED, SELECTION, WorkerJob, train_loop_per_worker
from predrnn.train.spec import RUN_INFO, RunSpec, TrainError, run_record

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings



@dataclass
class TrainResult:
    """Where a finished training left its things, with the run it trained (its config, dataset version,
    MLflow store and S3 settings are the spec's)."""

    spec: RunSpec
    run_dir: str
    best_checkpoint: str
    latest_checkpoint: str
    best_metrics: dict[str, Any]
    run_id: str | None
    wall_s: float
    checkpoints: list[str] = field(default_factory=list)
    last_report: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg(self) -> ExperimentConfig:
        return self.spec.cfg

    @property
    def dataset(self) -> dict[str, Any]:
        return self.spec.dataset.to_dict()

    @property
    def tracking_uri(self) -> str | None:
        return self.spec.tracking_uri

    @property
    def s3(self) -> S3Settings:
        return self.spec.s3

    def to_dict(self) -> dict[str, Any]:
        """JSON types only, no credential (the spec's S3 settings hold none)."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "spec"},
                "spec": self.spec.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        return cls(**{**data, "spec": RunSpec.from_dict(data["spec"])})


def warm_start_params(spec: RunSpec, resolved: str | None) -> dict[str, str]:
    """How a new run's weights start, as MLflow params: ``warm_start`` (``none``, ``weights`` or ``fork``),
    ``warm_start.from`` (the reference given, or the parent run) and ``warm_start.version`` (the registry
    version it resolved to, ``models:/NAME/VERSION``)."""
    if spec.init_weights:
        out = {"warm_start": "weights", "warm_start.from": spec.init_weights}
        if resolved and resolved != spec.init_weights:
            out["warm_start.version"] = resolved
        return out
    if spec.fork_checkpoint:
        return {"warm_start": "fork", "warm_start.from": spec.tags.get("fork.parent_run_id", "")}
    return {"warm_start": "none"}


def initial_weights(cfg: ExperimentConfig, ref: str, tracking_uri: str | None,
                    cache_dir: Path | None = None) -> dict[str, Any]:
    """The state dict of ``ref`` (model directory or registry URI; a registry version kept in ``cache_dir``),
    checked against ``cfg``'s model."""
    from predrnn.checkpoint import CheckpointError, load_state_checked
    from predrnn.forecaster import load_forecaster
    from predrnn.models import build_model

    try:
        source_model, _ = load_forecaster(ref, tracking_uri=tracking_uri, cache_dir=cache_dir)
    except Exception as err:
        raise TrainError(f"cannot load the warm-start weights {ref}: {err}") from err
    core = getattr(source_model, "module", source_model)
    state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
    try:
        load_state_checked(build_model(cfg), state, source=ref)
    except CheckpointError as err:
        raise TrainError(f"warm-start weights do not fit the config: {err}") from err
    return state


def train(spec: RunSpec, *, max_failures: int = 2, log_every: int | None = None, num_cpus: int | None = None,
          placement_strategy: str = "PACK", resources_per_worker: dict[str, float] | None = None,
          source: ClipSource | None = None, on_start: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``spec`` on Ray Train and return where the checkpoints are.

    Args:
        spec: the run, resolved at the door by :func:`predrnn.train.prepare`.
        max_failures: worker-group restarts Ray Train may do after a worker dies.
        log_every: progress/metrics interval in iterations (default about 30 lines per run).
        num_cpus: CPUs of a local Ray cluster started here.
        placement_strategy: ``PACK``, ``SPREAD``, ``STRICT_SPREAD`` (one worker per node) ...
        resources_per_worker: extra Ray resources per worker (besides ``cfg.compute``'s).
        source: an alternative clip source (tests); default reads ``spec.dataset``'s Zarr version.
        on_start: called with the MLflow run id once the run is open, before Ray starts (e.g. a flow's
            progress report); tracked runs only.

    Run lifecycle: a resumed spec (``spec.mlflow_run_id``) continues its MLflow run, a fork starts from
    ``spec.fork_checkpoint``, ``spec.init_weights`` warm-starts weights only. The MLflow run ends FAILED
    (with the error as the tag ``error``) or KILLED on any way out of this function but success; on
    success it stays RUNNING for :func:`predrnn.train.finish`, which ends it. A non-finite training
    loss, or one above ``optim.divergence_loss``, stops every rank at that iteration and raises
    TrainError (the run FAILED, nothing registered).

    Raises:
        TrainError: the warm-start weights do not fit, the worker group failed more than
            ``max_failures`` times, or training diverged.
        TrackingError: the MLflow run cannot be created.
    """
    import pyarrow.fs  # noqa: F401 - Ray's storage layer needs it; fail early if missing

    t0 = time.perf_counter()
    cfg, uri, s3, run_dir = spec.cfg, spec.tracking_uri, spec.s3, spec.run_dir
    cache = Path(spec.state_dir) / "models" if spec.state_dir else None
    init_ref = spec.init_weights
    if init_ref and init_ref.startswith("models:/") and uri:  # one fixed version, loaded and recorded
        from predrnn.tracking.model import pinned_ref
        from predrnn.tracking.runs import TrackingError

        try:
            init_ref = pinned_ref(init_ref, uri) or init_ref
        except TrackingError as err:
            raise TrainError(f"cannot load the warm-start weights {spec.init_weights}: {err}") from err
    init_state = initial_weights(cfg, init_ref, uri, cache) if init_ref else None
    tracker = None
    run_id = spec.mlflow_run_id
    if uri:
        from predrnn.tracking import Tracker

        tracker = Tracker(uri, check=False)  # the door checked the store
        if run_id is None:
            run_id = tracker.start_run(cfg, dataset=spec.dataset.to_dict(), run_name=spec.run_name,
                                       tags={"ray.storage_path": spec.storage_path, "ray.run_name": spec.run_name,
                                             "workers": str(cfg.compute.num_workers), **spec.tags})
            # compute.amp as resolved for the workers; how the weights started, so Compare tells the runs apart
            tracker.log_params(run_id, {"precision": spec.precision, **warm_start_params(spec, init_ref)})
        else:  # a resumed run: the same MLflow run continues
            tracker.reopen_run(run_id)
            tracker.set_tags(run_id, {"resume.precision": spec.precision})
            if spec.extended_from is not None:
                tracker.set_tags(run_id, {"resume.max_iterations":
                                          f"{spec.extended_from} -> {cfg.optim.max_iterations}"})
        spec = dataclasses.replace(spec, mlflow_run_id=run_id)
        if on_start is not None:
            on_start(run_id)
    if "://" not in spec.storage_path:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    storage.write_json(run_dir, RUN_INFO, run_record(spec, run_id), s3)
    storage.remove(run_dir, DIVERGED, s3)

    def failed(message: str) -> TrainError:
        if tracker is not None and run_id:
            tracker.end_run(run_id, "FAILED", error=message)
        return TrainError(message)

    try:
        started = launch.ensure_ray(spec.ray_address, num_cpus=num_cpus,
                                    temp_dir=f"{spec.state_dir}/ray/tmp" if spec.state_dir else None)
    except Exception as err:
        raise failed(f"cannot start or reach Ray: {err}") from err
    # Ray gets the filesystem opened with the run's S3 settings (a bare s3:// URI would make it look for AWS)
    ray_fs, ray_storage = (storage.filesystem(spec.storage_path, s3) if "://" in spec.storage_path
                           else (None, spec.storage_path))
    job = WorkerJob(spec=spec, source=source or ZarrSource(spec.dataset.uri, spec.s3 or None), init_state=init_state,
                    log_every=log_every or max(1, min(50, cfg.optim.max_iterations // 30)))
    trainer = launch.torch_trainer(train_loop_per_worker, job.config(), cfg, name=spec.run_name,
                                   storage_path=ray_storage, storage_filesystem=ray_fs, max_failures=max_failures,
                                   num_to_keep=cfg.optim.keep_best, score_attribute=SELECTION,
                                   placement_strategy=placement_strategy, extra_resources=resources_per_worker)
    try:
        result = trainer.fit()
    except Exception as err:
        raise failed(f"training run {run_dir} failed: {err}") from err
    except BaseException:  # SIGTERM (SystemExit) or Ctrl-C: the run was stopped, not failed
        launch.disarm_native_abort()
        if tracker is not None and run_id:
            tracker.end_run(run_id, "KILLED", error="stopped (signal or interrupt)")
        raise
    finally:
        launch.shutdown(started)
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
    scheme = storage.scheme_of(spec.storage_path)

    def where(ck: Any) -> str:
        # Ray gives filesystem paths; keep the scheme so remote checkpoints stay addressable.
        return ck.path if not scheme or ck.path.startswith(scheme) else scheme + ck.path

    return TrainResult(spec=spec, run_dir=run_dir, best_checkpoint=where(best), latest_checkpoint=where(latest),
                       best_metrics={"val_mse": best_score}, run_id=run_id, wall_s=time.perf_counter() - t0,
                       checkpoints=sorted(where(ck) for _, ck in scored), last_report=report)
