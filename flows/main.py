"""The main job (README command 1): moving digits -> Zarr -> PredRNN-V2 on Ray Train -> MLflow registry.

Without a stack, Prefect's API is a temporary local server owned by the job process
(:mod:`flows.api_server`; no server to start by hand, none left behind). The job is a parent flow
with two sub-flows, ``ingest`` and ``train``, so every step shows up in Prefect's run history and in
MLflow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow

QUICK_CLIPS = 1200


@flow(name="main")
def main_flow(state: str, clips: int = QUICK_CLIPS, iterations: int | None = None, workers: int = 2,
              tracking_uri: str | None = None) -> dict[str, Any]:
    """Ingest ``clips`` generated moving-digits clips, train the ``quick`` preset, register the model.

    Args:
        state: the folder that holds datasets, Ray runs, MLflow and outputs (``.state``).
        clips: clips to generate (80 % train, 10 % val, 10 % test).
        iterations: training iterations (default: the preset's).
        workers: Ray Train workers.
        tracking_uri: MLflow store (default: the local SQLite under ``state/mlflow``).
    """
    from flows.ingest import ingest_flow
    from flows.train import train_flow

    root = Path(state)
    dataset = ingest_flow(kind="moving-digits", source="", name="digits", root=str(root / "datasets"),
                          num_clips=clips, seed=0)
    overrides = [f"optim.max_iterations={iterations}"] if iterations else []
    summary = train_flow(dataset=str(dataset), preset="quick", overrides=overrides, workers=workers,
                         tracking_uri=tracking_uri)
    return {"dataset": str(dataset), **summary}


def main_job(state: str, clips: int = QUICK_CLIPS, iterations: int | None = None, workers: int = 2,
             tracking_uri: str | None = None) -> dict[str, Any]:
    """Run :func:`main_flow`, print where everything is, and return the summary for the JSON line."""
    from predrnn.tracking import ui_command

    t0 = time.perf_counter()
    print(f"main job: state in {state}; ingest {clips} moving-digits clips, train `quick` on {workers} Ray "
          "workers, evaluate on the test split, register in MLflow", flush=True)
    summary = main_flow(state=state, clips=clips, iterations=iterations, workers=workers,
                        tracking_uri=tracking_uri)
    wall = time.perf_counter() - t0
    model = summary["test_mse_per_frame"]
    print("\n" + summary.get("table", ""))
    print(f"\ntest MSE per frame (mean over {len(model)} lead times): model {summary['test_mse']:.2f}, "
          f"persistence {summary['persistence_mse']:.2f} "
          f"({100 * (1 - summary['test_mse'] / summary['persistence_mse']):.0f} % lower)")
    print(f"dataset:        {summary['dataset']}")
    print(f"model:          {summary.get('model_uri')}  (alias {summary.get('model_alias_uri')})")
    print(f"forecast GIF:   {summary['gif']}")
    print(f"picture grid:   {summary['png']}")
    print(f"lead-time plot: {summary['plot']}")
    print(f"checkpoints:    {summary['run_dir']}")
    print(f"MLflow UI:      .venv/bin/{ui_command(summary['tracking_uri'])}")
    print(f"finished in {wall / 60:.1f} min", flush=True)
    keys = ("dataset", "tracking_uri", "model_uri", "test_mse_per_frame", "persistence_mse_per_frame", "gif",
            "test_mse", "persistence_mse", "test_ssim", "model_alias_uri", "run_id", "run_dir", "png", "plot")
    out = {k: summary.get(k) for k in keys}
    out["wall_s"] = round(wall, 1)
    return out
