"""Speed and memory benchmark: our PredRNN-V2 against an eager baseline built like the authors' code.

Our model is timed in fp32 and under bf16 autocast (:mod:`predrnn.precision`); the baseline in fp32,
as the authors run it. On a CPU without native bf16 (no AVX512-BF16 or AMX) bf16 is emulated by
PyTorch and many times slower: its rows are then timed once, after one warm-up, and marked emulated.

The baseline (``AuthorsStyleV2``) follows the structure of the public implementation: one conv per
input (x -> 7C, h -> 4C, m -> 3C), the output-gate conv and the 1x1, fp32, the decoupling loss
computed inside ``forward`` step by step, and a forecast that runs with autograd enabled (their
test path). Both models get identical weights. Timings are medians of interleaved repetitions after
warm-up; peak memory of a forecast is measured in a fresh process (``VmHWM``).

Only torch, numpy and einops are needed, so this runs on a bare GPU machine with ``PYTHONPATH=.``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from predrnn.config import ExperimentConfig, apply_overrides, preset
from predrnn.models import build_model, test_time_mask
from predrnn.patching import patch_channels_last, unpatch_channels_last
from predrnn.precision import autocast, cpu_has_native_bf16
from predrnn.steps import train_step


def _bench_default() -> ExperimentConfig:
    """64x64x1, patch 4, 4 x 64, filter 5, batch 8, 10 -> 10, 2 threads: built from typed values, so it
    needs nothing beyond the model core (the GPU machine has only torch, numpy and einops)."""
    base = preset("moving_mnist_v2")
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, num_hidden=(64, 64, 64, 64), patch_size=4, filter_size=5),
        optim=dataclasses.replace(base.optim, batch_size=8),
        data=dataclasses.replace(base.data, img_height=64, img_width=64, img_channel=1, input_length=10,
                                 total_length=20),
        compute=dataclasses.replace(base.compute, threads=2))


def bench_config(preset_name: str | None = None, overrides: list[str] | None = None, *,
                 batch_size: int | None = None, num_hidden: tuple[int, ...] | None = None) -> ExperimentConfig:
    """The default benchmark config (64x64x1, patch 4, 4 x 64, filter 5, batch 8, 10 -> 10, 2 threads) or
    a preset; ``batch_size``/``num_hidden`` set typed values, ``overrides`` are ``--set`` strings (parsed
    by :func:`predrnn.config.apply_overrides`, which needs pydantic)."""
    cfg = _bench_default() if preset_name is None else preset(preset_name)
    if batch_size is not None:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, batch_size=batch_size))
    if num_hidden is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_hidden=tuple(num_hidden)))
    return apply_overrides(cfg, overrides) if overrides else cfg


# ---------------------------------------------------------------------------------------------
# The authors'-style eager baseline.


class _AuthorsStyleCell(nn.Module):
    def __init__(self, cin: int, C: int, k: int) -> None:
        super().__init__()
        self.C = C
        pad = k // 2
        self.conv_x = nn.Sequential(nn.Conv2d(cin, 7 * C, k, padding=pad, bias=False))
        self.conv_h = nn.Sequential(nn.Conv2d(C, 4 * C, k, padding=pad, bias=False))
        self.conv_m = nn.Sequential(nn.Conv2d(C, 3 * C, k, padding=pad, bias=False))
        self.conv_o = nn.Sequential(nn.Conv2d(2 * C, C, k, padding=pad, bias=False))
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=False)

    def forward(self, x_t, h_t, c_t, m_t):
        x_concat, h_concat, m_concat = self.conv_x(x_t), self.conv_h(h_t), self.conv_m(m_t)
        i_x, f_x, g_x, i_x_prime, f_x_prime, g_x_prime, o_x = torch.split(x_concat, self.C, dim=1)
        i_h, f_h, g_h, o_h = torch.split(h_concat, self.C, dim=1)
        i_m, f_m, g_m = torch.split(m_concat, self.C, dim=1)
        i_t = torch.sigmoid(i_x + i_h)
        f_t = torch.sigmoid(f_x + f_h + 1.0)
        g_t = torch.tanh(g_x + g_h)
        delta_c = i_t * g_t
        c_new = f_t * c_t + delta_c
        i_t_prime = torch.sigmoid(i_x_prime + i_m)
        f_t_prime = torch.sigmoid(f_x_prime + f_m + 1.0)
        g_t_prime = torch.tanh(g_x_prime + g_m)
        delta_m = i_t_prime * g_t_prime
        m_new = f_t_prime * m_t + delta_m
        mem = torch.cat((c_new, m_new), 1)
        o_t = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o_t * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m


class AuthorsStyleV2(nn.Module):
    """Eager PredRNN-V2 structured like the public code: loss inside forward, full-size masks."""

    def __init__(self, C: int, layers: int, k: int, frame_channels: int, beta: float) -> None:
        super().__init__()
        self.C, self.L, self.beta = C, layers, beta
        self.cell_list = nn.ModuleList(_AuthorsStyleCell(frame_channels if i == 0 else C, C, k) for i in range(layers))
        self.conv_last = nn.Conv2d(C, frame_channels, 1, bias=False)
        self.adapter = nn.Conv2d(C, C, 1, bias=False)

    def forward(self, frames_tensor, mask_true, input_length: int):
        # frames_tensor (B, T, H, W, C) patched; mask_true (B, T-2, H, W, C) full size, as theirs.
        frames = frames_tensor.permute(0, 1, 4, 2, 3).contiguous()
        mask_true = mask_true.permute(0, 1, 4, 2, 3).contiguous()
        B, T, _, Hh, Ww = frames.shape
        h_t = [torch.zeros(B, self.C, Hh, Ww, device=frames.device) for _ in range(self.L)]
        c_t = [torch.zeros(B, self.C, Hh, Ww, device=frames.device) for _ in range(self.L)]
        delta_c_list: list[Any] = [None] * self.L
        delta_m_list: list[Any] = [None] * self.L
        memory = torch.zeros(B, self.C, Hh, Ww, device=frames.device)
        next_frames: Any = []
        decouple_loss: Any = []
        x_gen = None
        for t in range(T - 1):
            net = frames[:, t] if t == 0 else mask_true[:, t - 1] * frames[:, t] + (1 - mask_true[:, t - 1]) * x_gen
            h_t[0], c_t[0], memory, delta_c, delta_m = self.cell_list[0](net, h_t[0], c_t[0], memory)
            delta_c_list[0] = F.normalize(self.adapter(delta_c).view(B, self.C, -1), dim=2)
            delta_m_list[0] = F.normalize(self.adapter(delta_m).view(B, self.C, -1), dim=2)
            for i in range(1, self.L):
                h_t[i], c_t[i], memory, delta_c, delta_m = self.cell_list[i](h_t[i - 1], h_t[i], c_t[i], memory)
                delta_c_list[i] = F.normalize(self.adapter(delta_c).view(B, self.C, -1), dim=2)
                delta_m_list[i] = F.normalize(self.adapter(delta_m).view(B, self.C, -1), dim=2)
            x_gen = self.conv_last(h_t[self.L - 1])
            next_frames.append(x_gen)
            for i in range(self.L):
                decouple_loss.append(torch.mean(torch.abs(
                    torch.cosine_similarity(delta_c_list[i], delta_m_list[i], dim=2))))
        decouple_loss = torch.mean(torch.stack(decouple_loss, dim=0))
        next_frames = torch.stack(next_frames, dim=0).permute(1, 0, 3, 4, 2).contiguous()
        loss = F.mse_loss(next_frames, frames_tensor[:, 1:]) + self.beta * decouple_loss
        return next_frames, loss


def _baseline_inputs(cfg: ExperimentConfig, frames: torch.Tensor, mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    p = cfg.model.patch_size
    x = patch_channels_last(frames, p)  # (B, T, H/p, W/p, p*p*C)
    full_mask = mask[:, :, None, None, None].expand(-1, -1, *x.shape[2:]).contiguous()
    return x, full_mask


# ---------------------------------------------------------------------------------------------
# Measurement.


def _median_time(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def count_conv_flops(model: nn.Module, run: Callable[[], Any]) -> float:
    """FLOPs (2 x MACs) of every Conv2d call during ``run()``."""
    total = [0.0]

    def hook(mod: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += 2.0 * out.numel() * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def machine_rates(threads: int) -> dict[str, float]:
    """Measured fp32 matmul and conv rates (GFLOP/s) of this machine at ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    t = min(_median_time(lambda: a @ b, 5))
    mm = 2 * 2048**3 / t / 1e9
    x = torch.randn(8, 64, 16, 16)
    conv = nn.Conv2d(64, 448, 5, padding=2, bias=False)
    with torch.no_grad():
        for _ in range(2):
            conv(x)
        tc = min(_median_time(lambda: conv(x), 10))
    conv_rate = 2 * 8 * 448 * 16 * 16 * 64 * 25 / tc / 1e9
    return {"matmul_gflops": mm, "conv_gflops": conv_rate}


