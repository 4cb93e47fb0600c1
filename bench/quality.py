"""Forecast quality at an equal budget (the paper's ablation at reduced scale, bench/ablation.py), beside
the field's nowcasting baselines.

Every model of ``--variants`` is trained and tested as in :mod:`bench.ablation`; beside it, on the same
test clips, the baselines of :mod:`predrnn.baselines` that apply to the data
(:func:`predrnn.baselines.applicable_baselines`): persistence, Lagrangian extrapolation (pysteps
Lucas-Kanade motion, semi-Lagrangian advection) and S-PROG on storm cells (rain rate in mm/h); on
moving digits (8-bit images) persistence only, and the report says why the others are left out.
Per lead time, for every model and baseline: MSE, and for fields CSI at 2, 5 and 10 mm/h, FSS at 5 mm/h
over 1 and 9 pixels and the spectral ratio (forecast over observed power at wavelengths of 8, 16, 32
and 64 pixels, :mod:`predrnn.spectra`: 1 = as sharp as the observations, below 1 = smoothed), and a
spectra plot per dataset (``<dataset>_spectra.png``).

The ablation's full run (about an hour on 2 cores):

    .venv/bin/python bench/quality.py --iterations 500 --clips 600 --seeds 0 1 --threads 2 --out docs/quality

The run behind the baseline tables of docs/quality (PredRNN-V2 with RSS and decoupling, a few minutes
per seed on 2 cores):

    .venv/bin/python bench/quality.py --datasets storm-cells moving-digits --variants v2_both \\
        --iterations 500 --clips 600 --seeds 0 --threads 2 --out docs/quality/baselines --no-readme

``--baselines`` picks the baselines (default: all that apply); ``--no-readme`` writes results.json and
the plots only and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench import ablation as ab
from predrnn.baselines import BASELINES, applicable_baselines, baseline_forecast
from predrnn.config import apply_overrides, preset
from predrnn.models.predrnn import Persistence
from predrnn.steps import evaluate
from predrnn.values import field_units, with_values

METRIC_KEYS = ("mse", "mae", "rmse", "ssim", "psnr", "mse_pixel")
NAMES = {"persistence": "persistence", "extrapolation": "extrapolation (LK)", "sprog": "S-PROG"}


def score_options(values: Any) -> dict[str, Any]:
    """The ablation's verification options: CSI at the field's thresholds, FSS at 1 and 9 pixels."""
    if values.kind != "field":
        return {}
    return {"thresholds": list(values.thresholds), "pools": [4, 16], "fss_scales": list(ab.REPORT_FSS)}


def refusals(names: list[str], sample: torch.Tensor, values: Any) -> dict[str, str]:
    """The baselines of ``names`` that do not apply to data like ``sample`` (1, T, H, W, C), each with the
    library's one-line reason."""
    applicable = applicable_baselines(values, sample.shape[-1])
    out: dict[str, str] = {}
    for name in names:
        if name in applicable:
            continue
        try:
            baseline_forecast(name, sample, 1, values)
            out[name] = "not applicable to this data"
        except ValueError as e:
            out[name] = str(e)
    return out


def _row(name: str, blocks: list[dict[str, Any]], values: Any, train_s: list[float]) -> dict[str, Any]:
    """A table row (the ablation's keys) from one ``evaluate()`` block per seed, with the spectral ratio."""
    row: dict[str, Any] = {"variant": name, **{k: [b.get(k) for b in blocks] for k in METRIC_KEYS},
                           "mse_per_frame": np.mean([b["mse_per_frame"] for b in blocks], axis=0).tolist(),
                           "train_s": train_s, "units": field_units(values)}
    for key in ("csi", "fss", "csi_m"):
        if key in blocks[0]:
            row[key] = ab._seed_mean([b[key] for b in blocks])
    if blocks[0].get("spectrum"):
        row["spectral_ratio"] = ab._seed_mean([b["spectrum"]["ratio"] for b in blocks])
        row["spectrum"] = blocks[0]["spectrum"]  # the first seed's spectra, for the plot
    return row


