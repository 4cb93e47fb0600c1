"""bf16 against fp32 on the quality benchmark's models: does the precision move a score by more than a seed does?

For each dataset (moving digits, storm cells) and seed, the quality benchmark's PredRNN-V2 (RSS and
decoupling, ``bench/ablation.py``) is trained in fp32 at the benchmark's budget. Its test forecasts
are then made twice from the same weights, in fp32 and under bf16 autocast
(:mod:`predrnn.precision`), and compared: the largest and the mean absolute difference in the data's
units, and the change of every score per lead time (MSE; SSIM for images; CSI and FSS for fields)
against the spread of that score over the seeds (standard deviation of the fp32 models). With
``--train-bf16`` the same seeds are also trained in bf16, and their test scores compared with the
fp32-trained models' in the same way.

    .venv/bin/python bench/precision.py --iterations 500 --clips 600 --seeds 0 1 2 --threads 2 --out docs/precision

Verdict per dataset: ``within spread`` when no score at any lead time moves (largest change over the
seeds) by more than its seed-to-seed standard deviation.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from bench.ablation import REPORT_FSS, _datasets, prepare_dataset, train_and_evaluate, variant_config
from predrnn.config import apply_overrides, preset
from predrnn.metrics import MetricAccumulator
from predrnn.precision import cpu_has_native_bf16
from predrnn.steps import eval_step
from predrnn.values import field_units, with_values

VARIANT = "v2_both"


def score_series(m: dict[str, Any]) -> dict[str, list[float | None]]:
    """The per-lead-time scores compared: ``mse``, ``ssim`` (images), ``csi@T`` and ``fss@T/S`` (fields)."""
    out: dict[str, list[float | None]] = {"mse": list(m["mse_per_frame"])}
    if m.get("ssim_per_frame"):
        out["ssim"] = list(m["ssim_per_frame"])
    for t, vals in (m.get("csi") or {}).items():
        out[f"csi@{t}"] = list(vals)
    for t, scales in (m.get("fss") or {}).items():
        for s, vals in scales.items():
            out[f"fss@{t}/{s}"] = list(vals)
    return out


def compare_forecasts(model: torch.nn.Module, loader: DataLoader, input_length: int, values: Any,
                      scores: dict[str, Any]) -> dict[str, Any]:
    """fp32 and bf16 forecasts of every test clip from the same weights: their metrics and differences."""
    horizon = None
    accs: dict[str, MetricAccumulator] = {}
    worst, total, n = 0.0, 0.0, 0
    seconds = {"fp32": 0.0, "bf16": 0.0}
    for batch in loader:
        frames = batch.float()
        if horizon is None:
            horizon = frames.shape[1] - input_length
            accs = {p: MetricAccumulator(horizon, values=values, **scores) for p in ("fp32", "bf16")}
        truth = frames[:, input_length:]
        pred = {}
        for p in ("fp32", "bf16"):
            t0 = time.perf_counter()
            pred[p] = eval_step(model, frames, input_length, precision=p, values=values)
            seconds[p] += time.perf_counter() - t0
            accs[p].update(pred[p], truth)
        diff = (pred["bf16"] - pred["fp32"]).abs()
        diff = diff[torch.isfinite(diff)]
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        total += float(diff.double().sum())
        n += diff.numel()
    return {"fp32": accs["fp32"].compute(), "bf16": accs["bf16"].compute(), "max_abs_diff": worst,
            "mean_abs_diff": total / max(n, 1), "seconds": seconds}


def compare_scores(base: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Per score and lead time: the seed-to-seed standard deviation of ``base``, the mean and largest
    absolute change ``other - base`` over the seeds (paired by seed), and whether the largest exceeds the spread."""
    series_a = [score_series(m) for m in base]
    series_b = [score_series(m) for m in other]
    out: dict[str, Any] = {}
    for key in series_a[0]:
        rows = []
        for lead in range(len(series_a[0][key])):
            a = [s[key][lead] for s in series_a]
            b = [s[key][lead] for s in series_b]
            if any(v is None for v in a + b):
                rows.append(None)
                continue
            spread = statistics.stdev(a) if len(a) > 1 else float("nan")
            change = [y - x for x, y in zip(a, b, strict=True)]
            largest = max(abs(c) for c in change)
            rows.append({"fp32_mean": statistics.mean(a), "spread": spread, "mean_change": statistics.mean(change),
                         "largest_change": largest, "beyond_spread": bool(largest > spread)})
        out[key] = rows
    return out


def _moved(cmp: dict[str, Any]) -> list[str]:
    return [f"{k} at lead {i}" for k, rows in cmp.items() for i, r in enumerate(rows, 1) if r and r["beyond_spread"]]


