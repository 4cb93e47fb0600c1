"""Batch forecasting of a whole dataset split on Ray Data, written as a new forecast dataset version.

The job reads the source version's split in its stored order, forecasts the clips in parallel actors
that each hold the model (``workers`` of them, ``gpus_per_worker`` GPUs each), and writes each forecast
at its position in a staged forecast dataset (:mod:`predrnn.data.forecasts`), which is published only
when every clip is written and reads back as written. The driver holds only clip positions, so its
memory does not grow with the dataset. Ray Data restarts an actor that dies and retries its batch; a
job killed as a whole publishes nothing, and its rerun forecasts only the clips still missing.

Ray is imported inside functions only; the model, data and forecast code it runs are the core's.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from predrnn.config import ExperimentConfig
from predrnn.data.errors import DataError
from predrnn.errors import PredrnnError

if TYPE_CHECKING:
    from predrnn.data.store import S3Settings


class ForecastError(PredrnnError, ValueError):
    """A forecast job the cluster cannot run as asked (e.g. more GPUs than it has)."""


@dataclass(frozen=True)
class ForecastJob:
    """A checked forecast job: the source, the clips to forecast and the model's context and horizon."""

    source_uri: str
    split: str
    source_index: np.ndarray  # (n,) int64, the split's clips in stored order
    split_codes: np.ndarray  # (n,) uint8
    frame_shape: tuple[int, int, int]  # (H, W, C)
    context: int
    horizon: int
    root: str
    name: str
    source_attrs: dict[str, Any]  # the source version's attributes (values, normalisation)