def _peak_main() -> None:
    """Child-process entry: read {kind, cfg, threads} JSON on stdin, print the peak as JSON.

    ``kind``: ``ours`` (fp32), ``ours_bf16`` (bf16 autocast) or ``baseline``."""
    import sys

    req = json.loads(sys.stdin.read())
    torch.set_num_threads(req["threads"])
    cfg = ExperimentConfig.from_json(req["cfg"])
    ours, base, frames, _ = _build(cfg, 0)
    d = cfg.data
    ctx = frames[:, : d.input_length]
    test_mask = test_time_mask(frames.shape[0], d.input_length, d.total_length)
    x, full = _baseline_inputs(cfg, frames, test_mask)
    _reset_peak()
    before = _rss_mib()
    if req["kind"] in ("ours", "ours_bf16"):
        ours.eval()
        with autocast("cpu", "bf16" if req["kind"] == "ours_bf16" else "fp32"):
            ours.forecast(ctx, d.total_length - d.input_length)
    else:
        base(x, full, d.input_length)  # with autograd, as the authors' test does
    peak = _peak_rss_mib()
    print(json.dumps({"increment_mib": peak - before, "peak_rss_mib": peak}))


def _reset_peak() -> None:
    """Reset this process's RSS high-water mark (Linux; harmless where unsupported)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    """VmHWM: the peak RSS of this process image (ru_maxrss would include the parent's before exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_forecast_memory(cfg: ExperimentConfig, kind: str, threads: int) -> dict[str, float]:
    """Peak memory of one forecast (``ours`` or ``baseline``), measured in a fresh process."""
    import subprocess
    import sys

    req = json.dumps({"kind": kind, "cfg": cfg.to_json(), "threads": threads})
    # The child imports this very file whatever its working directory: the repository root goes first on its path.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = f"import sys; sys.path.insert(0, {root!r}); from predrnn.perf import _peak_main; _peak_main()"
    out = subprocess.run([sys.executable, "-c", code], input=req, capture_output=True, text=True, check=True,
                         timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _build(cfg: ExperimentConfig, seed: int) -> tuple[Any, AuthorsStyleV2, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    ours: Any = build_model(cfg)
    p, c = cfg.model.patch_size, cfg.data.img_channel
    base = AuthorsStyleV2(cfg.model.num_hidden[0], len(cfg.model.num_hidden), cfg.model.filter_size, p * p * c,
                          cfg.optim.decouple_beta)
    base.load_state_dict(ours.state_dict(), strict=cfg.model.arch == "predrnn_v2")
    d = cfg.data
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(cfg.optim.batch_size, d.total_length, d.img_height, d.img_width, d.img_channel, generator=g)
    mask = (torch.rand(cfg.optim.batch_size, d.total_length - 2, generator=g) < 0.5).float()
    return ours, base, frames, mask


def run_bench(preset: str | None = None, overrides: list[str] | None = None, reps: int = 5,
              verbose: bool = True, measure_memory: bool = True, bf16: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns the summary dict (also printed when ``verbose``).

    ``bf16``: also time our training step and forecast under bf16 autocast (``bf16_*`` keys), with
    ``reps`` repetitions where the CPU has native bf16 and one where it is emulated (``bf16_native``)."""
    cfg = bench_config(preset, overrides)
    threads = cfg.compute.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    say = print if verbose else (lambda *a, **k: None)
    ours, base, frames, mask = _build(cfg, 0)
    d, o = cfg.data, cfg.optim
    horizon = d.total_length - d.input_length
    ctx = frames[:, : d.input_length]
    x_base, mask_base = _baseline_inputs(cfg, frames, mask)
    x_test, mask_test = _baseline_inputs(cfg, frames, test_time_mask(frames.shape[0], d.input_length, d.total_length))
    opt_ours = torch.optim.Adam(ours.parameters(), lr=o.lr)
    opt_base = torch.optim.Adam(base.parameters(), lr=o.lr)

    def ours_train() -> None:
        train_step(ours, opt_ours, frames, mask, beta=o.decouple_beta, reverse_input=False, precision="fp32")

    def base_train() -> None:
        opt_base.zero_grad()
        _, loss = base(x_base, mask_base, d.input_length)
        loss.backward()
        opt_base.step()

    def ours_forecast() -> None:
        ours.eval()
        ours.forecast(ctx, horizon)

    def base_forecast() -> None:
        base(x_test, mask_test, d.input_length)  # grad enabled, as in the authors' test

    ours_bf16 = build_model(cfg)  # the same weights, its own optimiser state
    ours_bf16.load_state_dict(ours.state_dict())
    opt_bf16 = torch.optim.Adam(ours_bf16.parameters(), lr=o.lr)

    def bf16_train() -> None:
        train_step(ours_bf16, opt_bf16, frames, mask, beta=o.decouple_beta, reverse_input=False, precision="bf16")

    def bf16_forecast() -> None:
        ours.eval()
        with autocast("cpu", "bf16"):
            ours.forecast(ctx, horizon)

    say(f"config: {d.img_height}x{d.img_width}x{d.img_channel}, patch {cfg.model.patch_size}, "
        f"{len(cfg.model.num_hidden)} x {cfg.model.num_hidden[0]}, filter {cfg.model.filter_size}, "
        f"batch {o.batch_size}, {d.input_length} -> {horizon}, {threads} threads, torch {torch.__version__}")
    # Outputs agree before timing anything (same weights, same masks).
    with torch.no_grad():
        a = ours(frames, mask)
        b, _ = base(x_base, mask_base, d.input_length)
    diff = float((a - unpatch_channels_last(b, cfg.model.patch_size, d.img_channel)).abs().max())
    say(f"max |ours - baseline| on the same weights: {diff:.2e}")
    native = cpu_has_native_bf16()
    if bf16:
        with torch.no_grad():
            ours.eval()
            f32 = ours.forecast(ctx, horizon)
            with autocast("cpu", "bf16"):
                f16 = ours.forecast(ctx, horizon).float()
        bf16_diff = float((f16 - f32).abs().max())
        say(f"bf16 forecast: max |bf16 - fp32| {bf16_diff:.2e} on [0, 1] frames "
            f"({'native' if native else 'emulated: this CPU has no AVX512-BF16 or AMX'})")
    for fn in (ours_train, base_train, ours_forecast, base_forecast):  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in ("train", "base_train", "forecast", "base_forecast")}
    for r in range(reps):  # interleaved
        times["train"] += _median_time(ours_train, 1)
        times["base_train"] += _median_time(base_train, 1)
        times["forecast"] += _median_time(ours_forecast, 1)
        times["base_forecast"] += _median_time(base_forecast, 1)
        say(f"  rep {r + 1}/{reps}: train {times['train'][-1]:.3f}s vs {times['base_train'][-1]:.3f}s, "
            f"forecast {times['forecast'][-1]:.3f}s vs {times['base_forecast'][-1]:.3f}s")
    if bf16:
        bf16_reps = reps if native else 1
        bf16_train()  # warm-up
        bf16_forecast()
        times["bf16_train"] = _median_time(bf16_train, bf16_reps)
        times["bf16_forecast"] = _median_time(bf16_forecast, bf16_reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    fwd_flops = count_conv_flops(ours, lambda: ours(frames, mask))
    fc_flops = count_conv_flops(ours, lambda: ours.forecast(ctx, horizon))
    rates = machine_rates(threads)
    result: dict[str, Any] = {
        "train_step_s": med["train"], "forecast_s": med["forecast"],
        "baseline_train_step_s": med["base_train"], "baseline_forecast_s": med["base_forecast"],
        "train_speedup": med["base_train"] / med["train"], "forecast_speedup": med["base_forecast"] / med["forecast"],
        "train_gflops": 3 * fwd_flops / med["train"] / 1e9, "forecast_gflops": fc_flops / med["forecast"] / 1e9,
        "machine_matmul_gflops": rates["matmul_gflops"], "machine_conv_gflops": rates["conv_gflops"],
        "threads": threads, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "max_abs_diff": diff,
        "device": "cpu", "batch_size": o.batch_size, "dtype": "fp32",
        "input": f"{d.img_height}x{d.img_width}x{d.img_channel}, {d.input_length} -> {horizon} frames",
        "model": f"{len(cfg.model.num_hidden)} x {cfg.model.num_hidden[0]}, patch {cfg.model.patch_size}, "
                 f"filter {cfg.model.filter_size}",
        "params": sum(p.numel() for p in ours.parameters()),
        "gmac_per_clip_train_forward": fwd_flops / 2 / o.batch_size / 1e9,
        "gmac_per_clip_forecast": fc_flops / 2 / o.batch_size / 1e9,
        "train_clips_per_s": o.batch_size / med["train"], "forecast_clips_per_s": o.batch_size / med["forecast"],
        "baseline_train_clips_per_s": o.batch_size / med["base_train"],
        "baseline_forecast_clips_per_s": o.batch_size / med["base_forecast"],
    }
    if bf16:
        result.update({
            "bf16_native": native, "bf16_max_abs_diff": bf16_diff,
            "bf16_train_step_s": med["bf16_train"], "bf16_forecast_s": med["bf16_forecast"],
            "bf16_train_clips_per_s": o.batch_size / med["bf16_train"],
            "bf16_forecast_clips_per_s": o.batch_size / med["bf16_forecast"],
            "bf16_train_speedup_vs_fp32": med["train"] / med["bf16_train"],
            "bf16_forecast_speedup_vs_fp32": med["forecast"] / med["bf16_forecast"],
            "bf16_train_speedup_vs_baseline": med["base_train"] / med["bf16_train"],
            "bf16_forecast_speedup_vs_baseline": med["base_forecast"] / med["bf16_forecast"],
        })
    if measure_memory:
        if bf16:
            result["bf16_forecast_peak_mib"] = peak_forecast_memory(cfg, "ours_bf16", threads)["increment_mib"]
        mem_ours = peak_forecast_memory(cfg, "ours", threads)
        mem_base = peak_forecast_memory(cfg, "baseline", threads)
        result.update({
            "forecast_peak_mib": mem_ours["increment_mib"], "baseline_forecast_peak_mib": mem_base["increment_mib"],
            "forecast_peak_rss_mib": mem_ours["peak_rss_mib"],
            "baseline_forecast_peak_rss_mib": mem_base["peak_rss_mib"],
        })
    say(f"training step: ours {med['train']:.3f} s, baseline {med['base_train']:.3f} s, "
        f"speed-up x{result['train_speedup']:.2f}")
    say(f"forecast:      ours {med['forecast']:.3f} s, baseline {med['base_forecast']:.3f} s, "
        f"speed-up x{result['forecast_speedup']:.2f}")
    say(f"{result['params']:,} parameters; per clip {result['gmac_per_clip_forecast']:.2f} GMAC to forecast "
        f"({result['gmac_per_clip_train_forward']:.2f} GMAC in the training forward); training "
        f"{result['train_clips_per_s']:.2f} clips/s, forecast {result['forecast_clips_per_s']:.2f} clips/s "
        f"(batch {o.batch_size}, warm-up excluded)")
    say(f"achieved: train {result['train_gflops']:.1f} GFLOP/s (3x forward convs), forecast "
        f"{result['forecast_gflops']:.1f} GFLOP/s; machine fp32 matmul {rates['matmul_gflops']:.1f}, "
        f"conv {rates['conv_gflops']:.1f} GFLOP/s")
    if bf16:
        how = "" if native else f" (emulated bf16, {len(times['bf16_train'])} timing)"
        say(f"bf16 training step: {med['bf16_train']:.3f} s, x{result['bf16_train_speedup_vs_fp32']:.2f} vs our fp32, "
            f"x{result['bf16_train_speedup_vs_baseline']:.2f} vs the baseline{how}")
        say(f"bf16 forecast:      {med['bf16_forecast']:.3f} s, x{result['bf16_forecast_speedup_vs_fp32']:.2f} vs our "
            f"fp32, x{result['bf16_forecast_speedup_vs_baseline']:.2f} vs the baseline{how}")
    if measure_memory:
        say(f"forecast peak memory (increment over the loaded model): ours {result['forecast_peak_mib']:.0f} MiB, "
            f"baseline with grad {result['baseline_forecast_peak_mib']:.0f} MiB "
            f"(x{result['forecast_peak_mib'] / max(result['baseline_forecast_peak_mib'], 1e-9):.2f})"
            + (f"; bf16 {result['bf16_forecast_peak_mib']:.0f} MiB" if bf16 else ""))
    return result


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_bench()))
