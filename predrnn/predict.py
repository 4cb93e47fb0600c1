"""Forecast numpy arrays with a loaded model (a model directory or a registered model, loaded by
:func:`predrnn.checkpoint.load_model_dir` or :func:`predrnn.tracking.load_forecaster`); no tracking code."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import nn

from predrnn.config import ExperimentConfig
from predrnn.errors import PredrnnError


class PredictError(PredrnnError, ValueError):
    """The input to a forecast does not fit the model."""


def as_unit_float(clips: np.ndarray) -> np.ndarray:
    """uint8 -> float32 / 255; floats are returned as float32 (images: already in [0, 1])."""
    if clips.dtype == np.uint8:
        return clips.astype(np.float32) / 255.0
    return clips.astype(np.float32, copy=False)


def check_context(context: np.ndarray, cfg: ExperimentConfig) -> np.ndarray:
    """The context as float32 in the data's units, after checking its shape and values.

    Any context length T_in >= 1 and any number type (see :func:`predrnn.values.context_in_units`).
    A model without layer norm is fully convolutional: any frame size divisible by the patch size;
    a layer-norm model takes its trained frame size only.

    Raises:
        PredictError: not (clips, T_in, H, W, C) with a frame the model can take, empty, or values the
            model cannot take.
    """
    from predrnn.values import ValuesError, context_in_units

    d, p = cfg.data, cfg.model.patch_size
    fixed = cfg.model.layer_norm  # layer norm learnt per position: the trained frame size only
    expect = (f"(clips, T_in, {d.img_height}, {d.img_width}, {d.img_channel})" if fixed
              else f"(clips, T_in, H, W, {d.img_channel}) with H and W multiples of the patch size {p}")
    if context.ndim != 5:
        raise PredictError(f"context must have shape {expect}, got {context.shape}")
    h, w, c = context.shape[2:]
    if fixed and (h, w, c) != (d.img_height, d.img_width, d.img_channel):
        raise PredictError(f"context frames are {context.shape[2:]}; the model expects {expect} (its layer norm "
                           "keeps the trained frame size)")
    if not fixed and (c != d.img_channel or h % p or w % p or h < 1 or w < 1):
        raise PredictError(f"context frames are {context.shape[2:]}; the model expects {expect}")
    if context.shape[0] < 1 or context.shape[1] < 1:
        raise PredictError(f"context must hold at least one clip of at least one frame, got {context.shape}")
    try:
        return context_in_units(context, cfg.values)
    except ValuesError as err:
        raise PredictError(str(err)) from None


def forecast_array(model: nn.Module, cfg: ExperimentConfig, context: np.ndarray, horizon: int, *,
                   batch_size: int = 16, device: str | torch.device = "cpu", precision: str = "fp32") -> np.ndarray:
    """Forecast ``horizon`` frames after every context clip, in the data's units.

    Args:
        context: (clips, T_in, H, W, C), any T_in >= 1 (H, W: see :func:`check_context`). Image
            models: integers 0..255 (uint8, int64) or floats in [0, 1] of any width. Field models:
            numbers in the data's units (``cfg.values.units``), NaN = no data (fed as the training mean).
        precision: ``fp32``, or ``bf16`` autocast (:mod:`predrnn.precision`; resolve ``auto`` first); the
            weights stay fp32 and the forecast is returned in fp32 either way.

    Returns:
        (clips, horizon, H, W, C) float32 in the data's units: images in [0, 1], fields clipped to
        the valid range only.

    Raises:
        PredictError: a bad horizon, shape or values (one line naming what was expected).
        PrecisionError: a precision other than ``fp32`` or ``bf16``.
    """
    from predrnn.precision import autocast
    from predrnn.values import from_model, to_model

    if horizon < 1:
        raise PredictError(f"horizon must be >= 1, got {horizon}")
    x = check_context(context, cfg)
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            ctx = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(device)
            with autocast(device, precision):
                pred = cast(Any, model).forecast(to_model(ctx, cfg.values), horizon)
            out.append(from_model(pred.float(), cfg.values).cpu().numpy())
    return np.concatenate(out, axis=0).astype(np.float32)
