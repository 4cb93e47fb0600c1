"""Training throughput: the plain single-process loop vs Ray Train with 1 and 2 workers.

Same config, same global batch (``optim.batch_size``), CPU, one torch thread per worker. Prints
steady-state seconds per iteration (after a few warm-up iterations, excluding evaluation and
start-up), clips per second, the start-up cost of a Ray Train run, and the per-iteration overhead
Ray Train adds on one worker (DDP wrapper, per-rank data reads, report barriers) against the plain
loop. The last line is JSON.

    .venv/bin/python bench/train_bench.py [--iterations 60] [--preset quick] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from predrnn.config import ExperimentConfig, load_config
from predrnn.data.batches import ZarrSource, batch_indices, load_batch, mask_generator
from predrnn.models import build_model
from predrnn.sampling import sampling_mask
from predrnn.steps import train_step

WARMUP = 5


def plain_loop(cfg: ExperimentConfig, uri: str, iterations: int) -> float:
    """Seconds per iteration of the single-process loop (same data path, no Ray, no DDP)."""
    torch.set_num_threads(1)
    torch.manual_seed(cfg.optim.seed)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    ds = ZarrSource(uri).open("train", length=cfg.data.total_length)
    b = cfg.optim.batch_size
    t0 = 0.0
    for it in range(1, iterations + 1):
        if it == WARMUP + 1:
            t0 = time.perf_counter()
        frames = load_batch(ds, batch_indices(it, shard_size=len(ds), batch=b, seed=0, rank=0))
        mask, _, _ = sampling_mask(it, cfg.sampling, batch=b, input_length=cfg.data.input_length,
                                   total_length=cfg.data.total_length, generator=mask_generator(0, 0, it))
        train_step(model, opt, frames, mask, beta=cfg.optim.decouple_beta,
                   reverse_input=cfg.optim.reverse_input)
    return (time.perf_counter() - t0) / (iterations - WARMUP)


def ray_loop(cfg: ExperimentConfig, uri: str, workers: int, storage: str) -> dict[str, float]:
    from predrnn.train import configure, prepare, train

    cfg = configure(cfg, workers=workers)
    t0 = time.perf_counter()
    result = train(prepare(cfg, data=uri, storage_path=storage), log_every=cfg.optim.max_iterations)
    wall = time.perf_counter() - t0
    s_it = float(result.last_report["seconds_per_iteration"])
    return {"s_per_it": s_it, "wall_s": wall, "startup_s": wall - s_it * cfg.optim.max_iterations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()

    import ray

    from predrnn.data import ingest
    from predrnn.security import ray_auth_env

    work = tempfile.mkdtemp(prefix="trbench-")
    os.environ.setdefault("PREDRNN_STATE_DIR", os.path.join(work, "state"))
    os.environ.update(ray_auth_env(os.environ["PREDRNN_STATE_DIR"], os.environ))  # Ray as predrnn runs it
    n = args.iterations
    cfg = load_config(args.preset, overrides=[f"optim.max_iterations={n}", f"optim.eval_interval={n}",
                                               f"optim.checkpoint_interval={n}", "optim.eval_clips=8",
                                               *args.overrides])
    d = cfg.data
    uri = ingest("moving-digits", "", "bench", os.path.join(work, "data"), num_clips=args.clips,
                 frames=d.total_length, height=d.img_height, width=d.img_width, seed=0)
    print(f"config {cfg.name}: {d.img_height}x{d.img_width}, {d.total_length} frames, hidden "
          f"{cfg.model.num_hidden}, patch {cfg.model.patch_size}, global batch {cfg.optim.batch_size}, "
          f"{n} iterations (first {WARMUP} not timed)", flush=True)

    # Other work on a shared machine skews single measurements: the plain loop runs before and after
    # the Ray runs and the faster of the two is kept; the load average is printed alongside.
    plain_runs = [plain_loop(cfg, uri, n)]
    print(f"plain loop, 1 process, 1 thread:  {plain_runs[0]:.3f} s/it  (load average "
          f"{os.getloadavg()[0]:.1f})", flush=True)
    from predrnn.train.launch import ensure_ray

    ensure_ray(None, num_cpus=2, temp_dir=tempfile.mkdtemp(prefix="trb"))  # token auth, loopback, as `train`
    try:
        results = {}
        for workers in (1, 2):
            r = ray_loop(cfg, uri, workers, os.path.join(work, f"ray{workers}"))
            results[workers] = r
            print(f"Ray Train, {workers} worker(s):         {r['s_per_it']:.3f} s/it  "
                  f"{cfg.optim.batch_size / r['s_per_it']:6.1f} clips/s  (run start-up and teardown "
                  f"{r['startup_s']:.0f} s; load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        ray.shutdown()
    plain_runs.append(plain_loop(cfg, uri, n))
    plain = min(plain_runs)
    print(f"plain loop again:                 {plain_runs[1]:.3f} s/it; kept {plain:.3f} s/it "
          f"{cfg.optim.batch_size / plain:6.1f} clips/s (load average {os.getloadavg()[0]:.1f})", flush=True)
    one, two = results[1]["s_per_it"], results[2]["s_per_it"]
    b = cfg.optim.batch_size
    print(f"Ray overhead per iteration on 1 worker: {1000 * (one - plain):+.1f} ms "
          f"({100 * (one / plain - 1):+.0f} %)")
    print(f"speed-up 2 workers vs 1: {one / two:.2f}x")
    print(json.dumps({"plain_s_per_it": plain, "ray1_s_per_it": one, "ray2_s_per_it": two,
                      "ray1_clips_per_s": b / one, "ray2_clips_per_s": b / two,
                      "ray_overhead_ms_per_it": 1000 * (one - plain),
                      "ray_startup_s": results[1]["startup_s"],
                      "speedup_2_vs_1": one / two, "global_batch": b, "plain_runs": plain_runs}))


if __name__ == "__main__":
    main()
