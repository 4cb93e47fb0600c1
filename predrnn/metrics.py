"""Forecast metrics per lead time, in the data's units, with the authors' conventions.

Forecast and truth are (B, N, H, W, C) in the data's units (images: [0, 1]; physical fields: their
units, NaN = no data). Every metric runs over the pixels that have data only:

* ``mse`` / ``mae``: "per frame": the error summed over the valid pixels (and channels) of one
  frame, averaged over the clips whose frame at that lead time holds at least one observation; the
  paper's Moving MNIST numbers (PredRNN-V2: 48.4) use this one. A frame with no observation (a radar
  outage) is left out; a lead time with none in any clip has no score (null), never 0.
* ``rmse``: per pixel, ``sqrt(sum of squared errors / number of valid pixels)`` over all clips of a
  lead time; ``mse_pixel`` is its square.
* images only: ``psnr`` on 8-bit frames, values rounded (not truncated) to 0..255, per frame then
  averaged; ``ssim``: scikit-image's SSIM on 8-bit frames, window 7, data range 255, per frame,
  averaged. Image forecasts are clipped to [0, 1] (their valid range) first. Fields get neither:
  both need a data range, and a physical field has none that clipping could honestly give.
* with thresholds: the verification scores of :mod:`predrnn.verification` (CSI, POD, FAR, bias,
  HSS, pooled CSI, FSS, CSI-M).

A perfect forecast scores exactly 0 (the errors are taken in float64 on the values as given). Means over
lead times skip the lead times without a score.

Several variables (``values.channels``): every channel is scored on its own, in its own units and at
its own thresholds (``"channels": {name: {...}}``); the headline ``mse``/``mae``/``rmse`` are then those
of the standardised values (each channel ``(x - mean) / std``, ``"units": "standardised"``), so that
variables in different units weigh alike in checkpoint selection and the promotion gate.
Accumulate batch by batch with :class:`MetricAccumulator`; :func:`scorecard` gives the per-lead-time
record that ``predrnn score`` prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from predrnn.config import ValuesConfig
from predrnn.values import IMAGE

METRICS = ("mse", "mae", "mse_pixel", "rmse", "psnr", "ssim")
SCORE_KEYS = ("csi", "pod", "far", "bias", "hss", "csi_pool", "fss", "csi_m")


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """[0, 1] floats to 0..255 by rounding (the authors' code truncates; we do not)."""
    return np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def ssim_frames(pred_u8: np.ndarray, true_u8: np.ndarray) -> np.ndarray:
    """SSIM per frame. Inputs (N, H, W, C) uint8; returns (N,)."""
    from skimage.metrics import structural_similarity

    out = np.empty(pred_u8.shape[0], dtype=np.float64)
    multichannel = pred_u8.shape[-1] > 1
    for n in range(pred_u8.shape[0]):
        a, b = pred_u8[n], true_u8[n]
        if multichannel:
            out[n] = structural_similarity(a, b, win_size=7, data_range=255, channel_axis=-1)
        else:
            out[n] = structural_similarity(a[..., 0], b[..., 0], win_size=7, data_range=255)
    return out


def frame_metrics(pred: np.ndarray, truth: np.ndarray, *, with_ssim: bool = True, image: bool = True,
                  valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-clip, per-lead-time metrics; each value (B, N).

    Args:
        pred, truth: (B, N, H, W, C) in the data's units.
        image: image conventions (forecast clipped to [0, 1]; PSNR and SSIM on 8-bit frames).
        valid: bool, same shape: the pixels that count; default where ``truth`` is finite.

    Raises:
        ValueError: the shapes differ, or the forecast is NaN/inf at a pixel that counts.

    Returns:
        ``mse``, ``mae`` (sums over valid pixels), ``sq_sum`` and ``count`` (for the pooled per-pixel
        error), ``mse_pixel`` (per clip), and for images ``psnr`` and (``with_ssim``) ``ssim``.

    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if image:
        p = np.clip(p, 0.0, 1.0)
    B, N = p.shape[:2]
    ok = np.isfinite(t) if valid is None else np.broadcast_to(np.asarray(valid, bool), t.shape) & np.isfinite(t)
    missing = ok & ~np.isfinite(p)
    if missing.any():  # an absent forecast must not pass for a perfect one
        raise ValueError(f"the forecast has no finite value at {int(missing.sum())} pixels where the truth has "
                         "one; forecast every observed pixel or leave such pixels out with a mask")
    err = np.where(ok, p - t, 0.0)
    sq_sum = (err**2).reshape(B, N, -1).sum(axis=2)
    count = ok.reshape(B, N, -1).sum(axis=2).astype(np.float64)
    out = {
        "mse": sq_sum,
        "mae": np.abs(err).reshape(B, N, -1).sum(axis=2),
        "sq_sum": sq_sum,
        "count": count,
        "mse_pixel": sq_sum / np.maximum(count, 1.0),
    }
    if image:
        p8, t8 = to_uint8(p), to_uint8(t)
        mse8 = ((p8.astype(np.float64) - t8.astype(np.float64)) ** 2).reshape(B, N, -1).mean(axis=2)
        with np.errstate(divide="ignore"):
            out["psnr"] = np.where(mse8 > 0, 20 * math.log10(255.0) - 10 * np.log10(np.maximum(mse8, 1e-300)),
                                   np.inf)
        if with_ssim:
            out["ssim"] = ssim_frames(p8.reshape(B * N, *p8.shape[2:]),
                                      t8.reshape(B * N, *t8.shape[2:])).reshape(B, N)
    return out


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


class MetricAccumulator:
    """Accumulates per-lead-time metrics over batches; ``compute()`` gives the values per lead time.

    PSNR of identical frames is infinite; such frames are capped at 100 dB so means stay finite.

    Args:
        horizon: lead times per clip.
        with_ssim: compute SSIM (images only; it is the slow one).
        values: what the data's values are (image or field; see :mod:`predrnn.values`).
        thresholds: verification thresholds in the data's units; empty: no verification scores.
        pools, fss_scales: pooled-CSI block sizes and FSS window sizes (with thresholds).
        labels: the thresholds' keys as the user wrote them (default :func:`threshold_label`).
    """

    def __init__(self, horizon: int, *, with_ssim: bool = True, values: ValuesConfig = IMAGE,
                 thresholds: Sequence[float] = (), pools: Sequence[int] = (), fss_scales: Sequence[int] = (),
                 labels: Sequence[str] | None = None) -> None:
        self.horizon = horizon
        self.image = values.kind != "field"
        self.with_ssim = with_ssim and self.image
        self.count = 0
        keys = ["mse", "mae", "sq_sum", "count", "frames"] + (["psnr"] if self.image else []) + \
            (["ssim"] if self.with_ssim else [])
        self.sums = {k: np.zeros(horizon) for k in keys}
        self.scores: Any = None
        self.values = values
        self.per_channel: list[MetricAccumulator] = []
        if values.channels:  # several variables: each on its own, the headline on standardised values
            from predrnn.values import channel_values

            if len(thresholds):
                raise ValueError("thresholds apply per channel for several variables (values.channels[].thresholds)")
            self.per_channel = [MetricAccumulator(horizon, values=one, thresholds=one.thresholds, pools=pools,
                                                  fss_scales=fss_scales) for one in channel_values(values)]
            return
        if len(thresholds):
            from predrnn.verification import ScoreAccumulator

            self.scores = ScoreAccumulator(horizon, list(thresholds), pools=list(pools),
                                           fss_scales=list(fss_scales), labels=labels)

    def update(self, pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray,
               valid: np.ndarray | None = None) -> None:
        """Add a batch: ``pred``, ``truth`` (B, N, H, W, C) in the data's units; ``valid`` optional mask."""
        p, t = _numpy(pred), _numpy(truth)
        if p.ndim != 5 or p.shape[1] != self.horizon:
            raise ValueError(f"expected forecasts (B, {self.horizon}, H, W, C), got {p.shape}")
        if self.per_channel:
            if p.shape[-1] != len(self.per_channel):
                raise ValueError(f"expected {len(self.per_channel)} channels, got {p.shape}")
            v = None if valid is None else np.broadcast_to(np.asarray(valid, bool), p.shape)
            for c, acc in enumerate(self.per_channel):
                acc.update(p[..., c:c + 1], t[..., c:c + 1], None if v is None else v[..., c:c + 1])
            mean = np.array([ch.mean for ch in self.values.channels])
            std = np.array([ch.std for ch in self.values.channels])
            p, t = (p - mean) / std, (t - mean) / std
        values = frame_metrics(p, t, with_ssim=self.with_ssim, image=self.image, valid=valid)
        values["frames"] = (values["count"] > 0).astype(np.float64)  # frames holding an observation
        if "psnr" in values:
            values["psnr"] = np.minimum(values["psnr"], 100.0)
        for k in self.sums:
            self.sums[k] += values[k].sum(axis=0)
        self.count += p.shape[0]
        if self.scores is not None:
            self.scores.update(np.clip(p, 0.0, 1.0) if self.image else p, t, valid)

    def compute(self) -> dict[str, Any]:
        """``{"clips", "mse": mean, "mse_per_frame": [..], ..., "csi": {...}, ...}`` over all clips seen.

        Per metric: ``<k>_per_frame`` (one value per lead time) and ``<k>`` (their mean over the lead
        times that have one). MSE and MAE per frame average the clips whose frame holds an observation;
        RMSE and ``mse_pixel`` are pooled over all valid pixels of a lead time. A lead time without any
        observation is null for every metric; ``valid_pixels_per_frame`` and ``frames_per_lead_time``
        (clips with an observation) say how much each lead time rests on.
        """
        if self.count == 0:
            raise ValueError("no clips were evaluated")
        out: dict[str, Any] = {"clips": self.count}
        frames = self.sums["frames"]
        with np.errstate(invalid="ignore", divide="ignore"):
            per: dict[str, np.ndarray] = {k: np.where(frames > 0, self.sums[k] / np.maximum(frames, 1.0), np.nan)
                                          for k in ("mse", "mae") if k in self.sums}
        per.update({k: self.sums[k] / self.count for k in ("psnr", "ssim") if k in self.sums})
        n = self.sums["count"]
        with np.errstate(invalid="ignore", divide="ignore"):
            per["mse_pixel"] = np.where(n > 0, self.sums["sq_sum"] / np.maximum(n, 1.0), np.nan)
        per["rmse"] = np.sqrt(per["mse_pixel"])
        for k in METRICS:
            if k in per:
                out[f"{k}_per_frame"] = [_finite_or_none(v) for v in per[k]]
                finite = per[k][np.isfinite(per[k])]
                out[k] = float(finite.mean()) if finite.size else None
        out["valid_pixels_per_frame"] = [int(v) for v in n]
        out["frames_per_lead_time"] = [int(v) for v in frames]
        out["lead_times_without_data"] = [i + 1 for i, v in enumerate(n) if v == 0]
        if self.scores is not None:
            out.update(self.scores.compute())
        if self.per_channel:
            from predrnn.values import channel_names

            out["units"] = "standardised"
            out["channels"] = {name: acc.compute() for name, acc in zip(channel_names(self.values), self.per_channel,
                                                                        strict=True)}
        return out


def scorecard(block: dict[str, Any]) -> dict[str, Any]:
    """The per-lead-time record of one forecaster (``predrnn score``'s JSON) from ``compute()``'s output.

    ``{"lead_times": N, "mse": [N], "mae": [N], "rmse": [N], "csi": {"<thr>": [N]}, "pod", "far",
    "bias", "hss", "csi_pool": {"<k>": {"<thr>": [N]}}, "fss": {"<thr>": {"<n>": [N]}}, "csi_m": [N]}``
    (plus ``psnr``/``ssim`` for images); verification keys only when thresholds were given; with a
    ``"spectrum"`` (:meth:`predrnn.spectra.SpectrumAccumulator.compute`), ``"spectral_ratio": {"<scale>":
    [N]}`` (forecast / observed power at that wavelength) and ``"spectral_units"`` (``km`` or ``px``).
    """
    out: dict[str, Any] = {"lead_times": len(block["mse_per_frame"])}
    for k in ("mse", "mae", "rmse", "psnr", "ssim"):
        if f"{k}_per_frame" in block:
            out[k] = block[f"{k}_per_frame"]
    for k in SCORE_KEYS:
        if k in block:
            out[k] = block[k]
    if block.get("spectrum") and block["spectrum"]["ratio"]:  # every scale longer than a tiny domain: none
        out["spectral_ratio"] = block["spectrum"]["ratio"]
        out["spectral_units"] = block["spectrum"]["units"]
    if block.get("channels"):  # several variables: the headline on standardised values, then each variable
        out["units"] = block.get("units", "standardised")
        out["channels"] = {name: scorecard(one) for name, one in block["channels"].items()}
    return out


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