def run_dataset(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    base = apply_overrides(preset("quick"), args.overrides)
    uri = prepare_dataset(kind, args.root, args.clips, base)
    train_ds, test_ds, values = _datasets(uri)
    cfg = with_values(variant_config(base, VARIANT, args.iterations), values)
    field = values.kind == "field"
    scores: dict[str, Any] = ({"thresholds": list(values.thresholds), "pools": [4, 16],
                               "fss_scales": list(REPORT_FSS)} if field else {"with_ssim": True})
    loader = DataLoader(test_ds, batch_size=16, shuffle=False)
    n_in = cfg.data.input_length
    per_seed, trained_bf16 = [], []
    for seed in args.seeds:
        res = train_and_evaluate(cfg, VARIANT, train_ds, test_ds, seed)
        cmp = compare_forecasts(res["model"], loader, n_in, values, scores)
        cmp["train_s"] = res["train_s"]
        per_seed.append(cmp)
        print(f"  {kind} seed {seed}: max |bf16 - fp32| {cmp['max_abs_diff']:.4g}, mean {cmp['mean_abs_diff']:.3g}; "
              f"MSE {cmp['fp32']['mse']:.3f} -> {cmp['bf16']['mse']:.3f}", flush=True)
        if args.train_bf16:
            b = train_and_evaluate(cfg, VARIANT, train_ds, test_ds, seed, precision="bf16")
            trained_bf16.append({"metrics": b["metrics"], "train_s": b["train_s"]})
    forecast = compare_scores([s["fp32"] for s in per_seed], [s["bf16"] for s in per_seed])
    out: dict[str, Any] = {
        "uri": uri, "units": field_units(values), "seeds": args.seeds,
        "max_abs_diff": max(s["max_abs_diff"] for s in per_seed),
        "mean_abs_diff": statistics.mean(s["mean_abs_diff"] for s in per_seed),
        "forecast_seconds": {p: sum(s["seconds"][p] for s in per_seed) for p in ("fp32", "bf16")},
        "train_s": [s["train_s"] for s in per_seed],
        "forecast": forecast, "forecast_moved": _moved(forecast),
    }
    if trained_bf16:
        training = compare_scores([s["fp32"] for s in per_seed], [t["metrics"] for t in trained_bf16])
        out.update(training=training, training_moved=_moved(training),
                   train_s_bf16=[t["train_s"] for t in trained_bf16])
    return out


def _table(cmp: dict[str, Any], keys: list[str]) -> list[str]:
    n = len(next(iter(cmp.values())))
    lines = ["| score | " + " | ".join(str(i) for i in range(1, n + 1)) + " |", "|---|" + "---|" * n]
    for key in keys:
        cells = []
        for r in cmp[key]:
            if r is None:
                cells.append("n/a")
                continue
            mark = " **!**" if r["beyond_spread"] else ""
            cells.append(f"{r['largest_change']:.3g} / {r['spread']:.3g}{mark}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, results: dict[str, Any], command: str, iterations: int) -> str:
    out.mkdir(parents=True, exist_ok=True)
    cpu = "native bf16" if cpu_has_native_bf16() else "no native bf16 (emulated)"
    machine = (f"{platform.machine()} {platform.processor() or ''}".strip() +
               f", {torch.get_num_threads()} threads, torch {torch.__version__}, CPU with {cpu}")
    md = [f"# bf16 against fp32 on the quality benchmark's models\n\nCommand: `{command}`  \nMachine: {machine}  \n"
          f"Model: PredRNN-V2 with RSS and decoupling, {iterations} iterations in fp32 per seed  \n"
          "Cells: largest change over the seeds (bf16 - fp32, same weights) / seed-to-seed standard deviation "
          "of the fp32 score; **!** marks a change beyond the spread.\n"]
    for kind, r in results.items():
        units = f" {r['units']}" if r["units"] else " (intensity in [0, 1])"
        verdict = ("within the seed-to-seed spread at every lead time" if not r["forecast_moved"]
                   else "beyond the spread at " + ", ".join(r["forecast_moved"]))
        secs = r["forecast_seconds"]
        md += [f"## {kind}\n", f"Dataset `{r['uri']}`, seeds {r['seeds']}.\n",
               f"- Forecast values: largest |bf16 - fp32| {r['max_abs_diff']:.4g}{units}, mean "
               f"{r['mean_abs_diff']:.3g}{units}.",
               f"- Scores: {verdict}.",
               f"- Forecast time on this machine: fp32 {secs['fp32']:.1f} s, bf16 {secs['bf16']:.1f} s.\n",
               "### Forecasts in bf16 from the fp32-trained weights\n",
               *_table(r["forecast"], list(r["forecast"])), ""]
        if "training" in r:
            tv = ("within the spread" if not r["training_moved"]
                  else "beyond the spread at " + ", ".join(r["training_moved"]))
            md += ["### Trained in bf16 (test forecast in fp32)\n", f"Scores: {tv}.\n",
                   *_table(r["training"], list(r["training"])), ""]
    text = "\n".join(md)
    (out / "README.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"machine": machine, "iterations": iterations,
                                                  "datasets": results}, indent=1))
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--clips", type=int, default=600, help="clips per dataset (80/10/10 split)")
    ap.add_argument("--datasets", nargs="+", default=["moving-digits", "storm-cells"])
    ap.add_argument("--train-bf16", action="store_true",
                    help="also train every seed in bf16 (slow where the CPU emulates bf16)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override of the base config")
    ap.add_argument("--root", default=".state/quality/datasets")
    ap.add_argument("--out", default="docs/precision")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if len(args.seeds) < 2:
        ap.error("need at least two seeds for a seed-to-seed spread")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {kind: run_dataset(kind, args) for kind in args.datasets}
    command = ".venv/bin/python bench/precision.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(write_report(Path(args.out), results, command, args.iterations))
    return results


if __name__ == "__main__":
    main()
