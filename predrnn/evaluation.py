"""Evaluation of a model on a dataset split: metrics per lead time in the data's units, tables,
plots, scorecards and forecast pictures (no Ray, no MLflow: the training and tracking edges call it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from predrnn.config import ExperimentConfig
from predrnn.data.batches import ClipSource, iterate_batches, load_batch
from predrnn.steps import eval_step, evaluate

log = logging.getLogger("predrnn")

# the metrics logged per lead time (and as means) for an evaluation
EVAL_METRICS = ("mse", "mae", "rmse", "psnr", "ssim")


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
                   horizon: int | None = None, precision: str = "fp32", baselines: Sequence[str] | None = None,
                   spectra: bool = False, spacing: float | None = None) -> dict[str, Any]:
    """Model and baseline metrics per lead time on every clip of ``split``, in the data's units.

    Args:
        cfg: the model's config; ``cfg.values`` says what the values are.
        context, horizon: frames given and frames forecast (default the model's training
            ``input_length`` and ``total_length - input_length``); e.g. KTH's protocol trains 10 -> 10
            and evaluates 10 -> 20. Each clip's first ``context + horizon`` frames are used.
        thresholds, pools, fss_scales: verification options (see :func:`score_options`).
        labels: the thresholds' keys as the user wrote them (``"0.5"``, ``"2"``).
        precision: the model's forecasts in ``fp32`` or under ``bf16`` autocast (:mod:`predrnn.precision`).
        baselines: the baselines scored beside the model (:data:`predrnn.baselines.BASELINES`); None:
            persistence.
        spectra, spacing: also the power spectra per lead time, the grid spacing in km (None: pixels);
            see :func:`predrnn.steps.evaluate`.

    Returns:
        ``{"model": {...}, "<baseline>": {...}, ...}`` (:meth:`predrnn.metrics.MetricAccumulator.compute`).
    """
    n_in, n_out = protocol(cfg, context, horizon)
    ds = source.open(split, length=n_in + n_out, rank=0, world_size=1)
    opts = score_options(cfg, thresholds, pools, fss_scales)
    if cfg.values.channels:
        opts["thresholds"] = []  # each channel is scored at its own thresholds
    out = evaluate(model, iterate_batches(ds, batch, max_clips), n_in, max_clips=max_clips,
                   values=cfg.values, labels=labels, precision=precision, baselines=baselines, spectra=spectra,
                   spacing=spacing, **opts)
    empty = out["model"].get("lead_times_without_data") or []
    if empty:
        log.warning("the %s split has no observation at lead time(s) %s in any clip: they have no score (null) "
                    "and are left out of every mean", split, ", ".join(map(str, empty)))
    return out


def lead_time_table(result: dict[str, Any], metrics: tuple[str, ...] = ("mse", "mae", "rmse", "psnr", "ssim"),
                    *, units: str = "", channel_units: dict[str, str] | None = None) -> str:
    """A printable per-lead-time table of model vs persistence (in the data's units, named by ``units``).

    Several variables (a ``"channels"`` block): the headline table is on standardised values, followed by
    one table per channel in its own units (``channel_units``: name -> units). Lead times without any
    observation print ``n/a`` and are named in a closing line.
    """
    m, p = result["model"], result.get("persistence", {})
    if m.get("channels"):
        parts = [lead_time_table({"model": {k: v for k, v in m.items() if k != "channels"},
                                  "persistence": {k: v for k, v in p.items() if k != "channels"}}, metrics,
                                 units="standardised")]
        for name, one in m["channels"].items():
            parts.append(f"variable {name}:")
            parts.append(lead_time_table({"model": one, "persistence": (p.get("channels") or {}).get(name, {})},
                                         metrics, units=(channel_units or {}).get(name, "")))
        return "\n".join(parts)
    keys = [k for k in metrics if f"{k}_per_frame" in m and m.get(k) is not None]
    if not keys:
        return "no lead time has an observation: nothing to score"
    head = "lead " + "".join(f"{k + ' model':>13}{k + ' persist':>15}" for k in keys)
    lines = [f"values in {units}: mse per frame in ({units})², mae per frame and rmse in {units}"] if units else []
    if units == "standardised":
        lines = ["standardised values (each variable (x - mean) / std of its training split): mse, mae and rmse "
                 "in standard deviations"]
    lines.append(head)
    for i in range(len(m[f"{keys[0]}_per_frame"])):
        row = f"{i + 1:>4} "
        for k in keys:
            pv = p.get(f"{k}_per_frame", [None] * (i + 1))[i]
            row += f"{_num(m[f'{k}_per_frame'][i]):>13}{_num(pv):>15}"
        lines.append(row)
    lines.append("mean " + "".join(f"{_num(m[k]):>13}{_num(p.get(k)):>15}" for k in keys))
    empty = m.get("lead_times_without_data") or []
    if empty:
        lines.append(f"lead time(s) {', '.join(map(str, empty))}: no observation in any clip (an outage?): no score, "
                     "left out of every mean")
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


def baseline_plan(cfg: ExperimentConfig, asked: Sequence[str] | None, context: int) -> tuple[tuple[str, ...], bool]:
    """The baselines an evaluation scores beside the model (persistence first) and whether it measures the
    spectra (single-channel fields, where the baselines beyond persistence apply).

    Args:
        asked: the baselines asked for (persistence is always among them); None: every one that applies
            (:func:`predrnn.baselines.applicable_baselines`; S-PROG with at least 3 context frames and a grid
            of at least 16 pixels).

    Raises:
        ValueError: an unknown baseline, or one that does not apply to the data (with why).
    """
    from predrnn.baselines import _MIN_SPROG_GRID, BASELINES, applicable_baselines

    fits = applicable_baselines(cfg.values, cfg.data.img_channel)
    if asked is None:  # S-PROG where it can run: an AR(2) model on 3 frames, a cascade on 16 pixels
        big = max(cfg.data.img_height, cfg.data.img_width) >= _MIN_SPROG_GRID
        names = [b for b in fits if b != "sprog" or (context >= 3 and big)]
    else:
        unknown = [b for b in asked if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
        refused = [b for b in asked if b not in fits]
        if refused:
            why = ("image data (8-bit intensities)" if cfg.values.kind != "field" else
                   f"{cfg.data.img_channel} channels (baselines forecast one field)" if cfg.data.img_channel != 1
                   else "a field that is not a non-negative quantity (S-PROG's dB transform)")
            raise ValueError(f"baseline(s) {', '.join(refused)} do not apply to {why}; these do: {', '.join(fits)}")
        names = ["persistence", *(b for b in BASELINES if b in asked and b != "persistence")]
    return tuple(names), len(fits) > 1


def scorecards(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"model": card, "<baseline>": card, ...}`` (:func:`predrnn.metrics.scorecard`) from ``evaluate()``,
    the model first."""
    from predrnn.metrics import scorecard

    return {who: scorecard(block) for who, block in metrics.items() if isinstance(block, dict) and "mse" in block}


def grid_spacing_km(attrs: dict[str, Any]) -> float | None:
    """The grid spacing in km of a dataset version (``attrs["grid"]``, recorded at ingest from the x
    coordinate's CF ``units``: m or km), or None when the grid has no projected coordinate."""
    x = (attrs.get("grid") or {}).get("x") or {}
    spacing, units = x.get("spacing"), str(x.get("units", "")).strip().lower()
    if not spacing:
        return None
    factor = {"m": 1e-3, "metre": 1e-3, "meter": 1e-3, "metres": 1e-3, "meters": 1e-3, "km": 1.0,
              "kilometre": 1.0, "kilometer": 1.0, "kilometres": 1.0, "kilometers": 1.0}.get(units)
    return abs(float(spacing)) * factor if factor else None


def channel_units(cfg: ExperimentConfig) -> dict[str, str]:
    """Each variable's units of a multi-variable model (``values.channels``); empty otherwise."""
    return {ch.name: ch.units for ch in cfg.values.channels}


def write_scorecard(out_dir: str | Path, cards: dict[str, dict[str, Any]], *, units: str = "",
                    channel_units: dict[str, str] | None = None,
                    spectra: dict[str, dict[str, Any]] | None = None) -> tuple[Path, ...]:
    """``scorecard.md`` (tables per lead time; per variable for several) and ``scorecard.png`` (plot of the
    headline scores) in ``out_dir``; with ``spectra`` (each forecaster's ``evaluate()`` spectrum) also
    ``spectra.png`` (:func:`predrnn.spectra.plot_spectra`)."""
    from predrnn import scorecard as sc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "scorecard.md"
    md.write_text(sc.markdown(cards, units=units, channel_units=channel_units))
    paths: tuple[Path, ...] = (md, sc.plot(out / "scorecard.png", cards, units=units))
    if spectra:
        from predrnn.spectra import plot_spectra

        paths += (plot_spectra(out / "spectra.png", spectra, units=units),)
    return paths


def spectra_of(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each forecaster's power spectrum in ``evaluate()``'s output (empty when none was accumulated)."""
    return {who: block["spectrum"] for who, block in metrics.items() if isinstance(block, dict)
            and block.get("spectrum")}


def pictures(out_dir: str | Path, model: nn.Module, cfg: ExperimentConfig, source: ClipSource,
             split: str = "test", clips: int = 4) -> dict[str, Path]:
    """A GIF and a PNG grid of truth vs forecast for the first ``clips`` clips of ``split``.

    When the split's dataset is a published version (a :class:`~predrnn.data.ClipDataset`, as
    :class:`~predrnn.data.batches.ZarrSource` opens) whose grid has coordinates
    (:meth:`~predrnn.data.store.Version.grid_coords`, ``attrs["grid"]``), the pictures are drawn on the map:
    axes in the grid's coordinates, every frame titled with its valid time (the clips' own,
    :meth:`~predrnn.data.store.Version.valid_times`) and lead. Otherwise they show pixels, as ever.
    """
    from predrnn.viz import field_colours, forecast_gif, forecast_grid_png, map_axes

    ds = source.open(split, length=cfg.data.total_length, rank=0, world_size=1)
    positions = list(range(min(clips, len(ds))))
    frames = load_batch(ds, positions)
    n_in = cfg.data.input_length
    pred = eval_step(model, frames, n_in, values=cfg.values).numpy()
    ctx, truth = frames[:, :n_in].numpy(), frames[:, n_in:].numpy()
    out = Path(out_dir)
    field = field_colours(cfg.values, ctx, truth, pred)
    on_map: dict[str, Any] = {}
    version = getattr(ds, "version", None)
    if version is not None and hasattr(version, "grid_coords") and positions:
        coords, grid = version.grid_coords(), version.attrs.get("grid")
        if map_axes(ctx.shape[2:4], coords, grid).kind != "pixel":
            on_map = {"coords": coords, "grid": grid}
            clip_ids = np.asarray(ds.indices)[positions]  # the split's positions -> the version's clips
            times = version.valid_times(clip_ids)
            if times is not None:
                start = getattr(ds, "_start", None)  # a window cut at random (training split) starts later
                starts = [int(start(int(c))) if start is not None else 0 for c in clip_ids]
                length = cfg.data.total_length
                on_map["valid_times"] = np.stack([times[k, s:s + length] for k, s in enumerate(starts)])
    return {"gif": forecast_gif(out / "forecast.gif", ctx, pred, truth, field=field, **on_map),
            "png": forecast_grid_png(out / "forecast_grid.png", ctx, pred, truth, field=field, **on_map)}


def evaluation_metrics(result: dict[str, Any], prefix: str) -> dict[str, float]:
    """Flatten ``evaluate()`` output into ``{prefix}_mse``, ``{prefix}_mse_f01``, ... for the model and
    ``{prefix}_<baseline>_mse``, ... for each baseline (``val_persistence_mse``, ``test_sprog_mse``)."""
    out: dict[str, float] = {}
    for who, block in result.items():
        if not isinstance(block, dict) or "mse" not in block:
            continue
        tag = prefix if who == "model" else f"{prefix}_{who}"
        for key in EVAL_METRICS:
            if block.get(key) is None:
                continue
            out[f"{tag}_{key}"] = float(block[key])
            for k, v in enumerate(block[f"{key}_per_frame"], start=1):
                if v is not None:
                    out[f"{tag}_{key}_f{k:02d}"] = float(v)
        if block.get("csi_m") is not None:
            finite = [v for v in block["csi_m"] if v is not None]
            if finite:
                out[f"{tag}_csi_m"] = sum(finite) / len(finite)
        for name, one in (block.get("channels") or {}).items():  # several variables: each in its own units
            for key_c, val_c in evaluation_metrics({"model": one}, f"{tag}_{_metric_name(name)}").items():
                out[key_c] = val_c
    return out


def _metric_name(channel: str) -> str:
    """A channel's name as MLflow accepts it in a metric key (letters, digits, ``_ - . /``)."""
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in channel).strip("_") or "channel"
