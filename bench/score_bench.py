"""Verification-score benchmark: time and memory of :func:`predrnn.verification.verification_scores`.

A rain-like (B, N, H, W, 1) float32 field in mm/h (smooth gamma-distributed cells, zero outside them,
a few NaN pixels in the truth); the forecast is the truth shifted a few pixels with multiplicative
noise. Scored at HKO-7's thresholds (0.5, 2, 5, 10, 30 mm/h), pooled CSI at 4 and 16, FSS at 1, 3,
9, 27. Prints the wall and CPU seconds of the best of ``--repeat`` calls (CPU time too: the machine may
be shared), the extra peak memory of one call (tracemalloc: what the scoring allocates beyond its
inputs), the process's peak RSS, and one JSON line. For scale, it also times forecasting the same
clips (``--leads`` context frames -> ``--leads`` lead times) with the ``quick`` preset's model, untrained
(the time does not depend on the weights), through :func:`predrnn.predict.forecast_array`.

    nice -n 19 .venv/bin/python bench/score_bench.py [--clips 64] [--leads 10] [--size 256] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc

import numpy as np

from predrnn.verification import verification_scores

THRESHOLDS = [0.5, 2.0, 5.0, 10.0, 30.0]
POOLS = (4, 16)
SCALES = (1, 3, 9, 27)


def rain_field(rng: np.random.Generator, clips: int, leads: int, size: int, cell: int = 16) -> np.ndarray:
    """(clips, leads, size, size, 1) float32 mm/h: gamma cells on a coarse grid, bilinearly upsampled."""
    coarse_n = size // cell + 1
    coarse = rng.gamma(shape=0.6, scale=12.0, size=(clips, leads, coarse_n, coarse_n))
    x = np.linspace(0, coarse_n - 1, size)
    up = np.clip(1.0 - np.abs(x[:, None] - np.arange(coarse_n)[None, :]), 0.0, None)  # (size, coarse_n) hat weights
    out = np.empty((clips, leads, size, size, 1), np.float32)
    for b in range(clips):  # clip by clip: a float64 field of the whole batch would dwarf what is measured
        field = np.einsum("ij,njk,lk->nil", up, coarse[b], up, optimize=True)
        out[b, ..., 0] = np.maximum(field - 6.0, 0.0)  # dry outside the cells
    return out


def _forecast_seconds(context: np.ndarray, horizon: int) -> float:
    """Seconds to forecast ``horizon`` frames after ``context`` (in mm/h) with the quick preset's model."""
    import dataclasses

    from predrnn.config import ValuesConfig, apply_overrides, preset
    from predrnn.models import build_model
    from predrnn.predict import forecast_array

    _, _, h, w, c = context.shape
    cfg = apply_overrides(preset("quick"), [f"data.img_height={h}", f"data.img_width={w}", f"data.img_channel={c}"])
    cfg = dataclasses.replace(cfg, values=ValuesConfig(kind="field", units="mm/h", mean=2.0, std=5.0, valid_min=0.0))
    model = build_model(cfg)
    t0 = time.perf_counter()
    forecast_array(model, cfg, context, horizon, batch_size=16)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--leads", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-forecast", action="store_true", help="skip timing the quick model's forecast")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    truth = rain_field(rng, args.clips, args.leads, args.size)
    noise = np.exp(np.float32(0.3) * rng.standard_normal(truth.shape, dtype=np.float32))  # lognormal, sigma 0.3
    forecast = np.roll(truth, (3, -5), axis=(2, 3)) * noise
    del noise
    truth[:, :, :4, :4] = np.nan  # a corner without data
    print(f"field {truth.shape} float32, {truth.nbytes / 2**20:.0f} MiB per array; "
          f"wet fraction {np.mean(truth >= 0.5):.3f}, >= 30 mm/h {np.mean(truth >= 30):.4f}")

    times, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        scores = verification_scores(forecast, truth, THRESHOLDS, pools=POOLS, fss_scales=SCALES)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    tracemalloc.start()
    verification_scores(forecast, truth, THRESHOLDS, pools=POOLS, fss_scales=SCALES)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    seconds = min(times)
    print(f"verification_scores: {seconds:.2f} s wall (best of {args.repeat}: {', '.join(f'{t:.2f}' for t in times)}), "
          f"{min(cpu):.2f} s CPU; "
          f"extra peak {peak / 2**20:.1f} MiB (tracemalloc); process peak RSS {maxrss_mb:.0f} MiB")
    forecast_s = None
    if not args.no_forecast:
        forecast_s = _forecast_seconds(truth, args.leads)
        print(f"forecast of the same clips with the quick model ({args.leads} -> {args.leads}): {forecast_s:.2f} s; "
              f"scoring takes {seconds / forecast_s:.0%} of it")
    record = {
        "bench": "score", "shape": list(truth.shape), "thresholds": THRESHOLDS,
        "pools": list(POOLS), "fss_scales": list(SCALES),
        "seconds": round(seconds, 3), "cpu_seconds": round(min(cpu), 3), "extra_peak_mib": round(peak / 2**20, 1),
        "maxrss_mib": round(maxrss_mb), "forecast_seconds": None if forecast_s is None else round(forecast_s, 2),
        "csi_m": [None if v is None else round(v, 4) for v in scores["csi_m"]],
        "fss_2mm_9": [None if v is None else round(v, 4) for v in scores["fss"]["2"]["9"]],
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
