"""Gridded ingest benchmark: a radar archive of one CF NetCDF file per scan against one NetCDF file.

Writes ``--steps`` scans of ``--size`` x ``--size`` pixels (int16-packed rain rate, a time coordinate
with two gaps, :func:`predrnn.data.sources.generators.write_scan_archive`), then ingests (a) the folder
of one file per scan and (b) the same scans as one NetCDF file with a time dimension, each in a fresh
process so that its peak memory (VmHWM) is its own. Prints steps/s and peak memory as JSON lines.

    .venv/bin/python bench/grid_bench.py [--steps 2000] [--size 256] [--window 20] [--code OTHER_CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import json, sys, time
from predrnn.data import ingest
t0 = time.perf_counter()
uri = ingest("netcdf", sys.argv[1], "radar", sys.argv[2], window=int(sys.argv[3]), val_fraction=0.1, test_fraction=0.1)
seconds = time.perf_counter() - t0
hwm = 0.0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) / 1024
print(json.dumps({"uri": uri, "seconds": seconds, "peak_mib": hwm}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--code", default="", help="a predrnn checkout the ingests run from (default: this one), "
                                              "e.g. an earlier commit's worktree to compare")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": args.code} if args.code else None
    import xarray as xr

    from predrnn.data.sources.generators import write_scan_archive

    with tempfile.TemporaryDirectory(prefix="grid-bench-") as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        files = write_scan_archive(d / "scans", steps=args.steps, height=args.size, width=args.size,
                                   missing=((args.steps // 3, 6), (2 * args.steps // 3, 12)))
        made = time.perf_counter() - t0
        scans = []
        for f in files:  # the same packed counts and encoded times, concatenated along time
            with xr.open_dataset(f, mask_and_scale=False, decode_times=False) as one:
                scans.append(one.load())
        xr.concat(scans, dim="time", data_vars="all").to_netcdf(d / "archive.nc")
        del scans
        mib = sum(f.stat().st_size for f in files) / 2**20
        print(json.dumps({"archive": f"{len(files)} files of {args.size}x{args.size}", "files_mib": round(mib, 1),
                          "write_seconds": round(made, 1)}), flush=True)
        for label, src in (("one file per scan", d / "scans"), ("one NetCDF file", d / "archive.nc")):
            out = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(d / f"root-{src.stem}"),
                                  str(args.window)], capture_output=True, text=True, check=False, env=env, cwd=d)
            if out.returncode:
                print(json.dumps({"case": label, "error": out.stderr.strip().splitlines()[-1:]}), flush=True)
                continue
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({"case": label, "steps": len(files), "seconds": round(rec["seconds"], 1),
                              "steps_per_s": round(len(files) / rec["seconds"], 1),
                              "peak_mib": round(rec["peak_mib"], 0)}), flush=True)


if __name__ == "__main__":
    main()