def run_dataset(kind: str, uri: str, variants: list[str], baselines: list[str], iterations: int, seeds: list[int],
                base: Any, horizon: int, beta: float = 0.1, tracking_uri: str = "") -> dict[str, Any]:
    """The baselines' rows, then each variant's (trained over ``seeds``), all on the same test clips."""
    n_in = base.data.input_length
    train_ds, test_ds, values = ab._datasets(uri, n_in + horizon)
    loader = DataLoader(test_ds, batch_size=16, shuffle=False)
    scores = score_options(values)
    spectra = True  # single-channel data: the storm cells and the digits
    refused = refusals(baselines, test_ds[0][None, :n_in], values)
    chosen = [b for b in baselines if b not in refused]
    for name, why in refused.items():
        print(f"  {kind}: {name} left out: {why}", flush=True)
    res = evaluate(Persistence(), loader, n_in, values=values, baselines=chosen, spectra=spectra, **scores)
    rows = [_row(NAMES[b], [res[b]], values, [0.0]) for b in chosen]
    for r in rows:
        print(f"  {kind} {r['variant']}: MSE/frame {r['mse'][0]:.2f}", flush=True)
    for variant in variants:
        cfg = with_values(ab.variant_config(base, variant, iterations, beta), values)
        per_seed, blocks = [], []
        for s in seeds:
            r = ab.train_and_evaluate(cfg, variant, train_ds, test_ds, s)
            blocks.append(evaluate(r.pop("model"), loader, n_in, baselines=[], values=values, spectra=spectra,
                                   **scores)["model"])
            per_seed.append({"metrics": blocks[-1], "train_s": r["train_s"]})
        rows.append(_row(variant, blocks, values, [p["train_s"] for p in per_seed]))
        print(f"  {kind} {variant}: MSE/frame {statistics.mean(rows[-1]['mse']):.2f}", flush=True)
        if tracking_uri:
            ab._log_mlflow(tracking_uri, kind, uri, cfg, variant, seeds, per_seed)
    return {"uri": uri, "rows": rows, "baselines": chosen, "refused": refused,
            "units": field_units(values)}


def _cells(vals: list[Any]) -> str:
    return " | ".join("n/a" if v is None else f"{v:.2f}" for v in vals)


def spectral_tables(rows: list[dict[str, Any]]) -> str:
    """Forecast / observed power at each named wavelength, by lead time, rows = forecasters."""
    if "spectral_ratio" not in rows[0]:
        return ""
    n = len(rows[0]["mse_per_frame"])
    units = rows[0]["spectrum"]["units"]
    head = "| model | " + " | ".join(str(i) for i in range(1, n + 1)) + " |\n|---|" + "---|" * n
    out = []
    for scale in rows[0]["spectral_ratio"]:
        out += [f"**Spectral ratio at {scale} {units}** (forecast / observed power) by lead time", "", head,
                *(f"| {r['variant']} | {_cells(r['spectral_ratio'][scale])} |" for r in rows), ""]
    return "\n".join(out)


def mse_table(rows: list[dict[str, Any]]) -> str:
    n = len(rows[0]["mse_per_frame"])
    head = "| model | mean | " + " | ".join(str(i) for i in range(1, n + 1)) + " |\n|---|---|" + "---|" * n
    return "\n".join(["**MSE per frame** by lead time", "", head,
                      *(f"| {r['variant']} | {statistics.mean(r['mse']):.1f} | "
                        + " | ".join(f"{x:.1f}" for x in r["mse_per_frame"]) + " |" for r in rows), ""])


def best_by_lead(rows: list[dict[str, Any]]) -> str:
    """Which forecaster is best at each lead time: lowest MSE, highest CSI and FSS at the middle threshold."""
    n = len(rows[0]["mse_per_frame"])
    lines = ["| score | " + " | ".join(str(i) for i in range(1, n + 1)) + " |", "|---|" + "---|" * n]

    def best(vals: list[float | None], low: bool) -> str:
        ok = [(v, i) for i, v in enumerate(vals) if v is not None]
        if not ok:
            return "n/a"
        v, i = (min if low else max)(ok)
        return rows[i]["variant"]

    lines.append("| MSE | " + " | ".join(best([r["mse_per_frame"][t] for r in rows], True) for t in range(n)) + " |")
    if "csi" in rows[0]:
        labels = {float(k): k for k in rows[0]["csi"]}
        for t in ab.REPORT_CSI:
            if t in labels:
                k = labels[t]
                lines.append(f"| CSI {k} | " + " | ".join(best([r["csi"][k][j] for r in rows], False)
                                                         for j in range(n)) + " |")
        mid = labels.get(ab.REPORT_CSI[1])
        if mid is not None and str(ab.REPORT_FSS[-1]) in rows[0]["fss"].get(mid, {}):
            s = str(ab.REPORT_FSS[-1])
            lines.append(f"| FSS {mid}, {s} px | " + " | ".join(best([r["fss"][mid][s][j] for r in rows], False)
                                                                 for j in range(n)) + " |")
    return "\n".join(lines)