def weights_digest(model: Any) -> str:
    """SHA-256 (hex) of a model's parameters and buffers, in state-dict order: the model's identity."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(np.ascontiguousarray(value.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


def check_job(cfg: ExperimentConfig, data: str, out: str, *, split: str = "test", horizon: int | None = None,
              s3: S3Settings | None = None) -> ForecastJob:
    """Check a forecast job before any worker starts: the output place, the source split, and the model
    against the data (frame size, channels, value kind and units, clip length), reading one clip.

    Args:
        cfg: the model's experiment config (its context is ``data.input_length`` frames).
        data: the source dataset version ``ROOT/NAME[@VERSION]`` (``@latest`` by default).
        out: the forecast dataset ``ROOT/NAME`` (a new version is added to it).
        horizon: frames to forecast (default: the model's ``data.total_length - data.input_length``).

    Raises:
        DataError: an ``out`` that names a version, is the source, holds observations or another source's
            forecasts; a missing or empty split; a forecast dataset as the source; clips shorter than the
            context; or a model/dataset mismatch (one line naming both sides).
    """
    from predrnn.data.info import check_values_match
    from predrnn.data.store import open_version, parse_uri
    from predrnn.predict import PredictError, check_context
    from predrnn.values import from_dataset_attrs

    if "@" in out.rsplit("/", 1)[-1]:
        raise DataError(f"--out {out!r} names a version; give ROOT/NAME (the job adds a new version)")
    root, name, _ = parse_uri(out)
    horizon = cfg.data.total_length - cfg.data.input_length if horizon is None else horizon
    if horizon < 1:
        raise DataError(f"horizon must be >= 1 frame, got {horizon}")
    try:
        version = open_version(data, s3)
        index = version.split_indices(split)
    except DataError as err:
        raise DataError(f"cannot open dataset {data!r}: {err}") from None
    if index.size == 0:
        raise DataError(f"dataset {version.uri} has no {split!r} clips to forecast")
    if isinstance(version.attrs.get("forecast"), dict):
        raise DataError(f"dataset {version.uri} is a forecast dataset; forecast from observations (its source is "
                        f"{version.attrs['forecast'].get('source')})")
    _check_out(root, name, version, s3)
    _, t, h, w, c = version.shape
    context = cfg.data.input_length
    if t < context:
        raise DataError(f"dataset {version.uri} has clips of {t} frames; the model's context needs {context}")
    check_values_match(version.uri, from_dataset_attrs(version.attrs), cfg.values)
    try:
        check_context(version.read(index[:1])[:, :context], cfg)
    except PredictError as err:
        raise DataError(f"dataset {version.uri} does not fit the model: {err}") from None
    return ForecastJob(source_uri=version.uri, split=split, source_index=index,
                       split_codes=version.split_codes[index], frame_shape=(h, w, c), context=context,
                       horizon=horizon, root=root, name=name, source_attrs=version.attrs)


def _check_out(root: str, name: str, source: Any, s3: S3Settings | None) -> None:
    """Forecasts go to a dataset of their own, one per source dataset: ``ROOT/NAME`` must not be the
    source, a dataset of observations, or a forecast dataset of another source.

    Raises:
        DataError: ``ROOT/NAME`` is the source dataset, holds versions that are not forecasts, or holds
            forecasts of another dataset.
    """
    from predrnn.data.store import list_manifests, open_backend

    backend = open_backend(root, s3)
    mine = source.backend.join(source.name)
    if backend.join(name) == mine:
        raise DataError(f"--out {backend.join(name)} is the source dataset; forecasts go to a dataset of their own, "
                        f"e.g. {backend.join(name + '-forecast')}")
    for m in list_manifests(backend, name):
        f = m.get("attrs", {}).get("forecast")
        if not isinstance(f, dict):
            raise DataError(f"--out {backend.join(name)} holds observations (version {m['version']} was ingested); "
                            "forecasts go to a dataset of their own")
        theirs = str(f.get("source", "")).rsplit("@", 1)[0]
        if theirs != mine:
            raise DataError(f"--out {backend.join(name)} holds forecasts of {theirs}, not of {mine}; give each source "
                            "dataset a forecast dataset of its own")


class _ForecastActor:
    """A Ray Data actor holding the model: forecasts a batch of positions and writes them to the stage."""

    def __init__(self, cfg_json: str, shared: list[Any], source_uri: str, context: int, horizon: int,
                 device: str, s3: S3Settings | None, precision: str = "fp32") -> None:
        import ray
        import torch

        from predrnn.data.store import open_version
        from predrnn.models import build_model

        # The weights, the stage and the clip index come as one object ref inside a list, which Ray does not
        # resolve: they are put in the object store once, and the driver keeps them alive for the whole job,
        # so an actor that Ray restarts finds them again.
        state, staged, source_index = ray.get(shared[0])
        self.cfg = ExperimentConfig.from_json(cfg_json)
        self.model = build_model(self.cfg)
        self.model.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
        self.device = device
        self.model.to(device).eval()
        self.source = open_version(source_uri, s3)
        self.staged, self.index = staged, source_index
        self.context, self.horizon, self.precision = context, horizon, precision

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from predrnn.predict import forecast_array

        positions = np.asarray(batch["position"], dtype=np.int64)
        clips = self.source.read(self.index[positions])[:, :self.context]
        pred = forecast_array(self.model, self.cfg, clips, self.horizon, batch_size=len(positions),
                              device=self.device, precision=self.precision)
        self.staged.write(positions, pred)
        return {"position": positions}


def forecast_dataset(model: Any, cfg: ExperimentConfig, job: ForecastJob, *, model_ref: str,
                     model_version: str | None = None, workers: int = 1, gpus_per_worker: float = 0.0,
                     batch_size: int = 16, ray_address: str | None = None, ray_temp_dir: str | None = None,
                     s3: S3Settings | None = None, progress_bars: bool = False,
                     progress: Callable[[str], None] | None = None, precision: str = "fp32",
                     baseline: str | None = None) -> dict[str, Any]:
    """Forecast every clip of a checked job (:func:`check_job`) on Ray Data; publish the forecast version.

    Each clip's first ``job.context`` frames are the context; its forecast, (horizon, H, W, C) float32
    in the data's units, is stored at the clip's position in the split's stored order. The same job
    (same weights, source version, split, context, horizon) already published returns that version
    without forecasting; a staged, unpublished one (a killed run) is completed.

    Args:
        model: the loaded forecaster (an ``nn.Module`` with ``forecast``); its weights go to every actor.
        model_ref: the model as the user named it; ``model_version``: the registry version it resolved to.
        workers: Ray Data actors, each holding the model; ``gpus_per_worker``: GPUs each (0: CPU).
        batch_size: clips per forward pass (and per Ray Data batch).
        ray_address: an existing cluster (``HOST:PORT``); None starts a local one (no dashboard) in
            ``ray_temp_dir``.
        s3: S3 settings for roots on S3 (as the door read them); None: the S3 client's defaults.
        progress_bars: Ray Data's progress bars (a terminal); off, the plain ``progress`` lines stand in.
        progress: called with one plain line at each stage and every 5 s while forecasting.
        precision: ``fp32`` or ``bf16`` autocast in the actors (:mod:`predrnn.precision`, resolved at the
            door); recorded in the version's ``forecast`` attributes, and a bf16 job is a job of its own.
        baseline: forecast with this baseline (:data:`predrnn.baselines.BASELINES`) instead of ``model``
            (None then): in this process, ``batch_size`` clips at a time, no Ray; the job's identity is the
            baseline's name instead of a weights digest.

    Returns:
        ``{"uri", "clips", "resumed", "reused", "forecast_s", "clips_per_s", "workers", "job"}``:
        the published version, clips forecast by this call, clips a killed run had written, whether the
        version already existed, and the throughput of the forecasting stage.

    Raises:
        ForecastError: the workers ask for more GPUs than the cluster has (before anything is staged).
        DataError: a clip missing or not as written when publishing (nothing is published).
    """
    from predrnn.data.forecasts import find_published, job_id, publish_forecast, stage_forecast
    from predrnn.precision import normalise
    from predrnn.values import from_dataset_attrs

    say = progress or (lambda line: None)
    if workers < 1 or gpus_per_worker < 0 or batch_size < 1:
        raise DataError("workers and batch size must be >= 1 and GPUs per worker >= 0")
    precision = normalise(precision)
    if precision == "auto":
        raise DataError("forecast_dataset takes a resolved precision (fp32 or bf16), got auto")
    identity = {"baseline": baseline} if baseline else {"weights_sha256": weights_digest(model)}
    spec: dict[str, Any] = {**identity, "source": job.source_uri, "split": job.split,
                            "context": job.context, "horizon": job.horizon}
    if baseline:
        precision = "fp32"  # a baseline computes in float64 (pysteps), stored as float32
    elif precision != "fp32":  # fp32 jobs keep the identity they had before precision was a choice
        spec["precision"] = precision
    jid = job_id(spec)
    n = int(job.source_index.size)
    found = find_published(job.root, job.name, jid, s3)
    if found:
        say(f"the same forecast is published already: {found}")
        return {"uri": found, "clips": 0, "resumed": n, "reused": True, "forecast_s": 0.0, "clips_per_s": None,
                "workers": workers, "job": jid}
    from predrnn.data.store import parse_uri

    src = job.source_attrs
    _, src_name, src_version = parse_uri(job.source_uri)
    values = from_dataset_attrs(src)
    image = values.kind == "image"
    forecast_attrs = {**spec, "precision": precision, "job": jid, "model": model_ref, "model_version": model_version,
                      "source_name": src_name, "source_version": src_version,
                      "lead_time_frames": list(range(1, job.horizon + 1)), "first_lead_frame": job.context}
    attrs = {
        "source": {"kind": "forecast", "location": job.source_uri,
                   "description": f"forecasts of {model_version or model_ref} for {job.source_uri} ({job.split})",
                   "checksum": "", "options": {}},
        "frame_shape": list(job.frame_shape), "clip_length": job.horizon,
        "value_kind": "image" if image else "physical", "units": values.units,
        "value_range": [0.0, 1.0] if image else None,
        "values": {**src.get("values", {}), "kind": values.kind, "units": values.units},
        "normalisation": src.get("normalisation", {}),
        "split": {"method": "source", "source_split": job.split,
                  "sizes": {s: int((job.split_codes == code).sum())
                            for s, code in (("train", 0), ("val", 1), ("test", 2))}},
        "forecast": forecast_attrs,
    }
    if baseline:
        return _baseline_dataset(baseline, job, attrs, jid, batch_size=batch_size, s3=s3, say=say)
    from predrnn.train.launch import ensure_ray, shutdown

    ray_started = ensure_ray(ray_address, temp_dir=ray_temp_dir, dashboard=False)
    try:
        _check_gpus(workers, gpus_per_worker)  # before anything is staged
        shape = (n, job.horizon, *job.frame_shape)
        staged = stage_forecast(job.root, job.name, job=jid, shape=shape, split_codes=job.split_codes,
                                source_index=job.source_index, attrs=attrs, s3=s3)
        pending = staged.pending()
        if staged.resumed:
            say(f"resuming job {jid}: {staged.resumed} of {n} clips were written by an earlier run")
        started = time.perf_counter()
        if pending.size:
            _run_actors(model, cfg, job, staged, pending, workers=workers, gpus_per_worker=gpus_per_worker,
                        batch_size=batch_size, s3=s3, progress_bars=progress_bars, say=say, precision=precision)
        forecast_s = time.perf_counter() - started
    finally:
        shutdown(ray_started)
    say(f"checking {n} clips against their digests and publishing")
    uri = publish_forecast(staged)
    return {"uri": uri, "clips": int(pending.size), "resumed": staged.resumed, "reused": False,
            "forecast_s": round(forecast_s, 3),
            "clips_per_s": round(pending.size / forecast_s, 2) if pending.size and forecast_s > 0 else None,
            "workers": workers, "job": jid}


def _baseline_dataset(name: str, job: ForecastJob, attrs: dict[str, Any], jid: str, *, batch_size: int,
                      s3: S3Settings | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Forecast the job with baseline ``name`` in this process and publish it (see :func:`forecast_dataset`)."""
    import torch

    from predrnn.baselines import baseline_forecast
    from predrnn.data.forecasts import publish_forecast, stage_forecast
    from predrnn.data.store import open_version
    from predrnn.values import from_dataset_attrs

    values = from_dataset_attrs(job.source_attrs)
    n = int(job.source_index.size)
    staged = stage_forecast(job.root, job.name, job=jid, shape=(n, job.horizon, *job.frame_shape),
                            split_codes=job.split_codes, source_index=job.source_index, attrs=attrs, s3=s3)
    pending = staged.pending()
    if staged.resumed:
        say(f"resuming job {jid}: {staged.resumed} of {n} clips were written by an earlier run")
    source = open_version(job.source_uri, s3)
    started = last = time.perf_counter()
    for i in range(0, pending.size, batch_size):
        positions = pending[i:i + batch_size]
        clips = torch.from_numpy(np.asarray(source.read(job.source_index[positions])[:, :job.context], np.float32))
        staged.write(positions, baseline_forecast(name, clips, job.horizon, values).numpy())
        now = time.perf_counter()
        if now - last >= 5.0 or i + batch_size >= pending.size:
            last = now
            done = min(i + batch_size, int(pending.size))
            say(f"forecast {done}/{pending.size} clips with {name} ({done / max(now - started, 1e-9):.1f} clips/s)")
    forecast_s = time.perf_counter() - started
    say(f"checking {n} clips against their digests and publishing")
    uri = publish_forecast(staged)
    return {"uri": uri, "clips": int(pending.size), "resumed": staged.resumed, "reused": False,
            "forecast_s": round(forecast_s, 3),
            "clips_per_s": round(pending.size / forecast_s, 2) if pending.size and forecast_s > 0 else None,
            "workers": 1, "job": jid}


def _check_gpus(workers: int, gpus_per_worker: float) -> None:
    """Raises ForecastError when the connected Ray cluster has fewer GPUs than the workers ask for (Ray
    would wait for them forever)."""
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0))
    if gpus_per_worker > 0 and gpus < gpus_per_worker * workers:
        raise ForecastError(f"{workers} worker(s) x {gpus_per_worker:g} GPU need {workers * gpus_per_worker:g} GPUs; "
                            f"the Ray cluster has {gpus:g} (fewer workers, fewer GPUs each, or 0 for the CPU)")


