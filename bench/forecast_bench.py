"""Batch forecasting benchmark: ``predrnn forecast`` clips/s with 1 and 2 Ray Data workers.

A moving-digits dataset (64x64x1, 20 frames) and the ``predrnn bench`` model (patch 4, 4 x 64, filter 5,
10 -> 10 frames, seeded weights) in a temporary folder. One local Ray (2 CPUs) is started once; then the
whole split is forecast with 1 and with 2 workers (each worker an actor with one CPU, torch on one
thread), each into a fresh forecast dataset: the time from the start of the job to the published
version (actors start, model shipped to them, clips read, forecast, written, read back, published),
and the forecasting stage alone. For reference, the same clips forecast in this process by
:func:`predrnn.predict.forecast_array` on all the machine's threads (what ``predrnn predict`` does).

Then the driver's memory against dataset size: ``predrnn forecast`` itself (a fresh process each time,
its peak resident memory read when it ends) over a moving-digits split of 32x32 clips at 1x and 10x
the size, with a tiny model (one layer of 8 channels), 2 workers.

    .venv/bin/python bench/forecast_bench.py [--clips 48] [--batch-size 8] [--workers 1,2]
                                             [--memory-clips 200] [--memory-scales 1,10]
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


_DRIVER = """
import sys
from predrnn.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:  # VmHWM: this process's own peak (ru_maxrss would keep the forking parent's across exec)
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]
    print("peak_rss_mb", int(hwm) / 1024, flush=True)
"""


def driver_memory(tmp: Path, clips: int, scales: list[int]) -> list[dict[str, Any]]:
    """Peak RSS of the ``predrnn forecast`` process over a split of ``clips * scale`` clips, per scale."""
    import subprocess

    import torch

    from predrnn.checkpoint import save_model_dir
    from predrnn.config import load_config
    from predrnn.data import ingest
    from predrnn.models import build_model

    cfg = load_config("quick", overrides=["data.img_height=32", "data.img_width=32", "data.input_length=4",
                                          "data.total_length=8", "model.patch_size=4", "model.num_hidden=[8]",
                                          "model.filter_size=3"])
    torch.manual_seed(0)
    save_model_dir(tmp / "tiny", build_model(cfg), cfg)
    rows = []
    for scale in scales:
        n = clips * scale
        src = ingest("moving-digits", "", f"m{scale}", str(tmp / "mem"), num_clips=n, frames=8, height=32,
                     width=32, seed=scale)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _DRIVER, "forecast", "--model", str(tmp / "tiny"), "--data",
                              src, "--out", str(tmp / "mem-fc" / f"m{scale}"), "--split", "all", "--workers", "2",
                              "--batch-size", "16"], capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        peak = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("peak_rss_mb")]
        if out.returncode != 0 or not peak:
            raise SystemExit(f"predrnn forecast failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        rows.append({"clips": n, "driver_peak_rss_mb": round(peak[0], 1), "wall_s": round(wall, 1)})
        print(f"{n} clips: driver peak RSS {peak[0]:.0f} MB, {wall:.1f} s including Ray's start")
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--memory-clips", type=int, default=200, help="clips at 1x for the driver-memory figure "
                   "(0: skip it)")
    p.add_argument("--memory-scales", default="1,10")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from predrnn.security import ray_auth_env

    # Ray with token authentication, as `predrnn forecast` runs it (the token in a throwaway state folder)
    os.environ.update(ray_auth_env(os.environ.get("PREDRNN_STATE_DIR") or tempfile.mkdtemp(prefix="fcb-state-"),
                                   os.environ))
    import numpy as np
    import torch

    from predrnn.batch_forecast import check_job, forecast_dataset
    from predrnn.data import ingest, open_version
    from predrnn.models import build_model
    from predrnn.perf import bench_config
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
    result["bench_process_peak_mb"] = round(_hwm_mb(), 1)
    if args.memory_clips:
        result["driver_memory"] = driver_memory(tmp, args.memory_clips,
                                                [int(x) for x in args.memory_scales.split(",")])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
