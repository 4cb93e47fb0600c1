"""Seconds per clip of the nowcasting baselines beside the model's forecast, on this CPU.

One synthetic moving rain field per clip (the storm-cell generator, rain rate in mm/h, 256 x 256, cells
advected by a uniform wind and growing and decaying), 12 context frames, 12 lead times. Timed, each
on the same clips:

* ``persistence``, ``extrapolation`` (pysteps dense Lucas-Kanade motion from the last 3 frames,
  semi-Lagrangian advection) and ``sprog`` (pysteps S-PROG, 7 cascade levels at 256 x 256, AR(2)),
  through :func:`predrnn.baselines.baseline_forecast`, one clip at a time (the pysteps baselines run
  clip by clip in any case);
* the model: PredRNN-V2 with the ``quick`` preset's architecture (2 x 32 hidden, filter 5, patch 8)
  on a 256 x 256 grid, seeded weights, through :func:`predrnn.steps.eval_step` (the forecast in the
  data's units, as ``evaluate`` calls it), in fp32 and, where the CPU computes bf16 natively
  (:func:`predrnn.precision.cpu_has_native_bf16`), under bf16 autocast; at batch 1 and at
  ``--batch`` clips (seconds per clip = the batch's time / its clips).

Each number is the median over ``--repeats`` timed runs after one untimed warm-up run, on
``--threads`` torch threads (the pysteps baselines use numpy and OpenCV, which take the machine's
threads as they are configured). Prints a table and one JSON line.

    .venv/bin/python bench/baseline_bench.py [--clips 4] [--repeats 3] [--batch 4] [--threads 0]
                                             [--size 256] [--context 12] [--horizon 12]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def storm_clips(clips: int, frames: int, size: int, seed: int = 1234) -> torch.Tensor:
    """``clips`` storm-cell clips (clips, frames, size, size, 1) float32 in mm/h."""
    from predrnn.data.sources.generators import StormCells

    src = StormCells(None, {"num_clips": clips, "frames": frames, "height": size, "width": size, "seed": seed})
    return torch.from_numpy(np.stack([src.clip(i) for i in range(clips)]).astype(np.float32))


def field_values(clips: torch.Tensor) -> Any:
    """The clips' values: rain rate in mm/h, valid >= 0, standardised by these clips' own statistics."""
    from predrnn.config import ValuesConfig

    return ValuesConfig(kind="field", units="mm/h", mean=float(clips.mean()), std=float(clips.std()),
                        valid_min=0.0)


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def model_for(size: int, context: int, horizon: int, values: Any) -> tuple[Any, Any]:
    """The ``quick`` preset's PredRNN-V2 on a ``size`` x ``size`` grid, seeded weights, in eval mode."""
    from predrnn.config import apply_overrides, preset
    from predrnn.models import build_model
    from predrnn.values import with_values

    cfg = apply_overrides(preset("quick"), [f"data.img_height={size}", f"data.img_width={size}",
                                            f"data.input_length={context}",
                                            f"data.total_length={context + horizon}"])
    cfg = with_values(cfg, values)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return model, cfg


def run(clips: int = 4, repeats: int = 3, batch: int = 4, size: int = 256, context: int = 12,
        horizon: int = 12) -> dict[str, Any]:
    from predrnn.baselines import baseline_forecast, cascade_levels
    from predrnn.precision import cpu_has_native_bf16
    from predrnn.steps import eval_step

    data = storm_clips(max(clips, batch), context + horizon, size)
    values = field_values(data)
    rows: list[dict[str, Any]] = []

    def one_by_one(forecast: Callable[[torch.Tensor], Any]) -> Callable[[], None]:
        def go() -> None:
            for i in range(clips):
                forecast(data[i: i + 1])
        return go

    for name in ("persistence", "extrapolation", "sprog"):
        secs = timed(one_by_one(lambda c, n=name: baseline_forecast(n, c[:, :context], horizon, values)),  # type: ignore[misc]
                     repeats)
        rows.append({"forecaster": name, "precision": "exact" if name == "persistence" else "fp64 (pysteps)",
                     "batch": 1,
                     "s_per_clip": statistics.median(secs) / clips, "runs_s": secs})
        print(f"  {name}: {rows[-1]['s_per_clip']:.3f} s/clip", flush=True)
    model, _ = model_for(size, context, horizon, values)
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    with torch.inference_mode():
        for precision in precisions:
            step = functools.partial(eval_step, model, input_length=context, precision=precision, values=values)
            secs = timed(one_by_one(step), repeats)
            rows.append({"forecaster": "predrnn_v2", "precision": precision, "batch": 1,
                         "s_per_clip": statistics.median(secs) / clips, "runs_s": secs})
            print(f"  predrnn_v2 {precision} batch 1: {rows[-1]['s_per_clip']:.3f} s/clip", flush=True)
            if batch > 1:
                secs = timed(functools.partial(step, data[:batch]), repeats)
                rows.append({"forecaster": "predrnn_v2", "precision": precision, "batch": batch,
                             "s_per_clip": statistics.median(secs) / batch, "runs_s": secs})
                print(f"  predrnn_v2 {precision} batch {batch}: {rows[-1]['s_per_clip']:.3f} s/clip", flush=True)
    return {"bench": "baseline_forecast", "grid": f"{size}x{size}", "context": context, "horizon": horizon,
            "clips": clips, "repeats": repeats, "sprog_cascade_levels": cascade_levels(size, size),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "native_bf16": cpu_has_native_bf16(), "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['grid']}, {result['context']} context frames, {result['horizon']} lead times, "
             f"median of {result['repeats']} runs over {result['clips']} clips, "
             f"{result['torch_threads']} torch threads",
             "| forecaster | precision | batch | s per clip |", "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['forecaster']} | {r['precision']} | {r['batch']} | {r['s_per_clip']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4, help="clips forecast one by one per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4, help="the model's batched run (1: none)")
    ap.add_argument("--size", type=int, default=256, help="grid side in pixels")
    ap.add_argument("--context", type=int, default=12)
    ap.add_argument("--horizon", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.clips, args.repeats, args.batch, args.size, args.context, args.horizon)
    print(table(result))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
