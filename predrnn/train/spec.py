"""One run, resolved once at the door: :class:`RunSpec` and :func:`prepare`.

A command or a flow reads its settings (environment, ``.env``, options), then calls :func:`prepare`
once. What comes back is frozen: the validated experiment, the resolved dataset version and where
the run is tracked, stored and executed. :func:`predrnn.train.train` takes it as it is and hands its
dict form to the workers; nothing below the door resolves a URI or reads the environment again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from predrnn.config import ConfigError, ExperimentConfig
from predrnn.data.batches import per_worker_batch
from predrnn.data.info import DatasetInfo, validate_dataset
from predrnn.data.store import S3Settings, check_s3_settings, keyless
from predrnn.errors import PredrnnError
from predrnn.precision import has_native_bf16, resolve_precision
from predrnn.train import storage
from predrnn.train.state import iteration_of

RUN_INFO = "predrnn_run.json"


class TrainError(PredrnnError, RuntimeError):
    """Training could not start or did not finish."""


@dataclass(frozen=True)
class RunSpec:
    """Everything a training run needs, resolved once.

    Attributes:
        cfg: the validated experiment; ``data.dataset`` is the resolved version URI and ``values``
            come from the dataset (units, training-split normalisation).
        dataset: the resolved dataset version (shape, splits, values).
        tracking_uri: the MLflow store; None: the run is not tracked.
        storage_path: where Ray keeps run directories (local folder or ``s3://``).
        run_name: the run directory's name (``storage_path/run_name``).
        state_dir: the local state folder (Ray's session folder goes under it when short enough).
        ray_address: an existing cluster (``HOST:PORT``); None starts a local one.
        s3: where the run's ``s3://`` locations are (endpoint, region) and where each process, the workers
            too, finds the credentials (:func:`predrnn.settings.s3_settings`); never the keys.
        mlflow_run_id: the MLflow run a resumed run continues; None opens a new run.
        extended_from: a resumed run's previous ``optim.max_iterations`` when it grew.
        fork_checkpoint: the checkpoint whose full training state a forked run starts from.
        init_weights: a model directory or ``models:/`` URI whose weights initialise the run.
        tags: extra MLflow tags of a new run (fork parent, ...).
        precision: the training precision, ``fp32`` or ``bf16``: ``compute.amp`` resolved for the
            workers' device (:func:`training_precision`).
    """

    cfg: ExperimentConfig
    dataset: DatasetInfo
    tracking_uri: str | None
    storage_path: str
    run_name: str
    state_dir: str
    ray_address: str | None = None
    s3: S3Settings = field(default_factory=S3Settings)
    mlflow_run_id: str | None = None
    extended_from: int | None = None
    fork_checkpoint: str | None = None
    init_weights: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_s3_settings(self.s3)  # credentials are never carried as values

    @property
    def run_dir(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.run_name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON types only (what the workers receive)."""
        out = dataclasses.asdict(self)
        out["cfg"], out["dataset"] = self.cfg.to_dict(), self.dataset.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        info = dict(data["dataset"])
        info["shape"] = tuple(info["shape"])
        return cls(**{**data, "cfg": ExperimentConfig.from_dict(data["cfg"]), "dataset": DatasetInfo(**info)})


def configure(cfg: ExperimentConfig, *, data: str | None = None, workers: int | None = None,
              gpus_per_worker: float | None = None, cpus_per_worker: float | None = None) -> ExperimentConfig:
    """Fold command-line choices (dataset, cluster) into the config.

    Raises:
        ConfigError: the result is invalid, or ``optim.batch_size`` does not split over the workers.
    """
    choices: dict[str, Any] = {"num_workers": workers, "gpus_per_worker": gpus_per_worker,
                               "cpus_per_worker": cpus_per_worker}
    compute = dataclasses.replace(cfg.compute, **{k: v for k, v in choices.items() if v is not None})
    cfg = dataclasses.replace(cfg, compute=compute,
                              data=dataclasses.replace(cfg.data, dataset=data) if data else cfg.data)
    try:
        per_worker_batch(cfg.optim.batch_size, cfg.compute.num_workers)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg


def training_precision(cfg: ExperimentConfig,
                       native_bf16: Callable[[torch.device], bool] = has_native_bf16) -> str:
    """``compute.amp`` resolved for the workers' device (CUDA when ``compute.gpus_per_worker`` > 0,
    else the CPU) by :func:`predrnn.precision.resolve_precision` for training: ``auto`` is bf16 on GPUs
    with native bf16 and fp32 on CPUs."""
    device = torch.device("cuda" if cfg.compute.gpus_per_worker > 0 else "cpu")
    return resolve_precision(cfg.compute.amp, device, "train", native_bf16=native_bf16)


def run_record(spec: RunSpec, mlflow_run_id: str | None) -> dict[str, Any]:
    """What a run writes at its start (:data:`RUN_INFO`): its spec (whose S3 settings hold no credential)
    and its MLflow run."""
    return {"spec": spec.to_dict(), "mlflow_run_id": mlflow_run_id}


def read_run_info(run_dir: str, s3: S3Settings | None = None) -> dict[str, Any] | None:
    """The record a run wrote at its start (:func:`run_record`), or None if absent. Records of
    earlier versions (config, dataset and tracking URI side by side) are read into the same form."""
    saved = storage.read_json(run_dir, RUN_INFO, s3)
    if saved is None or "spec" in saved:
        return saved
    storage_path, _, name = run_dir.rstrip("/").rpartition("/")
    spec = {"cfg": saved["cfg"], "dataset": saved["dataset"], "tracking_uri": saved.get("tracking_uri"),
            "storage_path": storage_path, "run_name": name, "state_dir": ""}
    return {"spec": spec, "mlflow_run_id": saved.get("mlflow_run_id")}


def run_location(ref: str, tracking_uri: str | None = None) -> str:
    """The run directory of ``ref``: a run directory, a checkpoint directory inside one, a remote run
    directory URI, or an MLflow run id (``runs:/ID`` too; found through its tags in ``tracking_uri``).

    Raises:
        TrainError: ``ref`` is none of these.
    """
    path = Path(ref)
    if path.is_dir():
        if iteration_of(path.name) is not None:  # a checkpoint inside a run directory
            path = path.parent
        return str(path.absolute())
    if "://" in ref and not ref.startswith("runs:/"):
        return ref.rstrip("/")
    run_id = ref.removeprefix("runs:/").split("/")[0]
    tags: dict[str, str] = {}
    if tracking_uri:
        from predrnn.tracking import Tracker

        try:
            tags = Tracker(tracking_uri, check=False).run_tags(run_id)
        except PredrnnError as err:
            raise TrainError(f"{ref!r} is neither a run directory nor a known MLflow run: {err}") from err
    if "ray.storage_path" not in tags:
        raise TrainError(f"{ref!r} is neither a run directory nor an MLflow run of predrnn train "
                         "(no ray.storage_path tag); pass the run directory")
    return f"{tags['ray.storage_path'].rstrip('/')}/{tags['ray.run_name']}"


def run_config(ref: str, tracking_uri: str | None = None, s3: S3Settings | None = None) -> ExperimentConfig:
    """The config a run was started with (``ref`` as for :func:`run_location`): the base of
    ``--resume`` and ``--fork`` at the door.

    Raises:
        TrainError: ``ref`` is not a run of ``predrnn train``.
    """
    run_dir = run_location(ref, tracking_uri)
    saved = read_run_info(run_dir, s3)
    if saved is None:
        raise TrainError(f"{ref}: {run_dir} holds no {RUN_INFO}; pass a run directory written by predrnn train")
    return ExperimentConfig.from_dict(saved["spec"]["cfg"])


def trained_to(run_dir: str, s3: S3Settings | None = None) -> int:
    """The iteration of the run's newest readable checkpoint (0: none), where a resume continues; a
    corrupt or cut-short checkpoint is skipped as the workers skip it."""
    from ray.train import Checkpoint

    from predrnn.checkpoint import CheckpointError
    from predrnn.train.state import load_checkpoint

    fs, path = storage.filesystem(run_dir, s3)
    try:
        dirs = storage.checkpoint_dirs(fs, path)
    except OSError:
        return 0
    for (iteration, _), where in reversed(dirs):
        try:
            with Checkpoint(where, filesystem=fs).as_directory() as local:
                load_checkpoint(local)
            return iteration
        except CheckpointError:
            continue
    return 0


# What ``--resume`` may change: the cluster (compute.*), what the dataset says about its values, and
# a larger ``optim.max_iterations``. Anything else would make the continued run a different experiment.
_RESUME_FREE = ("compute.", "values.", "data.dataset")


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
    return dataclasses.replace(saved, optim=optim, compute=given.compute)


def prepare(cfg: ExperimentConfig, *, data: str | None = None, tracking_uri: str | None = None,
            storage_path: str | None = None, state_dir: str | Path = ".state", run_name: str | None = None,
            ray_address: str | None = None, s3: S3Settings | None = None, resume: str | None = None,
            fork: str | None = None, init_weights: str | None = None, need_test: bool = True) -> RunSpec:
    """Resolve a training run once, checking everything that can be checked without workers.

    Args:
        cfg: the experiment (a preset or file with overrides; :func:`configure` folds in the cluster).
        data: dataset version URI (``ROOT/NAME@VERSION`` or ``@latest``); default ``cfg.data.dataset``.
        tracking_uri: the MLflow store (checked for reachability); None: the run is not tracked.
        storage_path: where Ray keeps run directories; default ``STATE_DIR/ray/results``.
        state_dir: the local state folder (as the door resolved it).
        run_name: the run directory name; default ``<experiment name>-<time>``.
        ray_address: an existing cluster; None starts a local one.
        s3: S3 settings for ``s3://`` storage (:func:`predrnn.settings.s3_settings`, read at the door).
        resume: a run (see :func:`run_location`) to continue: same run directory and MLflow run, its own
            config (only a larger ``optim.max_iterations`` from ``cfg``, :func:`resumed_config`) and data.
        fork: a run whose latest checkpoint (weights, optimiser, iteration, RNG) a new run starts from,
            with ``cfg``; its MLflow run is tagged with the parent's.
        init_weights: a model directory or ``models:/NAME@ALIAS`` whose weights start a new run.
        need_test: the run ends with a test evaluation, so the dataset must have a test split.

    Raises:
        ConfigError, DataError, TrackingError, TrainError: naming the problem, before anything starts.
    """
    s3 = keyless(s3)
    state = str(Path(state_dir).absolute())
    if tracking_uri:
        from predrnn.tracking import check_tracking

        check_tracking(tracking_uri)
    run_id: str | None = None
    extended_from: int | None = None
    if resume:
        run_dir = run_location(resume, tracking_uri)
        saved = read_run_info(run_dir, s3)
        if saved is None:
            raise TrainError(f"--resume {resume}: {run_dir} holds no {RUN_INFO}; pass a run directory written by "
                             "predrnn train")
        old = RunSpec.from_dict(saved["spec"])
        if data and data not in (old.dataset.uri, old.cfg.data.dataset):
            from predrnn.data.store import open_version

            if str(open_version(data, s3 or None).uri) != old.dataset.uri:  # e.g. @latest has moved on
                raise TrainError(f"--resume continues on the run's own dataset {old.dataset.uri}; "
                                 f"refused: --data {data} (another version)")
        cfg = resumed_config(old.cfg, cfg)
        done = trained_to(run_dir, s3)
        if cfg.optim.max_iterations <= done:
            raise TrainError(f"--resume {resume}: the run has already trained to iteration {done}; continue it "
                             f"with --set optim.max_iterations=N above {done}")
        if cfg.optim.max_iterations != old.cfg.optim.max_iterations:
            extended_from = old.cfg.optim.max_iterations
        run_id, data = saved.get("mlflow_run_id"), old.dataset.uri
        storage_path, run_name = old.storage_path, old.run_name
    cfg = configure(cfg, data=data or cfg.data.dataset)
    info = validate_dataset(cfg, cfg.data.dataset, world_size=cfg.compute.num_workers, need_test=need_test,
                            s3=s3 or None)
    if info.values:  # what the values are comes from the dataset, never from the preset
        from predrnn.values import with_values

        cfg = with_values(cfg, info.values)
    tags: dict[str, str] = {}
    fork_checkpoint: str | None = None
    if fork and not resume:
        parent_dir = run_location(fork, tracking_uri)
        parent = read_run_info(parent_dir, s3) or {}
        fork_checkpoint = storage.latest_checkpoint(parent_dir, s3)
        if fork_checkpoint is None:
            raise TrainError(f"--fork {fork}: the run has no checkpoint to start from")
        at = iteration_of(fork_checkpoint) or 0
        if cfg.optim.max_iterations <= at:
            raise TrainError(f"--fork {fork}: its latest checkpoint is at iteration {at}; set "
                             f"optim.max_iterations above it (now {cfg.optim.max_iterations})")
        tags = {"fork.parent_checkpoint": fork_checkpoint, "fork.parent_iteration": str(at),
                **({"fork.parent_run_id": str(parent["mlflow_run_id"])} if parent.get("mlflow_run_id") else {})}
    if init_weights and not resume:
        tags["init_weights"] = str(init_weights)
    return RunSpec(cfg=cfg, dataset=info, tracking_uri=tracking_uri or None,
                   storage_path=storage_path or str(Path(state) / "ray" / "results"),
                   run_name=run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}", state_dir=state,
                   ray_address=ray_address or None, s3=s3, mlflow_run_id=run_id, extended_from=extended_from,
                   fork_checkpoint=fork_checkpoint, init_weights=None if resume else init_weights, tags=tags,
                   precision=training_precision(cfg))
