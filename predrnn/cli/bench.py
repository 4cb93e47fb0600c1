"""``predrnn bench``: speed and memory of a training step and a forecast (:mod:`predrnn.perf`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from predrnn.cli.common import fail


def bench_cmd(
    preset: Annotated[str | None, typer.Option(
        "--preset", help="start from a preset instead of the default bench config")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. model.num_hidden=[64,64]")] = None,
    reps: Annotated[int, typer.Option("--reps", help="timed repetitions per measurement")] = 5,
    json_only: Annotated[bool, typer.Option("--json", help="print only the JSON line")] = False,
    bf16: Annotated[bool, typer.Option("--bf16/--no-bf16", help="also time our model under bf16 autocast (once "
                                       "only where the CPU emulates bf16: many times slower)")] = True,
    log: Annotated[bool, typer.Option("--log/--no-log", help="record the result as a run of the MLflow "
                                      "experiment predrnn-bench")] = False,
    log_json: Annotated[Path | None, typer.Option(
        "--log-json", help="record a result printed elsewhere instead (the last JSON line of a file, e.g. "
        "bench/gpu_bench.py's output on a GPU machine); runs nothing")] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow store for --log")] = None,
) -> None:
    """Time a training step and a forecast for our model (fp32 and bf16) and an authors'-style eager fp32
    baseline: parameters, GMAC per clip, clips/s, peak memory. The last line is one JSON object."""
    if log_json is not None:
        try:
            lines = [ln for ln in log_json.read_text().splitlines() if ln.startswith("{")]
            result = json.loads(lines[-1])
        except (OSError, IndexError, ValueError) as err:
            raise fail(f"--log-json {log_json}: no JSON result line ({err})") from None
    else:
        from predrnn.perf import run_bench

        result = run_bench(preset=preset, overrides=set_ or [], reps=reps, verbose=not json_only, bf16=bf16)
    if log or log_json is not None:
        from predrnn.settings import Settings, tool_env
        from predrnn.tracking.runs import log_benchmark

        tool_env()
        uri = Settings().tracking(tracking_uri)
        run_id = log_benchmark(result, uri, run_name=f"bench-{result.get('device', 'cpu')}")
        if not json_only:
            typer.echo(f"logged as MLflow run {run_id} (experiment predrnn-bench) in {uri}")
    typer.echo(json.dumps(result))
