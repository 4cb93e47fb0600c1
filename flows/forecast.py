"""Prefect flow ``forecast``: a model's forecasts of a whole dataset split, as a new forecast dataset version.

A thin door over :mod:`predrnn.jobs` (``prepare_forecast``, ``run_forecast``): the settings are read
once here; the job is resolved (the model pinned and loaded once, checked against the data) in one task
before any Ray worker starts, then forecast on Ray Data (the stack's Ray head when it is up) in another,
with the same spec. The forecasting task retries once: a retry completes the staged version of the
attempt that failed instead of starting again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.settings import PipelineSettings
from predrnn.jobs import ForecastSpec


@task(name="check-forecast-job", cache_policy=NO_CACHE)
def check_task(model: str, dataset: str, out: str, *, split: str, horizon: int | None, workers: int,
               gpus_per_worker: float, batch_size: int, precision: str, tracking_uri: str | None, cache_dir: str,
               ray_address: str | None) -> ForecastSpec:
    """The job resolved once (:func:`predrnn.jobs.prepare_forecast`): the model pinned and loaded, checked
    against the data (frames, channels, units, clip length) and the output place, before any worker starts.
    The spec stays in this process (it holds the loaded model); it is never persisted or cached."""
    from pathlib import Path

    from predrnn.jobs import prepare_forecast

    settings = PipelineSettings()  # this task's door: the S3 settings (never the keys)
    return prepare_forecast(model, dataset, out, split=split, horizon=horizon, workers=workers,
                            gpus_per_worker=gpus_per_worker, batch_size=batch_size, precision=precision,
                            tracking_uri=tracking_uri, cache_dir=Path(cache_dir), ray_address=ray_address,
                            s3=settings.s3())


@task(name="forecast-ray-data", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def forecast_task(spec: ForecastSpec) -> dict[str, Any]:
    """Forecast the job on Ray Data and publish the version (:func:`predrnn.jobs.run_forecast`); a retry
    completes the staged version of the attempt that failed."""
    from predrnn.jobs import run_forecast

    return run_forecast(spec, progress=get_run_logger().info)


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
    from predrnn.forecaster import is_registry_ref

    settings = PipelineSettings()
    target = out or f"{settings.datasets_root.rstrip('/')}/{parse_uri(dataset)[1]}-forecast"
    spec = check_task(model, dataset, target, split=split, horizon=horizon, workers=workers,
                      gpus_per_worker=gpus_per_worker, batch_size=batch_size, precision=precision,
                      tracking_uri=settings.tracking(tracking_uri) if is_registry_ref(model) else None,
                      cache_dir=str(settings.model_cache), ray_address=settings.ray_address)
    plan, resolved = spec.plan(), spec.precision
    log = get_run_logger()
    log.info("%s", spec.describe())
    result = forecast_task(spec)
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
