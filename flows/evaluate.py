"""Prefect flow ``evaluate``: per-lead-time metrics of one model (and persistence) on a dataset split.

The nightly flow calls :func:`evaluate_task` for the new model and the champion on the same test
version, so their numbers are comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.settings import PipelineSettings


@task(name="evaluate-model", retries=2, retry_delay_seconds=5)
def evaluate_task(model: str, dataset: str, split: str = "test", max_clips: int = 0,
                  tracking_uri: str | None = None, thresholds: list[float] | None = None,
                  horizon: int | None = None, context: int | None = None,
                  cache_dir: str | None = None, precision: str = "fp32", record: bool = False,
                  s3: dict[str, Any] | None = None, baselines: list[str] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (directory or registry reference, pinned to one version) on ``split`` of ``dataset``
    (:func:`predrnn.jobs.prepare_evaluate` then :func:`~predrnn.jobs.run_evaluate`); ``record``: as a new MLflow
    run in ``tracking_uri``. ``precision`` defaults to fp32, as the nightly gate compares models. ``s3``: the
    flow's keyless S3 settings (:func:`predrnn.settings.s3_settings`). ``baselines``: scored beside the model
    (None: all that apply).

    Returns:
        :meth:`predrnn.jobs.EvaluateResult.summary`: ``{"model", "model_version", "dataset", "split", "clips",
        "units", "precision", "mse", "persistence_mse", "mse_per_frame", "ssim", "scores", "summary",
        "persistence_summary", "table", "scorecard"[, "run_id"]}``.
    """
    from predrnn.jobs import prepare_evaluate, run_evaluate

    spec = prepare_evaluate(model, dataset, split=split, max_clips=max_clips, thresholds=thresholds,
                            context=context, horizon=horizon, precision=precision, tracking_uri=tracking_uri,
                            cache_dir=Path(cache_dir) if cache_dir else None, record=record, s3=s3,
                            baselines=baselines)
    return run_evaluate(spec).summary()


def evaluation_markdown(title: str, result: dict[str, Any]) -> str:
    """The per-lead-time table and the scorecard of one evaluation, for a Prefect artifact."""
    units = f", values in {result['units']}" if result.get("units") else ""
    units += f", forecast in {result['precision']}" if result.get("precision") else ""
    return (f"## {title} (`{result['dataset']}`, {result['split']}, {result['clips']} clips{units})\n\n"
            f"```\n{result['table']}\n```\n\n{result['scorecard']}")


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    model: Annotated[str, Field(min_length=1, description="models:/NAME@ALIAS, models:/NAME/VERSION or a "
                                "model directory")],
    dataset: Annotated[str, Field(min_length=1, description="dataset version URI ROOT/NAME@VERSION")],
    split: Literal["train", "val", "test"] = "test",
    max_clips: Annotated[int, Field(ge=0)] = 0,
    tracking_uri: str | None = None,
    thresholds: Annotated[list[float] | None, Field(description="verification thresholds in the data's "
                                                    "units (default: the dataset's)")] = None,
    horizon: Annotated[int | None, Field(ge=1, description="lead times (default: the model's)")] = None,
    context: Annotated[int | None, Field(ge=1, description="context frames (default: the model's)")] = None,
    precision: Annotated[Literal["auto", "bf16", "fp32"], Field(
        description="auto: bf16 where the processor computes it natively, else fp32")] = "auto",
    log: Annotated[bool, Field(description="record the evaluation as a new MLflow run")] = False,
    baselines: Annotated[list[Literal["persistence", "extrapolation", "sprog"]] | None, Field(
        description="baselines scored beside the model (default: all that apply to the data)")] = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``split`` of ``dataset`` and publish the per-lead-time scorecard as an artifact.

    Args:
        model: the model to evaluate.
        dataset: the dataset version.
        split: which split.
        max_clips: evaluate the first N clips only (0: all).
        tracking_uri: MLflow store for ``models:/`` URIs (default: ``$MLFLOW_TRACKING_URI``).
        thresholds: CSI/FSS thresholds in the data's units (default: recorded by the dataset).
        horizon, context: frames forecast and given (default: the model's training lengths).
        precision: the model's forecasts (:mod:`predrnn.precision`), resolved for this machine's CPU.
        baselines: persistence, extrapolation (pysteps optical flow and advection), sprog (pysteps S-PROG);
            default: every one that applies (images and several variables: persistence).
        log: record the evaluation as a new MLflow run (metrics per lead time, scorecards), as ``predrnn
            evaluate --log`` does.
    """
    settings = PipelineSettings()
    result = evaluate_task(model, dataset, split, max_clips, settings.tracking(tracking_uri), thresholds, horizon,
                           context, cache_dir=str(settings.model_cache), precision=precision, record=log,
                           s3=settings.s3(), baselines=list(baselines) if baselines else None)
    get_run_logger().info("forecast in %s", result["precision"])
    get_run_logger().info("%s on %s/%s: MSE/frame %s (persistence %s)", model, result["dataset"], split,
                          *("n/a" if v is None else f"{v:.4g}" for v in (result["mse"], result["persistence_mse"])))
    create_markdown_artifact(key="evaluation", description=f"{model} on {result['dataset']}",
                             markdown=evaluation_markdown(model, result))
    return {k: v for k, v in result.items() if k not in ("table", "scorecard")}
