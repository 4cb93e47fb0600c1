"""Dataset benchmark: ingest throughput, loader throughput and peak memory at 1x and 10x size.

Compares the Zarr-backed ``ClipDataset`` in a ``DataLoader`` (batch 8, 2 workers) with the authors'
approach (the whole dataset as a float32 NumPy array in RAM, batches cut from it), and with what one
training step of the ``quick`` preset consumes. Each loader runs in a fresh process so that its peak
memory (ru_maxrss of the process and of its worker children) is its own.

    .venv/bin/python bench/data_bench.py [--clips 1000] [--scales 1,10] [--batches 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _hwm_mb(pid: int | str = "self") -> float:
    """Peak resident memory (VmHWM) of a process; unlike ru_maxrss it restarts at exec."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb(worker_pids: list[int] = ()) -> dict[str, float]:  # type: ignore[assignment]
    workers = [_hwm_mb(p) for p in worker_pids]
    return {"peak_main_mb": round(_hwm_mb(), 1), "peak_worker_mb": round(max(workers, default=0.0), 1)}


def child_zarr(uri: str, batches: int) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader

    from predrnn.data import ClipDataset

    torch.set_num_threads(1)
    ds = ClipDataset(uri, split="train")
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, persistent_workers=True,
                        generator=torch.Generator().manual_seed(0))
    n, it = 0, iter(loader)
    for _ in range(5):  # warm-up: workers started, first chunks read
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        n += b.shape[0]
    dt = time.perf_counter() - t0
    pids = [w.pid for w in getattr(it, "_workers", [])]
    return {"clips_per_s": n / dt, **_peak_mb(pids)}


def child_numpy(path: str, batches: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = np.load(path).astype(np.float32)  # the authors keep float32 frames in [0, 1] in RAM
    data /= 255.0
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    n = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        idx = rng.choice(data.shape[0], 8, replace=False)
        b = torch.from_numpy(data[idx])
        n += b.shape[0]
    dt = time.perf_counter() - t0
    return {"clips_per_s": n / dt, "load_s": load_s, **_peak_mb()}


def quick_step_clips_per_s(steps: int = 4) -> float:
    """Clips per second that a ``quick``-preset training step consumes on this machine."""
    import torch

    from predrnn.config import preset
    from predrnn.models import build_model
    from predrnn.steps import train_step

    cfg = preset("quick")
    d, o = cfg.data, cfg.optim
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=o.lr)
    frames = torch.rand(o.batch_size, d.total_length, d.img_height, d.img_width, d.img_channel)
    mask = torch.ones(o.batch_size, d.total_length - 2)
    train_step(model, opt, frames, mask, beta=o.decouple_beta)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, frames, mask, beta=o.decouple_beta)
    return o.batch_size * steps / (time.perf_counter() - t0)


def _run_child(kind: str, target: str, batches: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, target, "--batches", str(batches)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1000, help="clips at 1x (20 x 64 x 64 moving digits)")
    ap.add_argument("--scales", default="1,10", help="dataset sizes as multiples of --clips")
    ap.add_argument("--batches", type=int, default=60, help="timed batches of 8 per loader")
    ap.add_argument("--workdir", default=None, help="where to write datasets (default: a temp folder)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, target = args.child
        result = child_zarr(target, args.batches) if kind == "zarr" else child_numpy(target, args.batches)
        print(json.dumps(result))
        return

    from predrnn.data import ingest, open_version

    work = Path(args.workdir or tempfile.mkdtemp(prefix="data-bench-"))
    root = work / "datasets"
    need = quick_step_clips_per_s()
    print(f"quick preset training step consumes {need:.1f} clips/s (batch 8); loader goal >= {10 * need:.0f}")
    rows = []
    for scale in (int(s) for s in args.scales.split(",")):
        n = args.clips * scale
        t0 = time.perf_counter()
        uri = ingest("moving-digits", "", f"bench-{n}", str(root), num_clips=n, seed=scale)
        ingest_s = time.perf_counter() - t0
        v = open_version(uri)
        npy = work / f"bench-{n}.npy"
        arr = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=v.shape)
        train = v.split_indices("train")
        for i in range(0, n, 256):
            arr[i:i + 256] = v.read(np.arange(i, min(i + 256, n)))
        arr.flush()
        del arr
        z = _run_child("zarr", uri, args.batches)
        a = _run_child("numpy", str(npy), args.batches)
        raw_mb = n * 20 * 64 * 64 / 2**20
        stored_mb = sum(f.stat().st_size for f in (root / f"bench-{n}").rglob("*") if f.is_file()) / 2**20
        rows.append((scale, n, ingest_s, z, a))
        print(f"\n{scale}x: {n} clips ({raw_mb:.0f} MiB raw uint8, {stored_mb:.1f} MiB stored, {train.size} train)")
        print(f"  ingest (moving-digits, write + verify + publish): {n / ingest_s:.0f} clips/s ({ingest_s:.1f} s)")
        print(f"  Zarr ClipDataset + DataLoader(batch 8, 2 workers): {z['clips_per_s']:.0f} clips/s, peak RSS main "
              f"{z['peak_main_mb']:.0f} MiB, largest worker {z['peak_worker_mb']:.0f} MiB")
        print(f"  NumPy in RAM (authors' float32 array):             {a['clips_per_s']:.0f} clips/s, peak RSS "
              f"{a['peak_main_mb']:.0f} MiB (load {a['load_s']:.1f} s)")
    if len(rows) > 1:
        (s0, _, _, z0, a0), (s1, _, _, z1, a1) = rows[0], rows[-1]
        print(f"\npeak memory {s0}x -> {s1}x: Zarr loader main {z0['peak_main_mb']:.0f} -> "
              f"{z1['peak_main_mb']:.0f} MiB, "
              f"worker {z0['peak_worker_mb']:.0f} -> {z1['peak_worker_mb']:.0f} MiB; NumPy "
              f"{a0['peak_main_mb']:.0f} -> {a1['peak_main_mb']:.0f} MiB")
    worst = min(r[3]["clips_per_s"] for r in rows)
    print(f"loader vs quick step: {worst / need:.1f}x what a training step consumes (goal >= 10x)")
    print(json.dumps({"quick_step_clips_per_s": need, "runs": [
        {"scale": s, "clips": n, "ingest_clips_per_s": n / t, "zarr": z, "numpy": a} for s, n, t, z, a in rows]}))


if __name__ == "__main__":
    main()
