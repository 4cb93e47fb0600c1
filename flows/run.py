"""Entry point of the main job (README command 1, ``make run``): ``python -m flows.run [--clips N] ...``.

Tool state and telemetry settings are fixed before Prefect, Ray or MLflow are imported; the job itself
is :func:`flows.main.main_job`. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="Ingest moving digits (Prefect), train `quick` on Ray Train, "
                                 "evaluate, register in MLflow, write the forecast GIF.")
    ap.add_argument("--clips", type=int, default=1200, help="moving-digits clips to generate")
    ap.add_argument("--iterations", type=int, default=None, help="training iterations (default: the preset's)")
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: local SQLite under .state/mlflow)")
    args = ap.parse_args(argv)

    from predrnn.cli_train import tool_env

    root = tool_env()
    from flows.main import main_job

    summary = main_job(state=str(root), clips=args.clips, iterations=args.iterations, workers=args.workers,
                       tracking_uri=args.tracking_uri)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
