"""Scorecards: the per-lead-time scores of one or more forecasters as a table, a plot and tracker metrics.

A card is :func:`predrnn.metrics.scorecard`'s record (``{"lead_times": N, "mse": [N], ...,
"csi": {"<thr>": [N]}, "fss": {"<thr>": {"<n>": [N]}}, ...}``), in the data's units.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Direction of every score a promotion gate may compare on: True when lower is better.
LOWER_IS_BETTER = {"mse": True, "mae": True, "rmse": True, "far": True, "psnr": False, "ssim": False,
                   "csi": False, "pod": False, "hss": False, "fss": False}


def number(v: Any, digits: int = 4) -> str:
    """A score as reports show it: ``digits`` significant digits (``132.8``, ``43.01``, ``0.4123``), ``n/a``
    for None; anything else as ``str``. One format for every table, reason and log line of a report."""
    return "n/a" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def summary_values(card: dict[str, Any]) -> dict[str, float]:
    """One number per score, the mean over the lead times that have a value: ``{"mse": .., "csi_2": ..,
    "fss_2_n9": .., "csi_pool4_2": .., "csi_m": ..}`` (names as :func:`lead_time_metrics` without a prefix)."""
    sums: dict[str, list[float]] = {}
    for values in lead_time_metrics(card, "").values():
        for name, v in values.items():
            sums.setdefault(name[1:], []).append(v)
    return {name: sum(vs) / len(vs) for name, vs in sums.items()}


def lower_is_better(metric: str) -> bool:
    """The direction of a score named as in :func:`summary_values` (``mse``, ``csi_m``, ``csi_2``, ``fss_2_n9``).

    Raises:
        KeyError: an unknown score, or one with no direction (bias: 1 is best).
    """
    name = metric.removeprefix("test_")
    base = "csi" if name.startswith("csi") else name.split("_")[0]
    if base not in LOWER_IS_BETTER:
        raise KeyError(f"no promotion direction for score {metric!r}; use one of mse, mae, rmse, csi_m, "
                       "csi_<thr>, pod_<thr>, far_<thr>, hss_<thr>, fss_<thr>_n<N>, csi_pool<K>_<thr>")
    return LOWER_IS_BETTER[base]


def markdown(cards: dict[str, dict[str, Any]], *, units: str = "",
             channel_units: dict[str, str] | None = None) -> str:
    """Markdown tables: continuous errors per lead time, then CSI, FSS and pooled CSI per lead time.

    Several variables (cards with ``"channels"``): the headline tables on standardised values, then a
    section per variable in its own units (``channel_units``: name -> units).
    """
    names = list(cards)
    first = cards[names[0]]
    if first.get("channels"):
        head = {who: {k: v for k, v in c.items() if k != "channels"} for who, c in cards.items()}
        out = [markdown(head, units="standardised")]
        for ch in first["channels"]:
            per = {who: c["channels"][ch] for who, c in cards.items() if ch in (c.get("channels") or {})}
            out += [f"\n### {ch}\n", markdown(per, units=(channel_units or {}).get(ch, ""))]
        return "\n".join(out)
    n = int(first["lead_times"])
    u = f" ({units})" if units else ""
    sq = f" ({units})²" if units else ""
    lines = ["| lead | " + " | ".join(f"{who} MSE/frame{sq} | {who} RMSE{u}" for who in names) + " |",
             "|---|" + "---|---|" * len(names)]
    for i in range(n):
        cells = []
        for who in names:
            c = cards[who]
            cells += [number(c["mse"][i]), number(c.get("rmse", [None] * n)[i])]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    for key, label in (("csi", "CSI"), ("pod", "POD"), ("far", "FAR"), ("hss", "HSS")):
        cols = [(t,) for t in first.get(key, {})]
        lines += _score_table(cards, f"**{label}** at thresholds{u}", key, cols, n)
    fss = first.get("fss", {})
    lines += _score_table(cards, f"**FSS** (threshold{u} / window in pixels)", "fss",
                          [(t, s) for t in fss for s in fss[t]], n)
    pool = first.get("csi_pool", {})
    lines += _score_table(cards, f"**pooled CSI** (block in pixels / threshold{u})", "csi_pool",
                          [(k, t) for k in pool for t in pool[k]], n)
    spectral = {who: c for who, c in cards.items() if c.get("spectral_ratio")}
    if spectral:
        one = next(iter(spectral.values()))
        lines += _score_table(spectral, f"**spectral ratio** (forecast / observed power at a wavelength in "
                              f"{one.get('spectral_units', 'px')}; 1: as sharp as observed, < 1: smoothed)",
                              "spectral_ratio", [(s,) for s in one["spectral_ratio"]], n)
    return "\n".join(lines) + "\n"


def _score_table(cards: dict[str, dict[str, Any]], title: str, key: str, cols: Sequence[tuple[str, ...]],
                 n: int) -> list[str]:
    """One markdown table of a nested score (``cards[who][key][c0][c1]...[lead]``), a column per (key path, who)."""
    if not cols:
        return []

    def value(card: dict[str, Any], path: tuple[str, ...], i: int) -> Any:
        block: Any = card[key]
        for part in path:
            block = block[part]
        return block[i]

    names = list(cards)
    lines = ["", title, "", "| lead | " + " | ".join(f"{who} {'/'.join(c)}" for c in cols for who in names) + " |",
             "|---|" + "---|" * (len(cols) * len(names))]
    for i in range(n):
        cells = [number(value(cards[who], c, i), 3) for c in cols for who in names]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return lines


def plot(path: str | Path, cards: dict[str, dict[str, Any]], *, units: str = "") -> Path:
    """A PNG: MSE per frame, CSI per threshold and FSS per scale (at the middle threshold) against lead time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(cards.values()))
    panels = ["mse"] + (["csi"] if first.get("csi") else []) + (["fss"] if first.get("fss") else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    lead = np.arange(1, int(first["lead_times"]) + 1)
    styles = ["-", "--", ":", "-."]
    for ax, panel in zip(axes[0], panels, strict=True):
        for j, (who, card) in enumerate(cards.items()):
            ls = styles[j % len(styles)]
            if panel == "mse":
                ax.plot(lead, _nan(card["mse"]), ls, marker="o", ms=3, label=who)
                ax.set_ylabel(f"MSE per frame{f' ({units})²' if units else ''}")
            elif panel == "csi":
                for k, (t, vals) in enumerate(card["csi"].items()):
                    ax.plot(lead, _nan(vals), ls, color=f"C{k}", label=f"{who} ≥{t}")
                ax.set_ylabel(f"CSI{f' (thresholds in {units})' if units else ''}")
            else:
                thresholds = list(card["fss"])
                t = thresholds[len(thresholds) // 2]
                for k, (s, vals) in enumerate(card["fss"][t].items()):
                    ax.plot(lead, _nan(vals), ls, color=f"C{k}", label=f"{who} {s} px")
                ax.set_ylabel(f"FSS at ≥{t}{f' {units}' if units else ''}")
        ax.set_xlabel("lead time (frames)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    from predrnn.viz import save_figure

    return save_figure(fig, path)


def _nan(values: list[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def lead_time_metrics(card: dict[str, Any], prefix: str) -> dict[int, dict[str, float]]:
    """Tracker metrics with the lead time as the step: ``{lead: {"<prefix>_csi_2": v, ...}}``.

    Names: ``<prefix>_<score>`` for mse/mae/rmse/psnr/ssim/csi_m, ``<prefix>_<score>_<thr>`` for
    csi/pod/far/bias/hss, ``<prefix>_fss_<thr>_n<N>``, ``<prefix>_csi_pool<K>_<thr>``,
    ``<prefix>_spectral_ratio_<scale><km|px>``. Nulls are left out.
    """
    out: dict[int, dict[str, float]] = {i + 1: {} for i in range(int(card["lead_times"]))}

    def put(name: str, values: list[Any]) -> None:
        name = _UNSAFE.sub("_", name)
        for i, v in enumerate(values):
            if v is not None and np.isfinite(v):
                out[i + 1][name] = float(v)

    for key in ("mse", "mae", "rmse", "psnr", "ssim", "csi_m"):
        if isinstance(card.get(key), list):
            put(f"{prefix}_{key}", card[key])
    for key in ("csi", "pod", "far", "bias", "hss"):
        for t, vals in card.get(key, {}).items():
            put(f"{prefix}_{key}_{t}", vals)
    for t, scales in card.get("fss", {}).items():
        for s, vals in scales.items():
            put(f"{prefix}_fss_{t}_n{s}", vals)
    for k, by_t in card.get("csi_pool", {}).items():
        for t, vals in by_t.items():
            put(f"{prefix}_csi_pool{k}_{t}", vals)
    for s, vals in card.get("spectral_ratio", {}).items():
        put(f"{prefix}_spectral_ratio_{s}{card.get('spectral_units', 'px')}", vals)
    return out
