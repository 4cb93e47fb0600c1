"""A whole ``predrnn predict`` process against the authors'-style test forecast, same weights, same run.

The ``predrnn bench`` model (64x64x1, patch 4, 4 x 64, filter 5, 10 -> 10 frames, seeded weights) is
saved as a model directory, and ``--clips`` context clips (moving digits) are written as one ``.npy``.
Timed, alternating, ``--reps`` times each:

- ``predrnn predict --precision fp32`` and ``--precision bf16`` as fresh processes (wall clock from
  the command to its exit: interpreter, imports, model load, forecast, output written);
- the authors'-style eager model of ``predrnn/perf.py`` (``AuthorsStyleV2``, the same weights) in this
  process, forecasting the same clips as their ``Model.test`` does: fp32, autograd enabled, the full
  (B, T-2, H/p, W/p, p*p*C) test mask, batch 8 (their scripts' batch size).

The largest difference of the three forecasts is printed first. On a CPU without native bf16 the
bf16 process runs once, on ``--bf16-clips`` clips only (PyTorch emulates bf16 there, many times
slower), and its time is scaled to ``--clips`` for the ratio, marked as such.

    .venv/bin/python bench/predict_bench.py [--clips 128] [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16-clips", type=int, default=16,
                    help="clips for the bf16 process where the CPU emulates bf16 (all clips where it is native)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from predrnn.checkpoint import save_model_dir
    from predrnn.data.sources.generators import MovingDigits
    from predrnn.models import test_time_mask
    from predrnn.patching import unpatch_channels_last
    from predrnn.perf import _baseline_inputs, _build, bench_config
    from predrnn.precision import cpu_has_native_bf16

    cfg = bench_config()
    d = cfg.data
    horizon = d.total_length - d.input_length
    ours, base, _, _ = _build(cfg, 0)
    digits = MovingDigits(None, {"num_clips": args.clips, "frames": d.input_length, "height": d.img_height,
                                 "width": d.img_width, "seed": 7})
    ctx = np.stack([digits.clip(i) for i in range(args.clips)]).astype(np.float32) / 255.0  # (N, T_in, H, W, 1)
    native = cpu_has_native_bf16()
    n_bf16 = args.clips if native else min(args.bf16_clips, args.clips)

    def authors_test() -> np.ndarray:
        out = []
        for i in range(0, args.clips, 8):  # grad enabled, full-size mask, as their Model.test
            frames = torch.zeros(len(ctx[i:i + 8]), d.total_length, *ctx.shape[2:])
            frames[:, : d.input_length] = torch.from_numpy(ctx[i:i + 8])
            x, mask = _baseline_inputs(cfg, frames, test_time_mask(frames.shape[0], d.input_length, d.total_length))
            pred, _ = base(x, mask, d.input_length)
            out.append(unpatch_channels_last(pred.detach(), cfg.model.patch_size, d.img_channel)[:, -horizon:])
        return torch.cat(out).clamp(0, 1).numpy()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        save_model_dir(model_dir, ours, cfg)
        np.save(Path(tmp) / "ctx.npy", ctx)
        np.save(Path(tmp) / "ctx_bf16.npy", ctx[:n_bf16])
        exe = str(Path(sys.executable).parent / "predrnn")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PREDRNN_STATE_DIR": str(Path(tmp) / "state")}

        def predict(precision: str) -> float:
            src = "ctx.npy" if precision == "fp32" else "ctx_bf16.npy"
            t0 = time.perf_counter()
            subprocess.run([exe, "predict", "--model", str(model_dir), "--input", str(Path(tmp) / src),
                            "--horizon", str(horizon), "--output", str(Path(tmp) / f"{precision}.npy"),
                            "--precision", precision], check=True, env=env, capture_output=True)
            return time.perf_counter() - t0

        times: dict[str, list[float]] = {"fp32": [], "bf16": [], "authors": []}
        authors_out = authors_test()  # warm-up and the forecast compared
        for rep in range(args.reps):
            times["fp32"].append(predict("fp32"))
            if native or rep == 0:  # emulated bf16: timed once
                times["bf16"].append(predict("bf16"))
            t0 = time.perf_counter()
            authors_test()
            times["authors"].append(time.perf_counter() - t0)
        f32 = np.load(Path(tmp) / "fp32.npy")
        b16 = np.load(Path(tmp) / "bf16.npy")
    med = {k: statistics.median(v) for k, v in times.items()}
    bf16_scaled = med["bf16"] * args.clips / n_bf16
    res = {
        "clips": args.clips, "threads": args.threads, "bf16_native": native, "bf16_clips": n_bf16,
        "predict_fp32_s": med["fp32"], "predict_bf16_s": med["bf16"], "predict_bf16_s_per_clips": bf16_scaled,
        "authors_test_s": med["authors"],
        "fp32_speedup_vs_authors": med["authors"] / med["fp32"],
        "bf16_speedup_vs_authors": med["authors"] / bf16_scaled,
        "max_abs_fp32_vs_authors": float(np.abs(f32 - authors_out).max()),
        "max_abs_bf16_vs_fp32": float(np.abs(b16 - f32[:n_bf16]).max()),
    }
    print(f"{args.clips} clips, 10 -> 10 frames of 64x64, 4 x 64 model, {args.threads} threads; CPU "
          f"{'with' if native else 'without'} native bf16")
    print(f"max |predict fp32 - authors'| {res['max_abs_fp32_vs_authors']:.2e}, |bf16 - fp32| "
          f"{res['max_abs_bf16_vs_fp32']:.2e}")
    print(f"authors'-style Model.test (in process): {med['authors']:.2f} s")
    print(f"predrnn predict fp32 (whole process):   {med['fp32']:.2f} s  x{res['fp32_speedup_vs_authors']:.2f}")
    scaled = "" if n_bf16 == args.clips else f" ({med['bf16']:.2f} s for {n_bf16} clips, scaled)"
    print(f"predrnn predict bf16 (whole process):   {bf16_scaled:.2f} s  x{res['bf16_speedup_vs_authors']:.2f}{scaled}")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
