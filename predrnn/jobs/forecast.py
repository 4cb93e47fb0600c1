"""A model's forecasts of a whole dataset split as a new forecast dataset version (Ray Data, atomic,
resumable): the model pinned to one registry version and loaded once, the job checked once, before any
worker starts. A baseline (persistence, extrapolation, S-PROG: :mod:`predrnn.baselines`) forecasts the same
way into a forecast dataset that ``score`` and the exports treat like a model's. ``predrnn forecast`` and
the ``forecast`` flow run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predrnn.batch_forecast import ForecastJob
from predrnn.data.store import S3Settings, keyless
from predrnn.jobs.model import JobError, ResolvedModel, check_baselines, job_precision, resolve_model


@dataclass(frozen=True)
class ForecastSpec:
    """One forecast job, resolved once by :func:`prepare_forecast`.

    Attributes:
        model: the model, pinned and loaded; for a baseline, its name and a config that describes the data
            (context, horizon, values) with no network.
        baseline: the baseline forecasting instead of a model (:data:`predrnn.baselines.BASELINES`), or None.
        job: the checked job (source version and split, clips, context, horizon, output place).
        workers, gpus_per_worker, batch_size: Ray Data actors (each holding the model), GPUs each, clips
            per forward pass.
        precision: the actors' precision, resolved for their device; ``precision_note``: the line saying why.
        ray_address: an existing Ray cluster; None starts a local one in ``ray_temp_dir``.
        s3: where S3 is and where each process finds its credentials (never the keys).
    """

    model: ResolvedModel
    job: ForecastJob
    workers: int = 1
    gpus_per_worker: float = 0.0
    batch_size: int = 16
    precision: str = "fp32"
    precision_note: str = ""
    ray_address: str | None = None
    ray_temp_dir: str | None = None
    s3: S3Settings = field(default_factory=S3Settings)
    baseline: str | None = None

    def plan(self) -> dict[str, Any]:
        """What the job will do, for a report: source, clips, context, horizon, model version."""
        j = self.job
        return {"source": j.source_uri, "clips": int(j.source_index.size), "context": j.context,
                "horizon": j.horizon, "model": self.model.ref, "model_version": self.model.version,
                "workers": self.workers, "precision": self.precision}

    def describe(self) -> str:
        """One line: what is forecast, with which model, on how many workers, in which precision."""
        j = self.job
        return (f"forecasting {j.source_index.size} {j.split} clips of {j.source_uri}: {j.context} context frames "
                + (f"-> {j.horizon} lead times, with the {self.baseline} baseline in this process"
                   if self.baseline else f"-> {j.horizon} lead times, with {self.model.name} on {self.workers} "
                   f"worker(s); {self.precision_note}"))


def prepare_forecast(model: str, data: str, out: str, *, split: str = "test", horizon: int | None = None,
                     workers: int = 1, gpus_per_worker: float = 0.0, batch_size: int = 16,
                     precision: str = "auto", tracking_uri: str | None = None, cache_dir: Path | None = None,
                     ray_address: str | None = None, ray_temp_dir: str | None = None,
                     s3: S3Settings | None = None, context: int | None = None) -> ForecastSpec:
    """Resolve a forecast job once: the options, the model (pinned and loaded), the model against the data
    (frames, channels, units, clip length) and the output place; no worker has started.

    Args:
        model: a model directory, a run's checkpoint folder or a registry reference (:func:`resolve_model`),
            or a baseline's name (``persistence``, ``extrapolation``, ``sprog``).
        data: the source dataset version ``ROOT/NAME[@VERSION]``; ``out``: the forecast dataset ``ROOT/NAME``.
        split, horizon: which clips, and frames forecast (default: the model's training horizon).
        precision: ``auto``, ``bf16`` or ``fp32``, resolved for the actors' device.
        tracking_uri: the MLflow store of a registry reference; ``cache_dir``: where its versions are kept.
        s3: the S3 settings of the door (:func:`predrnn.settings.s3_settings`).
        context: a baseline's context frames (default: the clip's frames before the horizon); a model's is
            its own.

    Raises:
        PredrnnError (one line): options out of range, an unknown precision, a model that cannot be loaded, a
            job that does not fit (:func:`predrnn.batch_forecast.check_job`).
    """
    from predrnn.batch_forecast import check_job

    for option, value, least in (("--workers", workers, 1), ("--batch-size", batch_size, 1),
                                 ("--gpus-per-worker", gpus_per_worker, 0)):
        if value < least:
            raise JobError(f"{option} must be >= {least}, got {value}")
    from predrnn.baselines import BASELINES

    if model in BASELINES:
        chosen = _baseline_model(model, data, horizon, context, s3)
        job = check_job(chosen.cfg, data, out, split=split, horizon=horizon, s3=s3)
        check_baselines([model], job.source_uri, split, job.context, job.horizon, chosen.cfg.values, s3)
        return ForecastSpec(model=chosen, job=job, batch_size=batch_size, precision="fp32",
                            precision_note="baselines compute in float64 (pysteps)", s3=keyless(s3),
                            baseline=model)
    if context is not None:
        raise JobError("--context is a baseline's option; a model forecasts from its own context length")
    resolved, note = job_precision(precision, "cuda" if gpus_per_worker > 0 else "cpu")
    chosen = resolve_model(model, tracking_uri=tracking_uri, cache_dir=cache_dir)
    job = check_job(chosen.cfg, data, out, split=split, horizon=horizon, s3=s3)
    return ForecastSpec(model=chosen, job=job, workers=workers, gpus_per_worker=gpus_per_worker,
                        batch_size=batch_size, precision=resolved, precision_note=note, ray_address=ray_address,
                        ray_temp_dir=ray_temp_dir, s3=keyless(s3))


def run_forecast(spec: ForecastSpec, *, progress: Callable[[str], None] | None = None,
                 progress_bars: bool = False) -> dict[str, Any]:
    """Forecast the job on Ray Data and publish the version (:func:`predrnn.batch_forecast.forecast_dataset`);
    a run that fails part-way is completed by running the same spec again.

    Returns:
        ``{"uri", "clips", "resumed", "reused", "forecast_s", "clips_per_s", "workers", "job"}``.
    """
    from predrnn.batch_forecast import forecast_dataset

    if spec.baseline:
        return forecast_dataset(None, spec.model.cfg, spec.job, model_ref=spec.baseline, batch_size=spec.batch_size,
                                s3=spec.s3 or None, progress=progress, baseline=spec.baseline)
    return forecast_dataset(spec.model.net, spec.model.cfg, spec.job, model_ref=spec.model.recorded,
                            model_version=spec.model.version, workers=spec.workers,
                            gpus_per_worker=spec.gpus_per_worker, batch_size=spec.batch_size,
                            ray_address=spec.ray_address, ray_temp_dir=spec.ray_temp_dir, s3=spec.s3 or None,
                            progress_bars=progress_bars, progress=progress, precision=spec.precision)


def _baseline_model(name: str, data: str, horizon: int | None, context: int | None,
                    s3: S3Settings | None) -> ResolvedModel:
    """A baseline as the job's forecaster: a config that describes the data (its frames, values and the
    baseline's context and horizon) and no network.

    Raises:
        JobError: no horizon, a context out of range, or a baseline that does not apply to the data (with why).
    """
    from dataclasses import replace

    from predrnn.baselines import applicable_baselines
    from predrnn.config import ExperimentConfig
    from predrnn.data import DataError, open_version
    from predrnn.values import from_dataset_attrs

    if horizon is None:
        raise JobError(f"the {name} baseline has no training horizon: give --horizon")
    try:
        version = open_version(data, s3)
    except DataError as err:
        raise JobError(f"cannot open dataset {data!r}: {err}") from None
    _, t, h, w, c = version.shape
    n_in = t - horizon if context is None else int(context)
    if n_in < 1 or n_in + horizon > t:  # a baseline is scored against the clip's own frames: no forecast past them
        given = f"--context {n_in} + " if context is not None else "at least 1 context frame + "
        raise JobError(f"{given}--horizon {horizon} frames do not fit clips of {t} frames in {version.uri} (a "
                       "baseline forecasts within the clips)")
    values = from_dataset_attrs(version.attrs)
    fits = applicable_baselines(values, c)
    if name not in fits:
        raise JobError(f"the {name} baseline does not apply to {version.uri} "
                       f"({'images' if values.kind != 'field' else f'{c} channels' if c != 1 else 'a signed field'}); "
                       f"these do: {', '.join(fits)}")
    base = ExperimentConfig()
    cfg = replace(base, name=name, values=values,
                  data=replace(base.data, dataset=version.uri, img_height=h, img_width=w, img_channel=c,
                               input_length=n_in, total_length=n_in + horizon))
    return ResolvedModel(ref=name, recorded=f"baseline:{name}", version=None, cfg=cfg, net=None)
