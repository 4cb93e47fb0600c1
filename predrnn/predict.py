"""Forecast numpy arrays with a model directory or a registered model."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import nn

from predrnn.config import ExperimentConfig


class PredictError(ValueError):
    """The input to a forecast does not fit the model."""


def load_forecaster(ref: str, *, tracking_uri: str | None = None) -> tuple[nn.Module, ExperimentConfig]:
    """A model directory, or an MLflow registry URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``)."""
    if ref.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        from predrnn.tracking import load_registered_model  # MLflow stays at the edge

        return load_registered_model(ref, tracking_uri=tracking_uri)
    from predrnn.checkpoint import load_model_dir

    return load_model_dir(ref)


def as_unit_float(clips: np.ndarray) -> np.ndarray:
    """uint8 -> float32 / 255; floats are returned as float32 (must already be in [0, 1])."""
    if clips.dtype == np.uint8:
        return clips.astype(np.float32) / 255.0
    return clips.astype(np.float32, copy=False)


def check_context(context: np.ndarray, cfg: ExperimentConfig) -> None:
    d = cfg.data
    expect = f"(clips, T_in, {d.img_height}, {d.img_width}, {d.img_channel})"
    if context.ndim != 5:
        raise PredictError(f"context must have shape {expect}, got {context.shape}")
    if tuple(context.shape[2:]) != (d.img_height, d.img_width, d.img_channel):
        raise PredictError(f"context frames are {context.shape[2:]}; the model expects {expect}")
    if context.shape[0] < 1 or context.shape[1] < 1:
        raise PredictError(f"context must hold at least one clip of at least one frame, got {context.shape}")
    if context.dtype != np.uint8 and not np.issubdtype(context.dtype, np.floating):
        raise PredictError(f"context dtype must be uint8 or float in [0,1], got {context.dtype}")
    if np.issubdtype(context.dtype, np.floating):
        if not np.isfinite(context).all():
            raise PredictError("context holds NaN or inf values")
        lo, hi = float(context.min()), float(context.max())
        if lo < 0.0 or hi > 1.0:
            raise PredictError(f"float context must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")


def forecast_array(model: nn.Module, cfg: ExperimentConfig, context: np.ndarray, horizon: int, *,
                   batch_size: int = 16, device: str | torch.device = "cpu") -> np.ndarray:
    """(clips, T_in, H, W, C) -> (clips, horizon, H, W, C) float32 in [0, 1]."""
    if horizon < 1:
        raise PredictError(f"horizon must be >= 1, got {horizon}")
    check_context(context, cfg)
    x = as_unit_float(context)
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            ctx = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(device)
            out.append(cast(Any, model).forecast(ctx, horizon).clamp_(0, 1).float().cpu().numpy())
    return np.concatenate(out, axis=0).astype(np.float32)
