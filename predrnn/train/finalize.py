"""After training: test evaluation, pictures, the MLflow model and its registry version."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from predrnn.config import ExperimentConfig
from predrnn.steps import eval_step, evaluate
from predrnn.train.data import ClipSource, ZarrSource, iterate_batches, load_batch
from predrnn.train.loop import evaluation_metrics
from predrnn.train.state import MODEL_DIR, iteration_of
from predrnn.values import field_units


def local_checkpoint(path: str, dest: str | Path) -> Path:
    """A local copy of checkpoint ``path`` (returned as is when already local)."""
    if "://" not in path and Path(path).is_dir():
        return Path(path)
    from predrnn.train import storage

    return Path(storage.checkpoint(path).to_directory(str(dest)))


def score_options(cfg: ExperimentConfig, thresholds: Sequence[float] | None = None,
                  pools: Sequence[int] | None = None, fss_scales: Sequence[int] | None = None) -> dict[str, Any]:
    """The verification options of an evaluation: the given ones, else the model's data defaults.

    Fields are scored at ``cfg.values.thresholds`` (recorded by the dataset at ingest), images only
    on request; pools and FSS scales default to :data:`predrnn.verification.DEFAULT_POOLS` and
    :data:`predrnn.verification.DEFAULT_FSS_SCALES`.
    """
    from predrnn.verification import DEFAULT_FSS_SCALES, DEFAULT_POOLS

    thr = list(cfg.values.thresholds) if thresholds is None else list(thresholds)
    return {"thresholds": thr, "pools": list(DEFAULT_POOLS if pools is None else pools),
            "fss_scales": list(DEFAULT_FSS_SCALES if fss_scales is None else fss_scales)}


def protocol(cfg: ExperimentConfig, context: int | None = None, horizon: int | None = None) -> tuple[int, int]:
    """``(context, horizon)`` of an evaluation: the given ones, else the model's training lengths.

    Raises:
        ValueError: either is below 1.
    """
    n_in = cfg.data.input_length if context is None else int(context)
    n_out = cfg.data.total_length - cfg.data.input_length if horizon is None else int(horizon)
    if n_in < 1 or n_out < 1:
        raise ValueError(f"context and horizon must be >= 1 frame, got {n_in} and {n_out}")
    return n_in, n_out


def evaluate_split(model: nn.Module, cfg: ExperimentConfig, source: ClipSource, split: str = "test", *,
                   batch: int = 16, max_clips: int = 0, thresholds: Sequence[float] | None = None,
                   pools: Sequence[int] | None = None, fss_scales: Sequence[int] | None = None,
                   labels: Sequence[str] | None = None, context: int | None = None,
                   horizon: int | None = None) -> dict[str, Any]:
    """Model and persistence metrics per lead time on every clip of ``split``, in the data's units.

    Args:
        cfg: the model's config; ``cfg.values`` says what the values are.
        context, horizon: frames given and frames forecast (default the model's training
            ``input_length`` and ``total_length - input_length``); e.g. KTH's protocol trains 10 -> 10
            and evaluates 10 -> 20. Each clip's first ``context + horizon`` frames are used.
        thresholds, pools, fss_scales: verification options (see :func:`score_options`).
        labels: the thresholds' keys as the user wrote them (``"0.5"``, ``"2"``).

    Returns:
        ``{"model": {...}, "persistence": {...}}`` (:meth:`predrnn.metrics.MetricAccumulator.compute`).
    """
    n_in, n_out = protocol(cfg, context, horizon)
    ds = source.open(split, length=n_in + n_out, rank=0, world_size=1)
    opts = score_options(cfg, thresholds, pools, fss_scales)
    return evaluate(model, iterate_batches(ds, batch, max_clips), n_in, max_clips=max_clips,
                    values=cfg.values, labels=labels, **opts)


def lead_time_table(result: dict[str, Any], metrics: tuple[str, ...] = ("mse", "mae", "rmse", "psnr", "ssim"),
                    *, units: str = "") -> str:
    """A printable per-lead-time table of model vs persistence (in the data's units, named by ``units``)."""
    m, p = result["model"], result.get("persistence", {})
    keys = [k for k in metrics if f"{k}_per_frame" in m and m.get(k) is not None]
    head = "lead " + "".join(f"{k + ' model':>13}{k + ' persist':>15}" for k in keys)
    lines = [f"values in {units}: mse per frame in ({units})², mae per frame and rmse in {units}"] if units else []
    lines.append(head)
    for i in range(len(m[f"{keys[0]}_per_frame"])):
        row = f"{i + 1:>4} "
        for k in keys:
            pv = p.get(f"{k}_per_frame", [None] * (i + 1))[i]
            row += f"{_num(m[f'{k}_per_frame'][i]):>13}{_num(pv):>15}"
        lines.append(row)
    lines.append("mean " + "".join(f"{_num(m[k]):>13}{_num(p.get(k)):>15}" for k in keys))
    return "\n".join(lines)


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def lead_time_plot(path: str | Path, result: dict[str, Any]) -> Path:
    """MSE and SSIM per lead time, model vs persistence, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from predrnn.viz import save_figure

    keys = ["mse", "ssim" if "ssim_per_frame" in result["model"] else "rmse"]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5))
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys, strict=True):
        for who in ("model", "persistence"):
            if who in result:
                vals = [float("nan") if v is None else v for v in result[who][f"{key}_per_frame"]]
                ax.plot(range(1, len(vals) + 1), vals, marker="o", label=who)
        ax.set_xlabel("lead time (frames)")
        ax.set_ylabel(key.upper() + (" per frame" if key == "mse" else ""))
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def scorecards(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"model": card, "persistence": card}`` (:func:`predrnn.metrics.scorecard`) from ``evaluate()``."""
    from predrnn.metrics import scorecard

    return {who: scorecard(metrics[who]) for who in ("model", "persistence") if who in metrics}


def write_scorecard(out_dir: str | Path, cards: dict[str, dict[str, Any]], *, units: str = "") -> tuple[Path, Path]:
    """``scorecard.md`` (tables per lead time) and ``scorecard.png`` (plot) in ``out_dir``."""
    from predrnn import scorecard as sc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "scorecard.md"
    md.write_text(sc.markdown(cards, units=units))
    return md, sc.plot(out / "scorecard.png", cards, units=units)


def log_scorecard(tracker: Any, run_id: str, cards: dict[str, dict[str, Any]], split: str) -> None:
    """Every score per lead time as tracker metrics with the lead time as the step."""
    from predrnn.scorecard import lead_time_metrics

    for who, card in cards.items():
        prefix = f"{split}_lead" if who == "model" else f"{split}_persistence_lead"
        for lead, values in lead_time_metrics(card, prefix).items():
            if values:
                tracker.log_metrics(run_id, values, step=lead)


def pictures(out_dir: str | Path, model: nn.Module, cfg: ExperimentConfig, source: ClipSource,
             split: str = "test", clips: int = 4) -> dict[str, Path]:
    """A GIF and a PNG grid of truth vs forecast for the first ``clips`` clips of ``split``."""
    from predrnn.viz import field_colours, forecast_gif, forecast_grid_png

    ds = source.open(split, length=cfg.data.total_length, rank=0, world_size=1)
    frames = load_batch(ds, list(range(min(clips, len(ds)))))
    n_in = cfg.data.input_length
    pred = eval_step(model, frames, n_in, values=cfg.values).numpy()
    ctx, truth = frames[:, :n_in].numpy(), frames[:, n_in:].numpy()
    out = Path(out_dir)
    field = field_colours(cfg.values, ctx, truth, pred)
    return {"gif": forecast_gif(out / "forecast.gif", ctx, pred, truth, field=field),
            "png": forecast_grid_png(out / "forecast_grid.png", ctx, pred, truth, field=field)}


def finish(result: Any, *, out_dir: str | Path, split: str = "test", register: bool = True,
           source: ClipSource | None = None) -> dict[str, Any]:
    """Evaluate the best checkpoint on ``split``, write pictures, log everything, register the model.

    Args:
        result: a :class:`predrnn.train.driver.TrainResult`.
        out_dir: where the GIF, PNG grid, plot and metrics JSON are written.
        register: log the model to MLflow and register a new version with alias ``challenger``.

    Returns:
        A summary dict (paths, metrics, model URIs, ``iterations``: the last trained iteration,
        ``run_id``).

    The run's MLflow run (if any) ends here: FINISHED after the test metrics (and, with ``register``,
    the model) are logged, FAILED with the error as the tag ``error`` if this raises, KILLED on an
    interrupt.
    """
    tracker = None
    if result.run_id and result.tracking_uri:
        from predrnn.tracking import Tracker

        tracker = Tracker(result.tracking_uri, check=False)
    try:
        summary = _finish(result, tracker, out_dir=out_dir, split=split, register=register, source=source)
    except Exception as err:
        if tracker is not None:
            tracker.end_run(result.run_id, "FAILED", error=f"final evaluation failed: {type(err).__name__}: {err}")
        raise
    except BaseException:
        if tracker is not None:
            tracker.end_run(result.run_id, "KILLED", error="stopped (signal or interrupt)")
        raise
    if tracker is not None:
        tracker.end_run(result.run_id)
    return summary


def _finish(result: Any, tracker: Any, *, out_dir: str | Path, split: str, register: bool,
            source: ClipSource | None) -> dict[str, Any]:
    from predrnn.checkpoint import load_model_dir

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = source or ZarrSource(result.dataset["uri"])
    tmp = tempfile.mkdtemp(prefix="predrnn-best-")
    try:
        ckpt = local_checkpoint(result.best_checkpoint, tmp)
        model_dir = out / "model"
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.copytree(ckpt / MODEL_DIR, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model, cfg = load_model_dir(model_dir)
    torch.set_grad_enabled(False)
    try:
        metrics = evaluate_split(model, cfg, source, split)
        pics = pictures(out, model, cfg, source, split)
    finally:
        torch.set_grad_enabled(True)
    plot = lead_time_plot(out / "lead_time_metrics.png", metrics)
    (out / f"{split}_metrics.json").write_text(json.dumps(metrics, indent=2))
    cards = scorecards(metrics)
    units = field_units(cfg.values)
    card_md, card_png = write_scorecard(out, cards, units=units)
    (out / "config.json").write_text(cfg.to_json())
    summary: dict[str, Any] = {
        "dataset": result.dataset["uri"], "run_dir": result.run_dir,
        "best_checkpoint": result.best_checkpoint,
        "model_dir": str(model_dir), "gif": str(pics["gif"]), "png": str(pics["png"]), "plot": str(plot),
        f"{split}_mse_per_frame": metrics["model"]["mse_per_frame"],
        "persistence_mse_per_frame": metrics["persistence"]["mse_per_frame"],
        f"{split}_mse": metrics["model"]["mse"], "persistence_mse": metrics["persistence"]["mse"],
        f"{split}_ssim": metrics["model"].get("ssim"), "tracking_uri": result.tracking_uri,
        "run_id": result.run_id, "table": lead_time_table(metrics, units=units), "scores": cards,
        "units": units, "scorecard": str(card_md),
        "iterations": iteration_of(result.latest_checkpoint) or (result.last_report or {}).get("iteration"),
    }
    if tracker is not None:  # test metrics and pictures belong to the run, registered or not
        flat = evaluation_metrics(metrics, split)
        tracker.log_metrics(result.run_id, flat, step=cfg.optim.max_iterations)
        log_scorecard(tracker, result.run_id, cards, split)
        for path in (pics["png"], pics["gif"], plot, out / "config.json", out / f"{split}_metrics.json",
                     card_md, card_png):
            tracker.log_artifact(result.run_id, path, "evaluation")
    if register and tracker is not None:
        from predrnn.scorecard import summary_values

        ds = source.open(split, length=cfg.data.total_length, rank=0, world_size=1)
        example = load_batch(ds, [0, 1 % len(ds)])[:, : cfg.data.input_length].numpy()
        tags = {"dataset": result.dataset["uri"], "dataset_version": result.dataset.get("version", ""),
                f"{split}_mse": f"{flat[f'{split}_mse']:.4f}",
                f"{split}_persistence_mse": f"{flat[f'{split}_persistence_mse']:.4f}",
                f"{split}_ssim": f"{flat.get(f'{split}_ssim', float('nan')):.4f}",
                "checkpoint": result.best_checkpoint, "units": cfg.values.units,
                # every score's mean over lead times, for a promotion gate on that score (registry.metric_tag)
                **{f"{split}_{k}": f"{v:.6g}" for k, v in summary_values(cards["model"]).items()
                   if k not in ("mse", "ssim")}}
        reg = tracker.log_and_register(result.run_id, model_dir, cfg, example, version_tags=tags)
        summary.update(model_uri=reg["model_uri"], model_alias_uri=reg["alias"],
                       logged_model_uri=reg["logged_model_uri"], registered_model=reg["name"],
                       model_version=reg["version"])
    return summary