def write_report(out: str | Path, results: dict[str, dict[str, Any]], *, iterations: int, seeds: list[int],
                 command: str, horizon: int, beta: float, readme: bool = True) -> str:
    """results.json, ``<dataset>_mse_by_lead_time.png`` and ``<dataset>_spectra.png`` under ``out``, and
    README.md unless ``readme`` is False; returns the markdown."""
    from predrnn.spectra import plot_spectra

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    md = [f"# Forecast quality beside the nowcasting baselines\n\nCommand: `{command}`  \nMachine: {machine}  \n"
          f"Budget: {iterations} iterations per model, seeds {seeds}, decoupling beta {beta}  \n"
          f"Test horizon: {horizon} frames ahead  \nModel cells: mean over the seeds\n"]
    for kind, res in results.items():
        rows = res["rows"]
        ab._plot(out / f"{kind}_mse_by_lead_time.png", rows, f"{kind}: {iterations} iterations")
        spectra = {r["variant"]: r["spectrum"] for r in rows if r.get("spectrum")}
        if spectra:
            res["spectra_plot"] = str(plot_spectra(out / f"{kind}_spectra.png", spectra, units=res["units"]))
        left = "".join(f"\n- {NAMES.get(b, b)} left out: {why}" for b, why in res["refused"].items())
        md += [f"## {kind}\n\nDataset `{res['uri']}`. Baselines: "
               f"{', '.join(NAMES[b] for b in res['baselines'])}.{left}\n",
               ab._table(rows, horizon), "", mse_table(rows)]
        cards = ab._scorecard_tables(rows)
        if cards:
            md.append(cards)
        md.append(spectral_tables(rows))
        md += ["**Best forecaster** by lead time", "", best_by_lead(rows), ""]
        md.append(f"![MSE by lead time]({kind}_mse_by_lead_time.png)\n")
        if spectra:
            md.append(f"![Power spectra]({kind}_spectra.png)\n")
    text = "\n".join(md)
    if readme:
        (out / "README.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"machine": machine, "iterations": iterations, "seeds": seeds,
                                                  "command": command, "datasets": results}, indent=1))
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--clips", type=int, default=1000, help="clips per dataset (80/10/10 split)")
    ap.add_argument("--datasets", nargs="+", default=["moving-digits", "storm-cells"])
    ap.add_argument("--variants", nargs="+", default=list(ab.VARIANTS), choices=ab.VARIANTS,
                    help="models to train; persistence is scored with the baselines")
    ap.add_argument("--baselines", type=lambda s: [b for b in s.split(",") if b], default=list(BASELINES),
                    help=f"comma-separated, of {','.join(BASELINES)} (default: all that apply to each dataset)")
    ap.add_argument("--beta", type=float, default=0.1, help="decoupling loss weight of the V2 variants that use it")
    ap.add_argument("--horizon", type=int, default=None,
                    help="frames forecast at test time (default: the training horizon)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override of the base config")
    ap.add_argument("--root", default=".state/quality/datasets")
    ap.add_argument("--out", default="docs/quality")
    ap.add_argument("--no-readme", action="store_true", help="write results.json and the plots, print the tables")
    ap.add_argument("--tracking-uri", default="", help="MLflow store; empty: no MLflow logging")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    unknown = [b for b in args.baselines if b not in BASELINES]
    if unknown:
        ap.error(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    baselines = list(args.baselines)
    if "persistence" in args.variants and "persistence" not in baselines:
        baselines.insert(0, "persistence")
    variants = [v for v in args.variants if v != "persistence"]
    base = apply_overrides(preset("quick"), args.overrides)
    horizon = ab.eval_horizon(base, args.horizon)
    results: dict[str, dict[str, Any]] = {}
    for kind in args.datasets:
        uri = ab.prepare_dataset(kind, args.root, args.clips, base, horizon)
        print(f"{kind}: {uri}", flush=True)
        results[kind] = run_dataset(kind, uri, variants, baselines, args.iterations, args.seeds, base, horizon,
                                    args.beta, args.tracking_uri)
    command = ".venv/bin/python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = write_report(args.out, results, iterations=args.iterations, seeds=args.seeds, command=command,
                        horizon=horizon, beta=args.beta, readme=not args.no_readme)
    if args.no_readme:
        print(text)
    print(json.dumps({"out": args.out, "datasets": list(results),
                      "refused": {k: r["refused"] for k, r in results.items()}}))
    return results


if __name__ == "__main__":
    main()
