"""Batch forecasting benchmark: ``predrnn forecast`` clips/s with 1 and 2 Ray Data workers.

A moving-digits dataset (64x64x1, 20 frames) and the ``predrnn bench`` model (patch 4, 4 x 64, filter 5,
10 -> 10 frames, seeded weights) in a temporary folder. One local Ray (2 CPUs) is started once; then the
whole split is forecast with 1 and with 2 workers (each worker an actor with one CPU, torch on one
thread), each into a fresh forecast dataset: the time from the start of the job to the published
version (actors start, model shipped to them, clips read, forecast, written, read back, published),
and the forecasting stage alone. For reference, the same clips forecast in this process by
:func:`predrnn.predict.forecast_array` on all the machine's threads (what ``predrnn predict`` does).

    .venv/bin/python bench/forecast_bench.py [--clips 48] [--batch-size 8] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", default="1,2")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import numpy as np
    import torch

    from bench.perf import bench_config
    from predrnn.batch_forecast import check_job, forecast_dataset
    from predrnn.data import ingest, open_version
    from predrnn.models import build_model
    from predrnn.predict import forecast_array
    from predrnn.train.launch import ensure_ray, shutdown

    cfg = bench_config()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tmp = Path(tempfile.mkdtemp(prefix="fcbench-"))
    src = ingest("moving-digits", "", "mm", str(tmp / "data"), num_clips=args.clips, frames=20, height=64,
                 width=64, seed=0)
    n = open_version(src).shape[0]
    d = cfg.data
    horizon = d.total_length - d.input_length
    print(f"{n} clips of 64x64x1, {d.input_length} -> {horizon} frames, model 4 x 64 patch 4 filter 5, "
          f"batch {args.batch_size}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    clips = open_version(src).read(np.arange(n))[:, :d.input_length]
    forecast_array(model, cfg, clips[:args.batch_size], horizon, batch_size=args.batch_size)  # warm-up
    t0 = time.perf_counter()
    forecast_array(model, cfg, clips, horizon, batch_size=args.batch_size)
    in_process = n / (time.perf_counter() - t0)
    print(f"in this process (forecast_array, {torch.get_num_threads()} threads): {in_process:.2f} clips/s")
    result: dict[str, Any] = {"clips": n, "batch_size": args.batch_size, "in_process_clips_per_s": round(in_process, 2),
                              "threads": torch.get_num_threads(), "runs": []}
    t_ray = time.perf_counter()
    started = ensure_ray(None, num_cpus=2, temp_dir=str(tmp / "ray"))
    result["ray_start_s"] = round(time.perf_counter() - t_ray, 2)
    try:
        for w in (int(x) for x in args.workers.split(",")):
            job = check_job(cfg, src, str(tmp / "fc" / f"mm-fc-{w}"), split="all")
            t0 = time.perf_counter()
            out = forecast_dataset(model, cfg, job, model_ref="bench", workers=w, batch_size=args.batch_size)
            total = time.perf_counter() - t0
            run = {"workers": w, "job_s": round(total, 2), "forecast_stage_s": out["forecast_s"],
                   "clips_per_s_job": round(n / total, 2), "clips_per_s_forecast_stage": out["clips_per_s"]}
            result["runs"].append(run)
            print(f"{w} worker(s): {run['clips_per_s_job']} clips/s over the job ({total:.1f} s to the published "
                  f"version), {out['clips_per_s']} clips/s in the forecasting stage")
    finally:
        shutdown(started)
    result["driver_peak_mb"] = round(_hwm_mb(), 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
