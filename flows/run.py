"""Entry point of the main job (README command 1, ``make run``): ``python -m flows.run [--clips N] ...``.

Tool state and telemetry settings are fixed before Prefect, Ray or MLflow are imported; the job itself
is :func:`flows.main.main_job`, against a Prefect API server that lives and dies with this process
(:func:`flows.api_server.job_api_server`, or the server ``PREFECT_API_URL`` names). The last line
printed is one JSON object.

A job stopped by SIGTERM or Ctrl-C unwinds like an error: the Prefect flow runs are marked crashed, the
MLflow run killed, Ray and the API server stopped. It then exits with 143 (SIGTERM) or 130 (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _stopped_code(stop: BaseException) -> int:
    """Shell convention, 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM.

    Nothing in the job calls ``sys.exit``: a ``SystemExit`` that reaches here was raised by a SIGTERM
    handler, ours or one that Ray or Prefect put in its place (those carry other codes).
    """
    if isinstance(stop, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return 128 + signal.SIGTERM


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="Ingest moving digits (Prefect), train `quick` on Ray Train, "
                                 "evaluate, register in MLflow, write the forecast GIF.")
    ap.add_argument("--clips", type=int, default=1200, help="moving-digits clips to generate")
    ap.add_argument("--iterations", type=int, default=None, help="training iterations (default: the preset's)")
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: local SQLite under .state/mlflow)")
    args = ap.parse_args(argv)

    from predrnn.settings import tool_env

    root = tool_env()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from flows.api_server import job_api_server

    try:
        with job_api_server():
            from flows.main import main_job

            summary = main_job(state=str(root), clips=args.clips, iterations=args.iterations,
                               workers=args.workers, tracking_uri=args.tracking_uri)
    except (SystemExit, KeyboardInterrupt) as stop:
        code = _stopped_code(stop)
        print(f"main job stopped ({stop!r}, exit {code}); its flow runs are marked crashed", file=sys.stderr,
              flush=True)
        raise SystemExit(code) from None
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
