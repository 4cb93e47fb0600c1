"""Dataset benchmark: ingest throughput, loader throughput and peak memory at 1x and 10x size.

Measures the training input path itself: the training split's ``ClipDataset`` (20-frame random
windows) read by the training loop's ``BatchPrefetcher`` (2 batches ahead, and synchronously for
comparison), batch 8, with a consumer that takes no time: the most clips per second any model can
get. Locally, and with ``--s3`` from a SeaweedFS S3 service started for the run (the stack's ``s3``
service on free ports). Compared with the Zarr ``ClipDataset`` in a ``DataLoader`` (batch 8, 2
workers), with the authors' approach (the whole dataset as a float32 NumPy array in RAM, batches
cut from it), and with what one training step of the ``quick`` preset consumes. Each loader runs in
a fresh process so that its peak memory (VmHWM of the process and of its worker children) is its own.

    .venv/bin/python bench/data_bench.py [--clips 1000] [--scales 1,10] [--batches 60] [--s3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def _door_s3(uri: str) -> dict[str, Any] | None:
    """This process's S3 settings (a child is a door of its own) for a dataset on S3."""
    from predrnn.settings import s3_settings

    return s3_settings() if uri.startswith("s3://") else None


def child_zarr(uri: str, batches: int) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader

    from predrnn.data import ClipDataset

    torch.set_num_threads(1)
    ds = ClipDataset(uri, split="train", s3=_door_s3(uri))
    # on S3 the workers start by forkserver: obstore's runtime does not survive fork
    context = "forkserver" if uri.startswith("s3://") else None
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, persistent_workers=True,
                        generator=torch.Generator().manual_seed(0), multiprocessing_context=context)
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


def child_train(uri: str, batches: int, depth: int) -> dict[str, float]:
    """The training loop's input path: the train split's random 20-frame windows, batch 8, read by a
    ``BatchPrefetcher`` with ``depth`` batches ahead; the consumer takes no time."""
    import torch

    from predrnn.data import ClipDataset
    from predrnn.data.prefetch import BatchPrefetcher

    torch.set_num_threads(1)
    ds = ClipDataset(uri, split="train", length=20, random_crop=True, seed=0, s3=_door_s3(uri))
    warm = 3
    with BatchPrefetcher(ds, 1, warm + batches, batch=8, seed=0, rank=0, depth=depth) as pre:
        for it in range(1, warm + 1):  # the store opened, first chunks read
            pre.get(it)
        stall0 = pre.stall_s
        t0 = time.perf_counter()
        n = sum(pre.get(it).shape[0] for it in range(warm + 1, warm + batches + 1))
        dt = time.perf_counter() - t0
    return {"clips_per_s": n / dt, "stall_fraction": (pre.stall_s - stall0) / dt, **_peak_mb()}


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


