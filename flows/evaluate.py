"""Prefect flow ``evaluate``: per-lead-time metrics of one model (and persistence) on a dataset split.

The nightly flow calls :func:`evaluate_task` for the new model and the champion on the same test
version, so their numbers are comparable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.settings import PipelineSettings


@task(name="evaluate-model", retries=2, retry_delay_seconds=5)
def evaluate_task(model: str, dataset: str, split: str = "test", max_clips: int = 0,
                  tracking_uri: str | None = None) -> dict[str, Any]:
    """Load ``model`` (directory or ``models:/`` URI) and evaluate it on ``split`` of ``dataset``.

    Returns:
        ``{"model", "dataset", "split", "clips", "mse", "persistence_mse", "mse_per_frame", "ssim", "table"}``.
    """
    from predrnn.predict import load_forecaster
    from predrnn.train import ZarrSource, evaluate_split, lead_time_table, validate_dataset

    net, cfg = load_forecaster(model, tracking_uri=tracking_uri)
    info = validate_dataset(cfg, dataset)
    metrics = evaluate_split(net, cfg, ZarrSource(info.uri), split, max_clips=max_clips)
    m, p = metrics["model"], metrics["persistence"]
    return {"model": model, "dataset": info.uri, "split": split, "clips": m["clips"], "mse": float(m["mse"]),
            "persistence_mse": float(p["mse"]), "mse_per_frame": [float(v) for v in m["mse_per_frame"]],
            "ssim": float(m.get("ssim", float("nan"))), "table": lead_time_table(metrics)}


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    model: Annotated[str, Field(min_length=1, description="models:/NAME@ALIAS, models:/NAME/VERSION or a "
                                "model directory")],
    dataset: Annotated[str, Field(min_length=1, description="dataset version URI ROOT/NAME@VERSION")],
    split: Literal["train", "val", "test"] = "test",
    max_clips: Annotated[int, Field(ge=0)] = 0,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``split`` of ``dataset`` and publish the per-lead-time table as an artifact.

    Args:
        model: the model to evaluate.
        dataset: the dataset version.
        split: which split.
        max_clips: evaluate the first N clips only (0: all).
        tracking_uri: MLflow store for ``models:/`` URIs (default: ``$MLFLOW_TRACKING_URI``).
    """
    uri = tracking_uri or PipelineSettings().tracking_uri
    result = evaluate_task(model, dataset, split, max_clips, uri)
    get_run_logger().info("%s on %s/%s: MSE/frame %.3f (persistence %.3f)", model, result["dataset"], split,
                          result["mse"], result["persistence_mse"])
    create_markdown_artifact(key="evaluation", description=f"{model} on {result['dataset']}",
                             markdown=f"## {model} on `{result['dataset']}` ({split}, {result['clips']} clips)\n\n"
                                      f"```\n{result['table']}\n```")
    return {k: v for k, v in result.items() if k != "table"}
