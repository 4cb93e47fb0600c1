"""Latency of a nowcast, from a new scan in the archive to its CF file in place, on this CPU.

A radar archive as services ship it (one CF NetCDF file per 5-minute scan, ``rainfall_rate`` packed as
int16, polar stereographic grid, :func:`predrnn.data.sources.generators.write_scan_archive`) of
``--size`` x ``--size`` pixels; a PredRNN-V2 with the ``quick`` preset's architecture (2 x 32 hidden,
filter 5, patch 8), seeded weights (the same cost as trained ones), ``--context`` frames in, ``--horizon``
lead times out, its directory recording the archive's grid as a training run's does. Timed:

* **cold**: the whole ``predrnn predict --model DIR --input SCANS --at T --output F.nc`` process (Python,
  imports, reading and checking the archive, loading the weights, the forecast, the file), as a cron job or
  a Prefect process worker runs it each time step;
* **warm**: in one long-lived process, :func:`predrnn.jobs.nowcast.prepare_nowcast` and
  :func:`predrnn.jobs.nowcast.publish_nowcast` (what the ``nowcast`` flow calls) for the next reference
  time, the weights kept loaded; with its phases (read and check, forecast, write).

Each run forecasts a new reference time. Medians over ``--repeats`` runs after one untimed warm-up; the
time step of the data is 300 s. Run it alone (``nice -n 19`` beside other work). Prints a table and one
JSON line.

    .venv/bin/python bench/nowcast_bench.py [--size 256] [--context 10] [--horizon 10] [--repeats 3]
                                            [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

STEP_S = 300


def make_model(base: Path, size: int, context: int, horizon: int) -> tuple[Path, Path, np.datetime64]:
    """The archive, and a quick-architecture model directory of its grid; returns (scans, model, first time)."""
    from predrnn.checkpoint import save_model_dir
    from predrnn.config import preset
    from predrnn.data import ingest, open_version, validate_dataset
    from predrnn.data.sources.generators import write_scan_archive
    from predrnn.models import build_model
    from predrnn.values import from_dataset_attrs

    steps = context + horizon + 12
    write_scan_archive(base / "scans", steps=steps, height=size, width=size, episode=steps, missing=())
    uri = ingest("netcdf", str(base / "scans"), "radar", str(base / "data"), window=context + horizon,
                 val_fraction=0.0, test_fraction=0.0)
    q = preset("quick")
    cfg = replace(q, values=from_dataset_attrs(open_version(uri).attrs),
                  data=replace(q.data, dataset=uri, img_height=size, img_width=size, input_length=context,
                               total_length=context + horizon))
    info = validate_dataset(cfg, uri, need_val=False)
    import torch

    torch.manual_seed(0)
    model = save_model_dir(base / "model", build_model(cfg), cfg, extra={"iteration": 0, "dataset": info.to_dict()})
    return base / "scans", Path(model), np.datetime64("2026-06-01T00:00", "s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--context", type=int, default=10)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    args = ap.parse_args(argv)

    from predrnn.jobs.nowcast import prepare_nowcast, publish_nowcast

    with tempfile.TemporaryDirectory(prefix="predrnn-nowcast-bench-") as tmp:
        base = Path(tmp)
        scans, model, first = make_model(base, args.size, args.context, args.horizon)
        step = np.timedelta64(STEP_S, "s")
        ref = iter(first + step * k for k in range(args.context - 1, args.context + args.horizon + 12))
        predrnn = str(Path(sys.executable).parent / "predrnn")

        cold = []
        for i in range(args.repeats + 1):
            at = str(next(ref))
            t0 = time.perf_counter()
            subprocess.run([predrnn, "predict", "--model", str(model), "--input", str(scans), "--at", at,
                            "--precision", args.precision, "--output", str(base / f"cold-{i}.nc")],
                           check=True, capture_output=True)
            if i:
                cold.append(time.perf_counter() - t0)

        warm: dict[str, list[float]] = {"total": [], "read": [], "forecast": [], "write": []}
        for i in range(args.repeats + 1):
            at = str(next(ref))
            t0 = time.perf_counter()
            spec = prepare_nowcast(str(model), str(scans), at=at, precision=args.precision)
            t1 = time.perf_counter()
            out = publish_nowcast(spec, str(base / "nowcasts"))
            if i:
                warm["total"].append(time.perf_counter() - t0)
                warm["read"].append(t1 - t0)
                warm["forecast"].append(out["result"].forecast_s)
                warm["write"].append(out["write_s"])
        precision = spec.precision

    med = {k: round(statistics.median(v), 2) for k, v in warm.items()}
    result = {"bench": "nowcast", "size": args.size, "context": args.context, "horizon": args.horizon,
              "precision": precision, "repeats": args.repeats, "cold_s": round(statistics.median(cold), 2),
              "warm_s": med["total"], "warm_phases_s": med, "time_step_s": STEP_S,
              "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores"}
    print(f"nowcast {args.size}x{args.size}, quick architecture, {args.context} -> {args.horizon} frames, "
          f"{precision}, median of {args.repeats}:")
    print(f"  cold (whole predict process) {result['cold_s']:6.2f} s")
    print(f"  warm (model kept loaded)     {med['total']:6.2f} s  (read and check {med['read']:.2f}, forecast "
          f"{med['forecast']:.2f}, write {med['write']:.2f})")
    print(f"  time step                    {STEP_S:6d} s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
