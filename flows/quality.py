"""Prefect flow ``quality-benchmark``: the equal-budget ablation as tasks, ending with a markdown artifact.

Tasks: ingest each generated dataset -> train and test each (dataset, variant) -> write the report.
Each task returns something small (a URI, a table row of metrics).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

DEFAULT_DATASETS = ["moving-digits", "storm-cells"]
DEFAULT_VARIANTS = ["persistence", "convlstm", "predrnn_v1", "v2_decouple", "v2_rss", "v2_both"]


@task(name="ingest-benchmark-dataset", retries=2, retry_delay_seconds=5)
def ingest_task(kind: str, root: str, clips: int, overrides: list[str], horizon: int | None = None) -> str:
    from bench.ablation import prepare_dataset
    from predrnn.config import apply_overrides, preset

    return prepare_dataset(kind, root, clips, apply_overrides(preset("quick"), overrides), horizon)


@task(name="train-and-test-variant")
def variant_task(kind: str, uri: str, variant: str, iterations: int, seeds: list[int], overrides: list[str],
                 tracking_uri: str, beta: float, horizon: int | None = None) -> dict[str, Any]:
    from bench.ablation import run_variant
    from predrnn.config import apply_overrides, preset

    return run_variant(kind, uri, variant, iterations, seeds, apply_overrides(preset("quick"), overrides),
                       tracking_uri, beta, horizon)


@task(name="write-quality-report")
def report_task(out: str, results: dict[str, dict[str, Any]], iterations: int, seeds: list[int],
                command: str, horizon: int, beta: float) -> str:
    from bench.ablation import write_report

    return write_report(out, results, iterations=iterations, seeds=seeds, command=command, horizon=horizon,
                        beta=beta)


@flow(name="quality-benchmark")
def quality_benchmark(iterations: int = 400, seeds: list[int] | None = None, clips: int = 600,
                      datasets: list[str] | None = None, variants: list[str] | None = None,
                      overrides: list[str] | None = None, root: str = ".state/quality/datasets",
                      out: str = "docs/quality", tracking_uri: str = "", beta: float = 0.1,
                      horizon: int | None = None) -> dict[str, Any]:
    """Train every ablation variant at one budget on each dataset and report per-lead-time test metrics.

    Args:
        iterations: training iterations per model (schedules are scaled to it).
        seeds: seeds per variant (mean and spread are reported).
        clips: clips per generated dataset (80/10/10 split).
        datasets: generated datasets: moving-digits, storm-cells.
        variants: persistence, convlstm, predrnn_v1, v2_decouple, v2_rss, v2_both.
        overrides: ``section.field=value`` overrides of the base (``quick``) config.
        root: dataset root (folder or s3://bucket/prefix).
        out: folder for README.md, results.json and the plots.
        tracking_uri: MLflow store for one run per (dataset, variant, seed); empty: none.
        beta: decoupling loss weight of the V2 variants that use it (the authors' 0.1).
        horizon: frames forecast at test time (default: the training horizon), e.g. 20 for KTH's 10 -> 20.
    """
    from bench.ablation import eval_horizon
    from predrnn.config import apply_overrides, preset

    seeds = seeds or [0]
    overrides = overrides or []
    base = apply_overrides(preset("quick"), overrides)  # fail fast on a bad override
    horizon = eval_horizon(base, horizon)
    results: dict[str, dict[str, Any]] = {}
    for kind in datasets or DEFAULT_DATASETS:
        uri = ingest_task(kind, root, clips, overrides, horizon)
        rows = [variant_task(kind, uri, v, iterations, seeds, overrides, tracking_uri, beta, horizon)
                for v in variants or DEFAULT_VARIANTS]
        results[kind] = {"uri": uri, "rows": rows}
    command = (f"quality_benchmark(iterations={iterations}, seeds={seeds}, clips={clips}, "
               f"datasets={list(results)}, beta={beta}, horizon={horizon}) (Prefect flow quality-benchmark)")
    text = report_task(out, results, iterations, seeds, command, horizon, beta)
    create_markdown_artifact(key="quality-benchmark", markdown=text, description="equal-budget ablation")
    return {"out": out, "results": results}
