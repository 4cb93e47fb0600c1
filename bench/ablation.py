"""Forecast quality at a reduced, equal budget: the paper's ablation on moving digits and storm cells.

Models, all with the same iterations, batch, width, depth and patch size:
persistence, ConvLSTM, PredRNN (V1, scheduled sampling), PredRNN-V2 with decoupling only, with
reverse scheduled sampling only, and with both. Data: a fixed, seeded moving-digits dataset and the
storm-cell dataset, ingested through the normal ingestion path into Zarr. Metrics per lead time on the
test split in the data's units with the authors' conventions (per-frame MSE / MAE; SSIM, PSNR for
images; RMSE and the nowcasting scorecard, CSI at three thresholds and FSS at two scales, for fields);
a markdown table, a plot of MSE against lead time, and an MLflow run per (dataset, model, seed).

    .venv/bin/python bench/quality.py --iterations 600 --seeds 0 1 --out docs/quality

The same steps run as the Prefect flow ``quality-benchmark`` (``flows/quality.py``).

Storm cells are a physical field (rain rate, mm/h): they take the pipeline's own path (the model
trains on values standardised by the training split's statistics; every metric is in mm/h).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from predrnn.config import ExperimentConfig, SamplingConfig, ValuesConfig, apply_overrides, preset
from predrnn.models import build_model
from predrnn.models.predrnn import Persistence
from predrnn.sampling import sampling_mask
from predrnn.steps import evaluate, train_step
from predrnn.values import field_units, with_values
from predrnn.viz import save_figure

VARIANTS = ("persistence", "convlstm", "predrnn_v1", "v2_decouple", "v2_rss", "v2_both")
DECOUPLING_VARIANTS = ("v2_decouple", "v2_both")


def variant_config(base: ExperimentConfig, variant: str, iterations: int, beta: float = 0.1) -> ExperimentConfig:
    """The equal-budget config of one ablation variant (schedules scaled to ``iterations``).

    ``beta`` weighs the decoupling loss in the variants that use it (the authors' 0.1 by default).
    """
    s1 = int(0.25 * iterations)
    s2 = max(s1 + 1, int(0.65 * iterations))
    rss = SamplingConfig(scheme="rss", r_sampling_step_1=s1, r_sampling_step_2=s2,
                         r_exp_alpha=max(iterations / 15, 1.0))
    ss = SamplingConfig(scheme="ss", sampling_start_value=1.0, sampling_changing_rate=1.0 / (0.65 * iterations),
                        sampling_stop_iter=s2)
    choices: dict[str, tuple[Any, SamplingConfig, float]] = {
        "convlstm": ("convlstm", ss, 0.0),
        "predrnn_v1": ("predrnn", ss, 0.0),
        "v2_decouple": ("predrnn_v2", ss, beta),
        "v2_rss": ("predrnn_v2", rss, 0.0),
        "v2_both": ("predrnn_v2", rss, beta),
        "persistence": ("predrnn", ss, 0.0),
    }
    arch, sampling, beta = choices[variant]
    return dataclasses.replace(
        base, name=variant, model=dataclasses.replace(base.model, arch=arch), sampling=sampling,
        optim=dataclasses.replace(base.optim, decouple_beta=beta, max_iterations=iterations, reverse_input=False),
    )


def _datasets(uri: str, test_length: int | None = None) -> tuple[Any, Any, ValuesConfig]:
    """Train and test splits in the data's units, and what the values are (from the dataset).

    ``test_length``: frames per test clip (context + evaluation horizon); None: the whole clip."""
    from predrnn.data import ClipDataset

    train: Any = ClipDataset(uri, "train")
    return train, ClipDataset(uri, "test", length=test_length), train.values


# The scorecard the report shows for fields: CSI at three thresholds, FSS at two scales (at the middle one).
REPORT_CSI = (2.0, 5.0, 10.0)
REPORT_FSS = (1, 9)


def train_and_evaluate(cfg: ExperimentConfig, variant: str, train_ds: Any, test_ds: Any, seed: int,
                       log_every: int = 100, eval_at: tuple[int, ...] = (), precision: str = "fp32") -> dict[str, Any]:
    """Single-process training with the library steps, then test metrics (model and persistence).

    ``eval_at``: iterations at which the test MSE per lead time is also recorded (``result["curve"]``).
    ``precision``: the training steps' precision (``fp32`` or ``bf16`` autocast); the test forecast is fp32.
    The trained model is ``result["model"]``.
    """
    torch.manual_seed(seed)
    d, o, v = cfg.data, cfg.optim, cfg.values
    test_loader = DataLoader(test_ds, batch_size=16, shuffle=False)
    scores: dict[str, Any] = ({"thresholds": list(v.thresholds), "pools": [4, 16], "fss_scales": list(REPORT_FSS)}
                              if v.kind == "field" else {})
    t0 = time.perf_counter()
    if variant == "persistence":  # the evaluation's own persistence forecast, exact in the data's units
        res = evaluate(Persistence(), test_loader, d.input_length, values=v, **scores)
        return {"metrics": res["persistence"], "train_s": 0.0}
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=o.lr)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_ds, batch_size=o.batch_size, shuffle=True, drop_last=True, generator=g)
    it = 0
    curve: list[dict[str, Any]] = []
    while it < o.max_iterations:
        for batch in loader:
            it += 1
            mask, _, _ = sampling_mask(it, cfg.sampling, batch=batch.shape[0], input_length=d.input_length,
                                       total_length=d.total_length, generator=g)
            step = train_step(model, opt, batch[:, : d.total_length], mask, beta=o.decouple_beta, values=v,
                              precision=precision)
            if it % log_every == 0 or it == 1:
                el = time.perf_counter() - t0
                print(f"    {variant} seed {seed} it {it}/{o.max_iterations} loss {step.loss:.5f} "
                      f"({el / it:.2f} s/it, ETA {el / it * (o.max_iterations - it):.0f} s)", flush=True)
            if it in eval_at:
                m = evaluate(model, test_loader, d.input_length, with_persistence=False, with_ssim=False,
                             values=v)["model"]
                curve.append({"iteration": it, "mse": m["mse"], "mse_per_frame": m["mse_per_frame"]})
                model.train()
            if it >= o.max_iterations:
                break
    train_s = time.perf_counter() - t0
    res = evaluate(model, test_loader, d.input_length, with_persistence=False, values=v, **scores)
    return {"metrics": res["model"], "train_s": train_s, "curve": curve, "model": model}


def _table(rows: list[dict[str, Any]], horizon: int) -> str:
    field = not rows[0].get("ssim") or rows[0]["ssim"][0] is None
    extra = ("rmse",) if field else ("ssim", "psnr")
    names = {"rmse": "RMSE", "ssim": "SSIM", "psnr": "PSNR"}
    lines = ["| model | MSE/frame | MAE/frame | " + " | ".join(names[k] for k in extra) +
             " | MSE by lead time (1..N) | seeds |", "|---|---|---|" + "---|" * len(extra) + "---|---|"]

    def ms(r: dict[str, Any], key: str) -> str:
        vals = r[key]
        return f"{statistics.mean(vals):.2f}" + (f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else "")

    for r in rows:
        per = " ".join(f"{x:.1f}" for x in r["mse_per_frame"])
        cells = [r["variant"], *(ms(r, k) for k in ("mse", "mae", *extra)), per, str(len(r["mse"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _scorecard_tables(rows: list[dict[str, Any]]) -> str:
    """CSI at :data:`REPORT_CSI` and FSS at :data:`REPORT_FSS` per lead time, rows = models (seed means)."""
    if "csi" not in rows[0]:
        return ""
    labels = {float(k): k for k in rows[0]["csi"]}
    csi = [labels[t] for t in REPORT_CSI if t in labels]
    mid = csi[len(csi) // 2] if csi else None
    out = []
    n = len(rows[0]["mse_per_frame"])
    head = "| model | " + " | ".join(str(i) for i in range(1, n + 1)) + " |\n|---|" + "---|" * n

    def cells(vals: list[Any]) -> str:
        return " | ".join("n/a" if v is None else f"{v:.2f}" for v in vals)

    for t in csi:
        out += [f"**CSI at >= {t} mm/h** by lead time (frames)", "", head,
                *(f"| {r['variant']} | {cells(r['csi'][t])} |" for r in rows), ""]
    for scale in REPORT_FSS:
        if mid is None or str(scale) not in rows[0]["fss"].get(mid, {}):
            continue
        out += [f"**FSS at >= {mid} mm/h, {scale} x {scale} pixels** by lead time", "", head,
                *(f"| {r['variant']} | {cells(r['fss'][mid][str(scale)])} |" for r in rows), ""]
    return "\n".join(out)


def _seed_mean(blocks: list[Any]) -> Any:
    """Element-wise mean over seeds of nested score dicts/lists (a null stays null)."""
    first = blocks[0]
    if isinstance(first, dict):
        return {k: _seed_mean([b[k] for b in blocks]) for k in first}
    if isinstance(first, list):
        return [_seed_mean([b[i] for b in blocks]) for i in range(len(first))]
    vals = [b for b in blocks if b is not None]
    return sum(vals) / len(vals) if len(vals) == len(blocks) else None


def _plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.plot(range(1, len(r["mse_per_frame"]) + 1), r["mse_per_frame"], marker="o", label=r["variant"])
    ax.set_xlabel("lead time (frames)")
    ax.set_ylabel("MSE per frame")
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def eval_horizon(base: ExperimentConfig, horizon: int | None) -> int:
    """Frames forecast at test time: ``horizon``, or the training horizon (total - input length) when None.

    Raises:
        ValueError: a horizon below 1.
    """
    if horizon is None:
        return base.data.total_length - base.data.input_length
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 frame, got {horizon}")
    return int(horizon)


def prepare_dataset(kind: str, root: str, clips: int, base: ExperimentConfig, horizon: int | None = None) -> str:
    """Ingest the fixed, seeded generated dataset ``kind``; returns its version URI (idempotent).

    Clips hold ``data.total_length`` frames, or context + ``horizon`` when that is longer (an evaluation
    beyond the training horizon, as KTH's 10 -> 20)."""
    from predrnn.data import ingest

    frames = max(base.data.total_length, base.data.input_length + eval_horizon(base, horizon))
    return ingest(kind, "", kind.replace("-", "_"), root, num_clips=clips, frames=frames,
                  height=base.data.img_height, width=base.data.img_width, seed=1234)


def run_variant(kind: str, uri: str, variant: str, iterations: int, seeds: list[int], base: ExperimentConfig,
                tracking_uri: str = "", beta: float = 0.1, horizon: int | None = None) -> dict[str, Any]:
    """Train one ablation variant over ``seeds`` at the base protocol (``data.input_length`` ->
    ``data.total_length``), test it ``horizon`` frames ahead (default: the training horizon); returns its
    table row, with one ``mse_per_frame`` entry per lead time."""
    train_ds, test_ds, values = _datasets(uri, base.data.input_length + eval_horizon(base, horizon))
    cfg = with_values(variant_config(base, variant, iterations, beta), values)
    per_seed = [train_and_evaluate(cfg, variant, train_ds, test_ds, s) for s in seeds]
    ms = [r["metrics"] for r in per_seed]
    row: dict[str, Any] = {"variant": variant,
                           **{k: [m.get(k) for m in ms] for k in ("mse", "mae", "rmse", "ssim", "psnr", "mse_pixel")},
                           "mse_per_frame": np.mean([m["mse_per_frame"] for m in ms], axis=0).tolist(),
                           "train_s": [r["train_s"] for r in per_seed],
                           "units": field_units(values)}
    for key in ("csi", "fss", "csi_m"):
        if key in ms[0]:
            row[key] = _seed_mean([m[key] for m in ms])
    print(f"  {kind} {variant}: MSE/frame {statistics.mean(row['mse']):.2f}", flush=True)
    if tracking_uri:
        _log_mlflow(tracking_uri, kind, uri, cfg, variant, seeds, per_seed)
    return row


def write_report(out: str | Path, results: dict[str, dict[str, Any]], *, iterations: int, seeds: list[int],
                 command: str, horizon: int, beta: float = 0.1) -> str:
    """Write README.md (tables, plots) and results.json under ``out``; returns the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    md = [f"# Forecast quality at an equal budget\n\nCommand: `{command}`  \nMachine: {machine}  \n"
          f"Budget: {iterations} iterations per model, seeds {seeds}, decoupling beta {beta}  \n"
          f"Test horizon: {horizon} frames ahead (one MSE per lead time 1..{horizon})  \n"
          f"Table cells: mean ± standard deviation over the seeds\n"]
    for kind, res in results.items():
        plot = out / f"{kind}_mse_by_lead_time.png"
        _plot(plot, res["rows"], f"{kind}: {iterations} iterations")
        res["plot"] = str(plot)
        units = res["rows"][0].get("units")
        note = f" Values in {units}; MSE/MAE per frame in ({units})², {units}." if units else ""
        md.append(f"## {kind}\n\nDataset `{res['uri']}`.{note}\n\n{_table(res['rows'], horizon)}\n\n"
                  f"![MSE by lead time]({plot.name})\n")
        cards = _scorecard_tables(res["rows"])
        if cards:
            md.append(f"### Scorecard (mean over seeds)\n\n{cards}")
    text = "\n".join(md)
    (out / "README.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"machine": machine, "iterations": iterations, "seeds": seeds,
                                                  "datasets": results}, indent=2))
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--clips", type=int, default=1000, help="clips per dataset (80/10/10 split)")
    ap.add_argument("--datasets", nargs="+", default=["moving-digits", "storm-cells"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--beta", type=float, default=0.1, help="decoupling loss weight of the V2 variants that use it")
    ap.add_argument("--horizon", type=int, default=None,
                    help="frames forecast at test time (default: the training horizon), e.g. 20 for KTH's 10 -> 20")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override of the base config")
    ap.add_argument("--root", default=".state/quality/datasets")
    ap.add_argument("--out", default="docs/quality")
    ap.add_argument("--tracking-uri", default="", help="MLflow store; empty: no MLflow logging")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = apply_overrides(preset("quick"), args.overrides)
    horizon = eval_horizon(base, args.horizon)
    results: dict[str, dict[str, Any]] = {}
    for kind in args.datasets:
        uri = prepare_dataset(kind, args.root, args.clips, base, horizon)
        print(f"{kind}: {uri}", flush=True)
        rows = [run_variant(kind, uri, v, args.iterations, args.seeds, base, args.tracking_uri, args.beta, horizon)
                for v in args.variants]
        results[kind] = {"uri": uri, "rows": rows}
    command = ".venv/bin/python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_report(args.out, results, iterations=args.iterations, seeds=args.seeds, command=command,
                 horizon=horizon, beta=args.beta)
    print(json.dumps({"out": args.out, "datasets": list(results)}))
    return results


def curve_main(argv: list[str] | None = None) -> dict[str, Any]:
    """Test MSE per lead time of one variant as training goes on (against persistence): does a longer
    budget change a conclusion drawn at the benchmark's budget?"""
    ap = argparse.ArgumentParser(description=curve_main.__doc__)
    ap.add_argument("--dataset", default="storm-cells", choices=["moving-digits", "storm-cells"])
    ap.add_argument("--variant", default="predrnn_v1", choices=[v for v in VARIANTS if v != "persistence"])
    ap.add_argument("--iterations", type=int, default=1600, help="the budget the schedules are scaled to")
    ap.add_argument("--eval-at", type=lambda t: tuple(int(x) for x in t.split(",")), default=(200, 400, 800, 1200),
                    help="comma-separated iterations to test at (the last iteration is always tested)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--clips", type=int, default=600)
    ap.add_argument("--root", default=".state/quality/datasets")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="", help="JSON file for the curve")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", default=None,
                    help="print a Markdown table of recorded curves instead of training")
    args = ap.parse_args(argv)
    if args.summarize:
        table = summarize_curves([json.loads(Path(p).read_text()) for p in args.summarize])
        print(table)
        return {"table": table}
    if args.threads:
        torch.set_num_threads(args.threads)
    base = preset("quick")
    uri = prepare_dataset(args.dataset, args.root, args.clips, base)
    train_ds, test_ds, values = _datasets(uri)
    cfg = with_values(variant_config(base, args.variant, args.iterations, args.beta), values)
    pers = evaluate(Persistence(), DataLoader(test_ds, batch_size=16), base.data.input_length,
                    with_ssim=False, values=values)["persistence"]
    res = train_and_evaluate(cfg, args.variant, train_ds, test_ds, args.seed, eval_at=args.eval_at)
    curve = [*res["curve"], {"iteration": args.iterations, "mse": res["metrics"]["mse"],
                             "mse_per_frame": res["metrics"]["mse_per_frame"]}]
    out = {"dataset": uri, "variant": args.variant, "iterations": args.iterations, "seed": args.seed,
           "beta": args.beta, "persistence": pers["mse_per_frame"], "curve": curve}
    print("persistence  " + " ".join(f"{x:6.2f}" for x in pers["mse_per_frame"]))
    for c in curve:
        print(f"it {c['iteration']:>6}  " + " ".join(f"{x:6.2f}" for x in c["mse_per_frame"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return out


def summarize_curves(curves: list[dict[str, Any]]) -> str:
    """A Markdown table of learning curves (``curve_main`` outputs) against persistence.

    One row per (variant, beta, seed, tested iteration): MSE at lead times 1-3, the mean over all lead
    times, and at how many lead times the model is below persistence. Then one row per (variant, beta,
    budget) at the final iteration, averaged over seeds, with the lead times where that mean is not below
    persistence.
    """
    rows = ["| model | beta | seed | iteration | lead 1 | lead 2 | lead 3 | mean | leads beaten |",
            "|---|---|---|---|---|---|---|---|---|"]
    finals: dict[tuple[str, str, int], list[list[float]]] = {}
    persistence: dict[tuple[str, str, int], list[float]] = {}

    def beta_of(c: dict[str, Any]) -> str:  # the weight only where the variant has the decoupling loss
        return f"{c['beta']:g}" if c["variant"] in DECOUPLING_VARIANTS else "-"

    for c in sorted(curves, key=lambda c: (VARIANTS.index(c["variant"]), beta_of(c), c["iterations"], c["seed"])):
        pers = c["persistence"]
        for point in c["curve"]:
            m = point["mse_per_frame"]
            beaten = sum(x < p for x, p in zip(m, pers, strict=True))
            rows.append(f"| {c['variant']} | {beta_of(c)} | {c['seed']} | {point['iteration']} | {m[0]:.2f} | "
                        f"{m[1]:.2f} | {m[2]:.2f} | {sum(m) / len(m):.2f} | {beaten}/{len(m)} |")
        key = (c["variant"], beta_of(c), c["iterations"])
        finals.setdefault(key, []).append(c["curve"][-1]["mse_per_frame"])
        persistence[key] = pers
    pers0 = next(iter(persistence.values()))
    rows += ["", "At the final iteration, mean over seeds:", "",
             "| model | beta | budget | seeds | lead 1 | lead 2 | lead 3 | mean | lead times not beaten |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| persistence | | | | {pers0[0]:.2f} | {pers0[1]:.2f} | {pers0[2]:.2f} | "
             f"{sum(pers0) / len(pers0):.2f} | |"]
    for key, runs in finals.items():
        variant, beta, budget = key
        mean = [sum(col) / len(col) for col in zip(*runs, strict=True)]
        lost = [str(i) for i, (x, p) in enumerate(zip(mean, persistence[key], strict=True), 1) if x >= p]
        rows.append(f"| {variant} | {beta} | {budget} | {len(runs)} | {mean[0]:.2f} | {mean[1]:.2f} | "
                    f"{mean[2]:.2f} | {sum(mean) / len(mean):.2f} | {', '.join(lost) or 'none'} |")
    return "\n".join(rows)


def _log_mlflow(tracking_uri: str, kind: str, uri: str, cfg: ExperimentConfig, variant: str, seeds: list[int],
                per_seed: list[dict[str, Any]]) -> None:
    """One run per seed in the ``quality-benchmark`` experiment of ``tracking_uri`` (through the tracking edge)."""
    from predrnn.tracking import Tracker

    tracker = Tracker(tracking_uri)
    for seed, r in zip(seeds, per_seed, strict=True):
        run_id = tracker.open_run("quality-benchmark", run_name=f"{kind}-{variant}-seed{seed}",
                                  tags={"dataset": uri, "variant": variant, "seed": str(seed)})
        tracker.log_params(run_id, cfg.flat())
        m = r["metrics"]
        tracker.log_metrics(run_id, {k: m[k] for k in ("mse", "mae", "rmse", "ssim", "psnr", "mse_pixel")
                                     if m.get(k) is not None})
        for i, v in enumerate(m["mse_per_frame"], start=1):
            tracker.log_metrics(run_id, {"mse_by_lead": v}, step=i)
        tracker.end_run(run_id)


if __name__ == "__main__":
    main()
