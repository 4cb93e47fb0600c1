"""GPU benchmark: the authors'-style fp32 eager baseline vs our model with bf16, channels_last, compile.

Run from the repository root with only torch, numpy and einops installed:

    PYTHONPATH=. python bench/gpu_bench.py [--batch 8] [--reps 10] [--hidden 64] [--no-compile]
                                           [--forecast-batch 64] [--forecast-hidden 128]

Per variant: step and forecast seconds, clips/s, peak GPU memory; the model's parameters and GMAC per
clip; and forecast clips/s at batch 64 for the Moving MNIST-size 4 x 128 model in bf16. On a machine
without CUDA it runs the fp32 variants on the CPU (few repetitions) and lists the CUDA variants it
skipped. The last line is one JSON object (``predrnn bench --log-json FILE`` records it in MLflow).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from predrnn.models import rollout_forecast, test_time_mask
from predrnn.perf import _baseline_inputs, _build, bench_config, count_conv_flops
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
    ap.add_argument("--forecast-batch", type=int, default=64,
                    help="batch of the forecast clips/s figure (bf16, channels_last; 0: skip)")
    ap.add_argument("--forecast-hidden", type=int, default=128, help="width of that model (4 layers)")
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

    def peak_mib() -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")

    def reset_peak() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def variant(name: str, model, amp: str, channels_last: bool) -> None:
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        reset_peak()
        results[f"{name}_train_s"] = _time(
            lambda: train_step(model, opt_o, frames, mask, beta=cfg.optim.decouple_beta,
                                       precision=amp), device, reps)
        if cuda:
            results[f"{name}_train_peak_mib"] = peak_mib()

        def fc():
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
                rollout_forecast(model, ctx, horizon)  # calls the (possibly compiled) forward

        reset_peak()
        results[f"{name}_forecast_s"] = _time(fc, device, reps)
        if cuda:
            results[f"{name}_forecast_peak_mib"] = peak_mib()
        results[f"{name}_train_clips_per_s"] = args.batch / results[f"{name}_train_s"]
        results[f"{name}_forecast_clips_per_s"] = args.batch / results[f"{name}_forecast_s"]

    variant("ours_fp32", ours, "fp32", False)
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
    if cuda and args.forecast_batch:  # forecast clips/s of a Moving MNIST-size model at a large batch
        big = bench_config(batch_size=args.forecast_batch, num_hidden=(args.forecast_hidden,) * 4)
        model_b, _, frames_b, _ = _build(big, 0)
        model_b = model_b.to(device).to(memory_format=torch.channels_last).eval()
        ctx_b = frames_b[:, : big.data.input_length].to(device)

        def fc_big():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                rollout_forecast(model_b, ctx_b, horizon)

        reset_peak()
        t = _time(fc_big, device, reps)
        results[f"forecast_b{args.forecast_batch}_h{args.forecast_hidden}_bf16_clips_per_s"] = args.forecast_batch / t
        results[f"forecast_b{args.forecast_batch}_h{args.forecast_hidden}_bf16_peak_mib"] = peak_mib()
        del model_b, frames_b, ctx_b
    base_t, base_f = results["baseline_fp32_train_s"], results["baseline_fp32_forecast_s"]
    for k in list(results):
        if k.startswith("ours_") and k.endswith("_train_s"):
            results[k.replace("_train_s", "_train_speedup")] = base_t / results[k]
        if k.startswith("ours_") and k.endswith("_forecast_s"):
            results[k.replace("_forecast_s", "_forecast_speedup")] = base_f / results[k]
    fc_flops = count_conv_flops(ours, lambda: rollout_forecast(ours.eval(), ctx, horizon))
    info = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
            "batch": args.batch, "hidden": args.hidden, "layers": args.layers, "skipped": skipped,
            "input": f"{d.img_height}x{d.img_width}x{d.img_channel}, {d.input_length} -> {horizon} frames",
            "params": sum(p.numel() for p in ours.parameters()),
            "gmac_per_clip_forecast": fc_flops / 2 / args.batch / 1e9}
    for k, v in results.items():
        print(f"{k:40s} {v:.4f}" if isinstance(v, float) else f"{k:40s} {v}")
    print(json.dumps({**info, **results}))


if __name__ == "__main__":
    main()
