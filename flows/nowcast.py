"""Prefect flow ``nowcast``: a forecast every time a radar frame arrives.

Scheduled on an interval equal to the data's time step (``prefect.yaml``: every 5 minutes, one run at a
time, a run that would overlap the one in progress is cancelled). Each run reads the newest frames of the
folder or S3 prefix where the scans arrive, forecasts them with the model (``@champion`` by default) and
writes ``<out>/<reference time>.nc`` (CF-1.10, :mod:`predrnn.jobs.nowcast`) once: a run that finds no frame
newer than the last nowcast writes nothing and says so; a missing frame inside the context or a stalled
feed fails the run with the times named (red in the Prefect UI), and nothing is written. Nowcasts older
than the retention are pruned. The run's artifact is the nowcast picture and its latency.

A thin door: the settings are read once here and passed down; the weights stay loaded between runs that
share a process (:func:`predrnn.jobs.nowcast.loaded_model`).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.settings import PipelineSettings
from predrnn.jobs.nowcast import NowcastSpec


@task(name="read-context", cache_policy=NO_CACHE)
def read_task(model: str, archive: str, *, horizon: int | None, at: str | None, max_age: float, precision: str,
              tracking_uri: str | None, cache_dir: str) -> NowcastSpec:
    """The model pinned and fetched (weights not loaded), the context read from the archive and checked
    (:func:`predrnn.jobs.nowcast.prepare_nowcast`); a gap, a short or stalled feed or another grid fails
    here, with the times named. The spec stays in this process; it is never persisted or cached."""
    from pathlib import Path

    from predrnn.jobs.nowcast import prepare_nowcast

    settings = PipelineSettings()  # this task's door: the S3 settings (never the keys)
    return prepare_nowcast(model, archive, horizon=horizon, at=at, max_age_steps=max_age, precision=precision,
                           tracking_uri=tracking_uri, cache_dir=Path(cache_dir), s3=settings.s3())


@task(name="forecast-and-write", cache_policy=NO_CACHE)
def publish_task(spec: NowcastSpec, out: str, retention_hours: float | None) -> dict[str, Any]:
    """Forecast and write ``<out>/<reference time>.nc`` unless it is there already, then prune
    (:func:`predrnn.jobs.nowcast.publish_nowcast`)."""
    import numpy as np

    from predrnn.jobs.nowcast import publish_nowcast

    keep = None if retention_hours is None else np.timedelta64(round(retention_hours * 3600), "s")
    return publish_nowcast(spec, out, retention=keep, s3=PipelineSettings().s3())


@flow(name="nowcast")
def nowcast_flow(
    archive: Annotated[str, Field(min_length=1, description="where the scans arrive: a folder of one file per "
                                  "scan, a glob, a NetCDF file or a Zarr store, local or s3://")],
    out: Annotated[str, Field(min_length=1, description="folder or s3://bucket/prefix the nowcasts are "
                              "written to, one <reference time>.nc each")],
    model: Annotated[str | None, Field(description="models:/NAME@ALIAS, models:/NAME/VERSION or a model "
                                       "directory (default: models:/$PREDRNN_MODEL_NAME@champion)")] = None,
    horizon: Annotated[int | None, Field(ge=1, description="lead times (default: the model's)")] = None,
    max_age: Annotated[float, Field(gt=0, description="how many time steps old the newest frame may be "
                                    "before the run fails as stale")] = 3,
    retention_hours: Annotated[float | None, Field(gt=0, description="nowcasts whose reference time is more "
                                                   "than this before the newest are deleted (none: keep all)")] = 24,
    at: Annotated[str | None, Field(description="forecast time, ISO 8601 (default: now, UTC); a replay of an "
                                    "archive sets it")] = None,
    tracking_uri: str | None = None,
    precision: Annotated[Literal["auto", "bf16", "fp32"], Field(
        description="auto: bf16 where the processor computes it natively, else fp32")] = "auto",
) -> dict[str, Any]:
    """One nowcast of the newest frames of ``archive`` into ``out`` (see the module docstring).

    Returns:
        ``{"uri", "reference_time", "written", "pruned", "latency_s", "timings"}``.

    Raises:
        NowcastError: a gap inside the context, too few frames, a stalled feed or another grid (the run
            fails, nothing is written).
    """
    import numpy as np

    from predrnn.forecaster import is_registry_ref
    from predrnn.jobs.nowcast import nowcast_report
    from predrnn.nowcast import utc_now

    t0 = time.perf_counter()
    settings = PipelineSettings()
    ref = model or f"models:/{settings.model_name}@champion"
    log = get_run_logger()
    spec = read_task(ref, archive, horizon=horizon, at=at, max_age=max_age, precision=precision,
                     tracking_uri=settings.tracking(tracking_uri) if is_registry_ref(ref) else None,
                     cache_dir=str(settings.model_cache))
    read_s = time.perf_counter() - t0
    log.info("%s", spec.describe())
    published = publish_task(spec, out, retention_hours)
    result = published["result"]
    total = time.perf_counter() - t0
    age = float((utc_now() - np.datetime64(spec.reference_time, "ns")) / np.timedelta64(1, "s"))
    timings = {"read": round(read_s, 2), "load": result.load_s if result else 0.0,
               "forecast": result.forecast_s if result else 0.0, "write": published["write_s"],
               "total": round(total, 2), "age": round(age, 1)}
    report = nowcast_report(spec, published, timings)
    create_markdown_artifact(key="nowcast", markdown=report["markdown"],
                             description=f"nowcast of {published['reference_time']}")
    if report["png_base64"]:
        create_image_artifact(image_url=f"data:image/png;base64,{report['png_base64']}", key="nowcast-picture",
                              description=f"nowcast of {published['reference_time']}")
        log.info("wrote %s in %.1f s (%.0f s after its reference time)", published["uri"], total, age)
    else:
        log.info("no frame newer than %s: %s is there already; nothing written", published["reference_time"],
                 published["uri"])
    for name in published["pruned"]:
        log.info("pruned %s (older than %s h)", name, retention_hours)
    return {"uri": published["uri"], "reference_time": published["reference_time"], "written": published["written"],
            "pruned": published["pruned"], "latency_s": round(total, 2), "timings": timings}
