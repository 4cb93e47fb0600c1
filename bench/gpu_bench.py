"""GPU benchmark: the authors'-style fp32 eager baseline vs our model with bf16, channels_last, compile.

Run from the repository root with only torch, numpy and einops installed:

    PYTHONPATH=. python bench/gpu_bench.py [--batch 8] [--reps 10] [--hidden 64] [--no-compile]

On a machine without CUDA it runs the fp32 variants on the CPU (few repetitions) and lists the CUDA
variants it skipped. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.perf import _baseline_inputs, _build, bench_config
from predrnn.models import rollout_forecast, test_time_mask
from predrnn.steps import train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, reps: int) -> float:
    fn()
    fn()
    _sync(device)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    reps = args.reps if cuda else 2
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    cfg = bench_config(batch_size=args.batch, num_hidden=(args.hidden,) * args.layers)
    ours, base, frames, mask = _build(cfg, 0)
    ours, base = ours.to(device), base.to(device)
    frames, mask = frames.to(device), mask.to(device)
    d = cfg.data
    horizon = d.total_length - d.input_length
    ctx = frames[:, : d.input_length]
    xb, mb = _baseline_inputs(cfg, frames, mask)
    xt, mt = _baseline_inputs(cfg, frames, test_time_mask(frames.shape[0], d.input_length, d.total_length,
                                                           device=device))
    opt_b = torch.optim.Adam(base.parameters(), 1e-4)
    opt_o = torch.optim.Adam(ours.parameters(), 1e-4)
    results: dict[str, float] = {}
    skipped: list[str] = []

    def base_train():
        opt_b.zero_grad()
        _, loss = base(xb, mb, d.input_length)
        loss.backward()
        opt_b.step()

    results["baseline_fp32_train_s"] = _time(base_train, device, reps)
    results["baseline_fp32_forecast_s"] = _time(lambda: base(xt, mt, d.input_length), device, reps)

    def variant(name: str, model, amp: str, channels_last: bool) -> None:
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        results[f"{name}_train_s"] = _time(
            lambda: train_step(model, opt_o, frames, mask, beta=cfg.optim.decouple_beta, amp=amp), device, reps)

        def fc():
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
                rollout_forecast(model, ctx, horizon)  # calls the (possibly compiled) forward

        results[f"{name}_forecast_s"] = _time(fc, device, reps)

    variant("ours_fp32", ours, "none", False)
    if cuda:
        variant("ours_bf16_cl", ours, "bf16", True)
        if not args.no_compile:
            try:
                compiled = torch.compile(ours)
                variant("ours_bf16_cl_compiled", compiled, "bf16", True)
            except Exception as err:  # report, do not hide
                results["compile_error"] = str(err)[:200]  # type: ignore[assignment]
    else:
        skipped += ["ours_bf16_cl (needs CUDA)", "ours_bf16_cl_compiled (needs CUDA)"]
    base_t, base_f = results["baseline_fp32_train_s"], results["baseline_fp32_forecast_s"]
    for k in list(results):
        if k.startswith("ours_") and k.endswith("_train_s"):
            results[k.replace("_train_s", "_train_speedup")] = base_t / results[k]
        if k.startswith("ours_") and k.endswith("_forecast_s"):
            results[k.replace("_forecast_s", "_forecast_speedup")] = base_f / results[k]
    info = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
            "batch": args.batch, "hidden": args.hidden, "layers": args.layers, "skipped": skipped}
    for k, v in results.items():
        print(f"{k:40s} {v:.4f}" if isinstance(v, float) else f"{k:40s} {v}")
    print(json.dumps({**info, **results}))


if __name__ == "__main__":
    main()
