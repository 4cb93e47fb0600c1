"""Prefect flow ``forecast``: a model's forecasts of a whole dataset split, as a new forecast dataset version.

A thin door over :mod:`predrnn.batch_forecast`: the settings are read once here; the job is checked
(model against data) in one task before any Ray worker starts, then forecast on Ray Data (the stack's
Ray head when it is up) in another. The forecasting task retries once: a retry completes the staged
version of the attempt that failed instead of starting again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.settings import PipelineSettings


def _load(model: str, tracking_uri: str | None, cache_dir: str) -> tuple[Any, Any, str | None]:
    """The forecaster, its config and the registry version it resolved to (None for a model directory)."""
    from pathlib import Path

    from predrnn.forecaster import load_forecaster
    from predrnn.tracking.model import pinned_ref

    version = pinned_ref(model, tracking_uri) if tracking_uri else None
    net, cfg = load_forecaster(version or model, tracking_uri=tracking_uri, cache_dir=Path(cache_dir))
    return net, cfg, version


@task(name="check-forecast-job")
def check_task(model: str, dataset: str, out: str, split: str, horizon: int | None, tracking_uri: str | None,
               cache_dir: str, s3: dict[str, Any]) -> dict[str, Any]:
    """The model against the data (frames, channels, units, clip length) and the output place, before any
    worker starts; returns what the job will do."""
    from predrnn.batch_forecast import check_job

    _, cfg, version = _load(model, tracking_uri, cache_dir)
    job = check_job(cfg, dataset, out, split=split, horizon=horizon, s3=s3)
    return {"source": job.source_uri, "clips": int(job.source_index.size), "context": job.context,
            "horizon": job.horizon, "model_version": version}


@task(name="forecast-ray-data", retries=1, retry_delay_seconds=5)
def forecast_task(model: str, dataset: str, out: str, split: str, horizon: int | None, workers: int,
                  gpus_per_worker: float, batch_size: int, tracking_uri: str | None, cache_dir: str,
                  ray_address: str | None, s3: dict[str, Any], precision: str = "fp32") -> dict[str, Any]:
    """Forecast the split on Ray Data and publish the version (:func:`predrnn.batch_forecast.forecast_dataset`)."""
    from predrnn.batch_forecast import check_job, forecast_dataset

    log = get_run_logger()
    net, cfg, version = _load(model, tracking_uri, cache_dir)
    job = check_job(cfg, dataset, out, split=split, horizon=horizon, s3=s3)
    from pathlib import Path

    ref = model if model.startswith(("models:/", "runs:/")) else str(Path(model).resolve())
    return forecast_dataset(net, cfg, job, model_ref=ref, model_version=version, workers=workers,
                            gpus_per_worker=gpus_per_worker, batch_size=batch_size, ray_address=ray_address,
                            s3=s3, progress=log.info, precision=precision)


@flow(name="forecast")
def forecast_flow(
    model: Annotated[str, Field(min_length=1, description="models:/NAME@ALIAS, models:/NAME/VERSION or a "
                                "model directory")],
    dataset: Annotated[str, Field(min_length=1, description="source dataset version ROOT/NAME@VERSION")],
    out: Annotated[str | None, Field(description="forecast dataset ROOT/NAME (default: "
                                     "DATASETS_ROOT/<source name>-forecast)")] = None,
    split: Literal["train", "val", "test", "all"] = "test",
    horizon: Annotated[int | None, Field(ge=1, description="lead times (default: the model's)")] = None,
    workers: Annotated[int, Field(ge=1, description="Ray Data actors, each holding the model")] = 2,
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0.0,
    batch_size: Annotated[int, Field(ge=1, description="clips per forward pass")] = 16,
    tracking_uri: str | None = None,
    precision: Annotated[Literal["auto", "bf16", "fp32"], Field(
        description="auto: bf16 where the processor computes it natively, else fp32")] = "auto",
) -> dict[str, Any]:
    """Forecast every clip of ``split`` of ``dataset`` with ``model`` into a new forecast dataset version.

    Args:
        model: the forecaster.
        dataset: the source version; each clip's first context frames are the input.
        out: where the forecast dataset goes (a new version is added to it).
        split: which clips, in their stored order.
        horizon: frames forecast (default: the model's training horizon).
        workers, gpus_per_worker, batch_size: Ray Data actors, GPUs each, clips per forward pass.
        tracking_uri: MLflow store for ``models:/`` URIs (default: ``$MLFLOW_TRACKING_URI``).
        precision: the forecast's precision (:mod:`predrnn.precision`), resolved here for the actors' device.

    Returns:
        ``{"uri", "clips", "resumed", "reused", "forecast_s", "clips_per_s", "workers", "job"}``.
    """
    from predrnn.data import parse_uri
    from predrnn.precision import describe, resolve_precision

    device = "cuda" if gpus_per_worker > 0 else "cpu"
    resolved = resolve_precision(precision, device, "forecast")
    settings = PipelineSettings()
    uri = settings.tracking(tracking_uri) if model.startswith(("models:/", "runs:/")) else None
    s3 = settings.s3()
    target = out or f"{settings.datasets_root.rstrip('/')}/{parse_uri(dataset)[1]}-forecast"
    plan = check_task(model, dataset, target, split, horizon, uri, str(settings.model_cache), s3)
    log = get_run_logger()
    log.info("forecasting %d %s clips of %s with %s: %d context frames -> %d lead times, %s", plan["clips"], split,
             plan["source"], plan["model_version"] or model, plan["context"], plan["horizon"],
             describe(precision, resolved, device))
    result = forecast_task(model, dataset, target, split, horizon, workers, gpus_per_worker, batch_size, uri,
                           str(settings.model_cache), settings.ray_address, s3, resolved)
    rate = f"{result['clips_per_s']} clips/s on {workers} workers" if result["clips_per_s"] else "reused"
    create_markdown_artifact(
        key="forecast", description=f"forecasts of {plan['source']}",
        markdown=(f"## Forecast dataset `{result['uri']}`\n\n| | |\n|---|---|\n"
                  f"| model | `{plan['model_version'] or model}` |\n| source | `{plan['source']}` ({split}) |\n"
                  f"| clips | {plan['clips']} ({plan['context']} context frames -> {plan['horizon']} lead times) |\n"
                  f"| forecast | {result['clips']} clips this run, {result['resumed']} earlier ({rate}) |\n"
                  f"| precision | {resolved} |\n"))
    log.info("published %s", result["uri"])
    return result