def _run_child(kind: str, target: str, batches: int, env: dict[str, str] | None = None) -> dict[str, float]:
    import os

    out = subprocess.run([sys.executable, __file__, "--child", kind, target, "--batches", str(batches)],
                         check=False, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _s3_stack(work: Path) -> tuple[Any, dict[str, str]]:
    """A SeaweedFS S3 service on free ports (the stack's ``s3`` service) and its client environment."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from infra.stack import Stack, StackSettings

    stack = Stack(StackSettings(state_dir=work / "stack", services=["s3"]).with_free_ports())
    stack.up(echo=lambda _m: None)
    env = {k: v for k, v in stack.client_env().items()
           if k.startswith(("AWS_", "PREDRNN_S3_"))}
    return stack, env


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1000, help="clips at 1x (20 x 64 x 64 moving digits)")
    ap.add_argument("--scales", default="1,10", help="dataset sizes as multiples of --clips")
    ap.add_argument("--batches", type=int, default=60, help="timed batches of 8 per loader")
    ap.add_argument("--workdir", default=None, help="where to write datasets (default: a temp folder)")
    ap.add_argument("--s3", action="store_true", help="also read each dataset from a SeaweedFS S3 service")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, target = args.child
        if kind.startswith("train"):
            result = child_train(target, args.batches, int(kind.removeprefix("train")))
        else:
            result = child_zarr(target, args.batches) if kind == "zarr" else child_numpy(target, args.batches)
        print(json.dumps(result))
        return


    work = Path(args.workdir or tempfile.mkdtemp(prefix="data-bench-"))
    root = work / "datasets"
    need = quick_step_clips_per_s()
    print(f"quick preset training step consumes {need:.1f} clips/s (batch 8); loader goal >= {10 * need:.0f}")
    rows = []
    stack, s3_env = _s3_stack(work) if args.s3 else (None, {})
    try:
        _scales(args, work, root, need, rows, s3_env)
    finally:
        if stack is not None:
            stack.down(echo=lambda _m: None)
    worst = min(r[3]["clips_per_s"] for r in rows)
    print(f"loader vs quick step: {worst / need:.1f}x what a training step consumes (goal >= 10x)")
    print(json.dumps({"quick_step_clips_per_s": need, "runs": [
        {"scale": s, "clips": n, "ingest_clips_per_s": n / t, "zarr": z, "numpy": a, "train_path": tp}
        for s, n, t, z, a, tp in rows]}))


def _scales(args: Any, work: Path, root: Path, need: float, rows: list[Any], s3_env: dict[str, str]) -> None:
    import os

    from predrnn.data import ingest, open_version
    from predrnn.settings import s3_settings

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
        tp = {"local_prefetch": _run_child("train2", uri, args.batches),
              "local_sync": _run_child("train0", uri, args.batches)}
        if s3_env:
            saved = dict(os.environ)
            os.environ.update(s3_env)  # obstore finds the keys in this process's environment
            try:
                s3_uri = ingest("moving-digits", "", f"bench-{n}", "s3://datasets", num_clips=n, seed=scale,
                                s3=s3_settings(s3_env))
            finally:
                os.environ.clear()
                os.environ.update(saved)
            tp["s3_prefetch"] = _run_child("train2", s3_uri, args.batches, s3_env)
            tp["s3_sync"] = _run_child("train0", s3_uri, args.batches, s3_env)
            z["s3"] = _run_child("zarr", s3_uri, args.batches, s3_env)
        raw_mb = n * 20 * 64 * 64 / 2**20
        stored_mb = sum(f.stat().st_size for f in (root / f"bench-{n}").rglob("*") if f.is_file()) / 2**20
        rows.append((scale, n, ingest_s, z, a, tp))
        print(f"\n{scale}x: {n} clips ({raw_mb:.0f} MiB raw uint8, {stored_mb:.1f} MiB stored, {train.size} train)")
        print(f"  ingest (moving-digits, write + verify + publish): {n / ingest_s:.0f} clips/s ({ingest_s:.1f} s)")
        print(f"  Zarr ClipDataset + DataLoader(batch 8, 2 workers): {z['clips_per_s']:.0f} clips/s, peak RSS main "
              f"{z['peak_main_mb']:.0f} MiB, largest worker {z['peak_worker_mb']:.0f} MiB")
        if "s3" in z:
            zs = z["s3"]
            print(f"  same from S3 (forkserver workers):                 {zs['clips_per_s']:.0f} clips/s, peak RSS "
                  f"main {zs['peak_main_mb']:.0f} MiB, largest worker {zs['peak_worker_mb']:.0f} MiB")
        print(f"  NumPy in RAM (authors' float32 array):             {a['clips_per_s']:.0f} clips/s, peak RSS "
              f"{a['peak_main_mb']:.0f} MiB (load {a['load_s']:.1f} s)")
        for key, r in tp.items():
            where, how = key.split("_")
            label = "prefetch 2 ahead" if how == "prefetch" else "synchronous"
            print(f"  training path, {where:5} ({label:16}, consumer at zero cost): {r['clips_per_s']:6.0f} "
                  f"clips/s, peak RSS {r['peak_main_mb']:.0f} MiB")
    if len(rows) > 1:
        (s0, _, _, z0, a0, _), (s1, _, _, z1, a1, _) = rows[0], rows[-1]
        print(f"\npeak memory {s0}x -> {s1}x: Zarr loader main {z0['peak_main_mb']:.0f} -> "
              f"{z1['peak_main_mb']:.0f} MiB, "
              f"worker {z0['peak_worker_mb']:.0f} -> {z1['peak_worker_mb']:.0f} MiB; NumPy "
              f"{a0['peak_main_mb']:.0f} -> {a1['peak_main_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