def _run_actors(model: Any, cfg: ExperimentConfig, job: ForecastJob, staged: Any, pending: np.ndarray, *,
                workers: int, gpus_per_worker: float, batch_size: int, s3: S3Settings | None,
                progress_bars: bool, say: Callable[[str], None], precision: str) -> None:
    """Forecast the ``pending`` positions with ``workers`` Ray Data actors on the connected cluster."""
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress_bars
    if not progress_bars:  # the plain progress lines below stand in for the bars; no notice about them
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its "execution finished" even when interrupted
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    shared = ray.put((state, staged, job.source_index))
    device = "cuda" if gpus_per_worker > 0 else "cpu"
    positions = ray.data.from_items([{"position": int(p)} for p in pending])
    ds = positions.map_batches(
        _ForecastActor, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1, num_gpus=gpus_per_worker or None,
        fn_constructor_kwargs={"cfg_json": cfg.to_json(), "shared": [shared], "source_uri": job.source_uri,
                               "context": job.context, "horizon": job.horizon, "device": device, "s3": s3,
                               "precision": precision})
    # Ray Data restarts an actor that dies and retries its batch (its defaults for actor pools)
    done, total, t0, last = 0, int(pending.size), time.perf_counter(), 0.0
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            done += len(batch["position"])
            now = time.perf_counter()
            if now - last >= 5.0 or done == total:
                last = now
                say(f"forecast {done}/{total} clips ({done / max(now - t0, 1e-9):.1f} clips/s, "
                    f"{workers} workers)")
    except KeyboardInterrupt:
        say(f"interrupted after {done} of {total} clips: nothing is published; the same command completes the "
            "job, forecasting only the clips still missing")
        raise
