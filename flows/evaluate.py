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
                  cache_dir: str | None = None, precision: str = "fp32") -> dict[str, Any]:
    """Load ``model`` (directory or ``models:/`` URI; registry versions kept in ``cache_dir``) and evaluate
    it on ``split`` of ``dataset``.

    Scores are in the data's units; fields are scored at ``thresholds`` (default: the dataset's).
    ``context``/``horizon`` default to the model's training lengths (KTH's protocol: 10 -> 20).
    ``precision``: the model's forecasts in ``fp32`` (default, as the nightly gate compares models) or ``bf16``.

    Returns:
        ``{"model", "dataset", "split", "clips", "units", "mse", "persistence_mse", "mse_per_frame", "ssim",
        "scores": {"model": card, "persistence": card}, "summary": {"mse": .., "csi_m": .., ...},
        "persistence_summary": {...}, "table", "scorecard"}`` (a card as printed by ``predrnn score``).
    """
    from predrnn.data import validate_dataset
    from predrnn.data.batches import ZarrSource
    from predrnn.evaluation import channel_units, evaluate_split, lead_time_table, protocol, scorecards
    from predrnn.forecaster import load_forecaster
    from predrnn.scorecard import markdown, summary_values
    from predrnn.values import score_units

    net, cfg = load_forecaster(model, tracking_uri=tracking_uri, cache_dir=Path(cache_dir) if cache_dir else None)
    n_in, n_out = protocol(cfg, context, horizon)
    info = validate_dataset(cfg, dataset, for_model=True, need_length=n_in + n_out)
    metrics = evaluate_split(net, cfg, ZarrSource(info.uri), split, max_clips=max_clips, thresholds=thresholds,
                             context=n_in, horizon=n_out, precision=precision)
    m, p = metrics["model"], metrics["persistence"]
    cards = scorecards(metrics)
    units = score_units(cfg.values)
    return {"model": model, "dataset": info.uri, "split": split, "clips": m["clips"], "units": units,
            "precision": precision,
            "mse": m["mse"], "persistence_mse": p["mse"],
            "mse_per_frame": m["mse_per_frame"], "ssim": m.get("ssim"),
            "scores": cards, "summary": summary_values(cards["model"]),
            "persistence_summary": summary_values(cards["persistence"]),
            "table": lead_time_table(metrics, units=units, channel_units=channel_units(cfg)),
            "scorecard": markdown(cards, units=units, channel_units=channel_units(cfg))}


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
        precision: the model's forecasts (:mod:`predrnn.precision`), resolved here for this machine's CPU.
    """
    from predrnn.precision import describe, resolve_precision

    resolved = resolve_precision(precision, "cpu", "forecast")
    get_run_logger().info("%s", describe(precision, resolved, "cpu"))
    settings = PipelineSettings()
    uri = settings.tracking(tracking_uri)
    result = evaluate_task(model, dataset, split, max_clips, uri, thresholds, horizon, context,
                           cache_dir=str(settings.model_cache), precision=resolved)
    get_run_logger().info("%s on %s/%s: MSE/frame %s (persistence %s)", model, result["dataset"], split,
                          *("n/a" if v is None else f"{v:.4g}" for v in (result["mse"], result["persistence_mse"])))
    create_markdown_artifact(key="evaluation", description=f"{model} on {result['dataset']}",
                             markdown=evaluation_markdown(model, result))
    return {k: v for k, v in result.items() if k not in ("table", "scorecard")}
