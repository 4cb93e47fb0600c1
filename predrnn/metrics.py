"""Forecast metrics per lead time, with the authors' conventions.

* ``mse`` / ``mae``: "per frame": the error summed over the pixels (and channels) of one frame,
  averaged over clips; the paper's Moving MNIST numbers (PredRNN-V2: 48.4) use this one.
* ``mse_pixel``: the mean over pixels (physical units for geophysical data).
* ``psnr``: on 8-bit frames, values rounded (not truncated) to 0..255, per frame then averaged.
* ``ssim``: scikit-image's SSIM on 8-bit frames, window 7, data range 255, per frame, averaged.

Predictions are clipped to [0, 1] first. Accumulate batch by batch with :class:`MetricAccumulator`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

METRICS = ("mse", "mae", "mse_pixel", "psnr", "ssim")


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


def frame_metrics(pred: np.ndarray, truth: np.ndarray, *, with_ssim: bool = True) -> dict[str, np.ndarray]:
    """Per-clip, per-lead-time metrics. pred, truth: (B, N, H, W, C) in [0, 1]; each value (B, N)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    pred = np.clip(pred.astype(np.float64), 0.0, 1.0)
    truth = truth.astype(np.float64)
    B, N = pred.shape[:2]
    err = pred - truth
    out = {
        "mse": (err**2).reshape(B, N, -1).sum(axis=2),
        "mae": np.abs(err).reshape(B, N, -1).sum(axis=2),
        "mse_pixel": (err**2).reshape(B, N, -1).mean(axis=2),
    }
    p8, t8 = to_uint8(pred), to_uint8(truth)
    mse8 = ((p8.astype(np.float64) - t8.astype(np.float64)) ** 2).reshape(B, N, -1).mean(axis=2)
    with np.errstate(divide="ignore"):
        out["psnr"] = np.where(mse8 > 0, 20 * math.log10(255.0) - 10 * np.log10(np.maximum(mse8, 1e-300)),
                               np.inf)
    if with_ssim:
        out["ssim"] = ssim_frames(p8.reshape(B * N, *p8.shape[2:]), t8.reshape(B * N, *t8.shape[2:])).reshape(B, N)
    return out


class MetricAccumulator:
    """Sums per-lead-time metrics over batches; ``compute()`` gives means per lead time and overall.

    PSNR of identical frames is infinite; such frames are capped at 100 dB so means stay finite.
    """

    def __init__(self, horizon: int, *, with_ssim: bool = True) -> None:
        self.horizon = horizon
        self.with_ssim = with_ssim
        self.count = 0
        self.sums = {k: np.zeros(horizon) for k in METRICS if with_ssim or k != "ssim"}

    def update(self, pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> None:
        p = pred.detach().float().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        t = truth.detach().float().cpu().numpy() if isinstance(truth, torch.Tensor) else np.asarray(truth)
        if p.shape[1] != self.horizon:
            raise ValueError(f"expected {self.horizon} lead times, got {p.shape[1]}")
        values = frame_metrics(p, t, with_ssim=self.with_ssim)
        values["psnr"] = np.minimum(values["psnr"], 100.0)
        for k in self.sums:
            self.sums[k] += values[k].sum(axis=0)
        self.count += p.shape[0]

    def compute(self) -> dict[str, Any]:
        """``{"mse": mean, "mse_per_frame": [..], ...}`` over all clips seen."""
        if self.count == 0:
            raise ValueError("no clips were evaluated")
        out: dict[str, Any] = {"clips": self.count}
        for k, s in self.sums.items():
            per = s / self.count
            out[f"{k}_per_frame"] = per.tolist()
            out[k] = float(per.mean())
        return out
