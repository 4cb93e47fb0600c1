"""The data's values and the model's: images in [0, 1], physical fields standardised.

A model trains on normalised values; everything that leaves it is in the data's own units. This
module is the one place that crosses between the two, driven by :class:`predrnn.config.ValuesConfig`
(which a dataset version records at ingest and a model directory carries in its ``config.json``):

* **image**: the data's units are intensities in [0, 1] (uint8 / 255); the model sees them as they
  are and its forecasts are clipped to [0, 1] (the authors' conventions).
* **field**: a physical quantity (rain rate in mm/h, VIL, temperature ...), float, NaN = no data.
  The model sees ``(x - mean) / std`` with the training split's statistics; a missing value enters
  the model as the training mean (0 after standardisation), and the loss and the metrics skip it.
  Forecasts come back as ``y * std + mean``, clipped to ``[valid_min, valid_max]`` where declared
  (never to [0, 1]).
* **several variables** (``values.channels``): each channel has its own units, mean/std, valid range
  and thresholds, and every step above runs channel by channel (the last axis of ``(..., C)``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from predrnn.config import ChannelValues, ExperimentConfig, ValuesConfig
from predrnn.errors import PredrnnError

IMAGE = ValuesConfig()


class ValuesError(PredrnnError, ValueError):
    """An input is not in the units or range the model expects."""


def is_field(values: ValuesConfig) -> bool:
    return values.kind == "field"


def field_units(values: ValuesConfig) -> str:
    """The units a user's numbers are in: a field's units; "" for images (intensities in [0, 1])."""
    return values.units if is_field(values) else ""


def channel_values(values: ValuesConfig) -> list[ValuesConfig]:
    """One single-channel :class:`ValuesConfig` per channel of a multi-variable field (``values.channels``);
    ``[values]`` for a single-channel field or an image."""
    if not values.channels:
        return [values]
    return [ValuesConfig(kind="field", units=ch.units, mean=ch.mean, std=ch.std, valid_min=ch.valid_min,
                         valid_max=ch.valid_max, thresholds=ch.thresholds) for ch in values.channels]


def channel_names(values: ValuesConfig) -> list[str]:
    """The channels' names (``values.channels``); empty when the data has no named channels."""
    return [ch.name for ch in values.channels]


def _stat(values: ValuesConfig, key: str, like: torch.Tensor) -> torch.Tensor | float:
    """``mean``/``std`` as a float, or per channel as a (C,) tensor broadcasting over ``(..., C)``."""
    if not values.channels:
        return float(getattr(values, key))
    return torch.tensor([float(getattr(ch, key)) for ch in values.channels], dtype=like.dtype, device=like.device)


def score_units(values: ValuesConfig) -> str:
    """The units of the headline scores (MSE, MAE, RMSE): the field's units; ``standardised`` for several
    variables (each channel's own scores are in its own units); "" for images."""
    return "standardised" if values.channels else field_units(values)


def to_model(frames: torch.Tensor, values: ValuesConfig) -> torch.Tensor:
    """Frames ``(..., C)`` in the data's units -> the values the model sees (float).

    Image: unchanged. Field: ``(x - mean) / std`` (per channel for several variables) with NaN (no data)
    -> 0, the training mean.
    """
    if not is_field(values):
        return frames
    return ((frames - _stat(values, "mean", frames)) / _stat(values, "std", frames)).nan_to_num(nan=0.0)


def from_model(pred: torch.Tensor, values: ValuesConfig) -> torch.Tensor:
    """Model output ``(..., C)`` -> the data's units, clipped to the valid range (image: [0, 1]). Float32."""
    pred = pred.float()
    if not is_field(values):
        return pred.clamp(0.0, 1.0)
    return clip_valid(pred * _stat(values, "std", pred) + _stat(values, "mean", pred), values)


def clip_valid(x: torch.Tensor, values: ValuesConfig) -> torch.Tensor:
    """Clip ``(..., C)`` to ``[valid_min, valid_max]`` (per channel for several variables; image: [0, 1]);
    an undeclared bound leaves that side open."""
    if not is_field(values):
        return x.clamp(0.0, 1.0)
    if values.channels:
        inf = float("inf")
        lo = torch.tensor([-inf if ch.valid_min is None else ch.valid_min for ch in values.channels],
                          dtype=x.dtype, device=x.device)
        hi = torch.tensor([inf if ch.valid_max is None else ch.valid_max for ch in values.channels],
                          dtype=x.dtype, device=x.device)
        return torch.maximum(torch.minimum(x, hi), lo)
    if values.valid_min is None and values.valid_max is None:
        return x
    return x.clamp(min=values.valid_min, max=values.valid_max)


def valid_mask(frames: torch.Tensor, values: ValuesConfig) -> torch.Tensor | None:
    """Where the data has a value (bool, same shape), or None when every pixel does (images)."""
    if not is_field(values):
        return None
    ok = torch.isfinite(frames)
    return None if bool(ok.all()) else ok


def fill_missing(frames: torch.Tensor, values: ValuesConfig) -> torch.Tensor:
    """NaN (no data) -> the training mean, in the data's units (what the model is fed instead)."""
    if not is_field(values):
        return frames
    if values.channels:
        return torch.where(torch.isnan(frames), _stat(values, "mean", frames), frames)
    return frames.nan_to_num(nan=values.mean)


def from_dataset_attrs(attrs: dict[str, Any]) -> ValuesConfig:
    """The :class:`ValuesConfig` a dataset version records (its ``values`` attribute, or older attributes).

    Versions written before the ``values`` attribute: uint8 is an image; a float version becomes a
    field with its stored (all-split) statistics and no valid range.
    """
    rec = attrs.get("values")
    if isinstance(rec, dict):
        channels = tuple(ChannelValues(name=str(c.get("name", "")), units=str(c.get("units", "")),
                                       mean=float(c.get("mean", 0.0)), std=float(c.get("std", 1.0)),
                                       valid_min=_opt_float(c.get("valid_min")),
                                       valid_max=_opt_float(c.get("valid_max")),
                                       thresholds=tuple(float(t) for t in c.get("thresholds", [])))
                         for c in rec.get("channels") or [])
        return ValuesConfig(kind=rec.get("kind", "image"), units=str(rec.get("units", "")),
                            mean=float(rec.get("mean", 0.0)), std=float(rec.get("std", 1.0)),
                            valid_min=_opt_float(rec.get("valid_min")), valid_max=_opt_float(rec.get("valid_max")),
                            thresholds=tuple(float(t) for t in rec.get("thresholds", [])), channels=channels)
    if attrs.get("value_kind") == "physical":
        norm = attrs.get("normalisation", {})
        return ValuesConfig(kind="field", units=str(attrs.get("units", "")), mean=float(norm.get("mean", 0.0)),
                            std=float(norm.get("std", 1.0)) or 1.0)
    return IMAGE


def with_values(cfg: ExperimentConfig, values: ValuesConfig | dict[str, Any]) -> ExperimentConfig:
    """``cfg`` with its ``values`` section replaced (the door sets it from the dataset)."""
    if isinstance(values, dict):
        channels = tuple(ch if isinstance(ch, ChannelValues) else ChannelValues(**ch)
                         for ch in values.get("channels") or ())
        values = ValuesConfig(**{**values, "channels": channels})
    return replace(cfg, values=values)


def describe(values: ValuesConfig) -> str:
    """``mm/h, valid >= 0`` / ``image intensities in [0, 1]``: for messages and plots."""
    if not is_field(values):
        return "image intensities in [0, 1] (or uint8 0..255)"
    if values.channels:
        return "; ".join(f"{ch.name}: {describe(one)}" for ch, one in zip(values.channels, channel_values(values),
                                                                         strict=True))
    units = values.units or "the data's units"
    lo, hi = values.valid_min, values.valid_max
    if lo is not None and hi is not None:
        return f"{units}, valid range [{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{units}, valid >= {lo:g}"
    if hi is not None:
        return f"{units}, valid <= {hi:g}"
    return units


def context_in_units(context: np.ndarray, values: ValuesConfig) -> np.ndarray:
    """A user's context array as float32 in the data's units, checked against what the model knows.

    Image models take integers as 8-bit levels 0..255 (uint8, or the int64 a JSON request gives;
    divided by 255) or floats in [0, 1] (any float width). Field models take numbers of any width in
    the data's units; NaN marks no data.

    Raises:
        ValuesError: wrong dtype; NaN/inf in an image; inf in a field; a field with no finite value
            or with any value outside the declared valid range (other units, or already standardised:
            the data the model learnt from never held such values); image floats outside [0, 1].
    """
    dt = context.dtype
    if not is_field(values):
        if dt == np.uint8:
            return context.astype(np.float32) / 255.0
        if np.issubdtype(dt, np.integer):  # 8-bit levels in a wider integer type (JSON, int arrays)
            lo_i, hi_i = int(context.min()), int(context.max())
            if lo_i < 0 or hi_i > 255:
                raise ValuesError(f"an integer context holds 8-bit levels 0..255 for an image model, got values "
                                  f"in [{lo_i}, {hi_i}]")
            return context.astype(np.float32) / 255.0
        if not np.issubdtype(dt, np.floating):
            raise ValuesError(f"an image model takes uint8 (0..255) or floats in [0, 1], got dtype {dt}")
        x = context.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValuesError("the context holds NaN or inf; an image model takes uint8 or floats in [0, 1]")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValuesError(f"float context must lie in [0, 1] for an image model (or be uint8 0..255), "
                              f"got values in [{lo:.3g}, {hi:.3g}]")
        return x
    if not (np.issubdtype(dt, np.floating) or np.issubdtype(dt, np.integer)) or dt == np.bool_:
        raise ValuesError(f"a field model takes numbers in {describe(values)} (NaN = no data), got dtype {dt}")
    x = context.astype(np.float32)
    if np.isinf(x).any():
        raise ValuesError("the context holds inf; mark missing values with NaN")
    if not np.isfinite(x).any():
        raise ValuesError("the context holds no value at all (every pixel NaN)")
    if values.channels:
        if x.shape[-1] != len(values.channels):
            raise ValuesError(f"the context has {x.shape[-1]} channels, the model {len(values.channels)} "
                              f"({', '.join(channel_names(values))})")
        for c, one in enumerate(channel_values(values)):
            part = x[..., c]
            if np.isfinite(part).any():
                try:
                    context_in_units(part, one)
                except ValuesError as err:
                    raise ValuesError(f"channel {values.channels[c].name}: {err}") from None
        return x
    finite = x[np.isfinite(x)]
    lo, hi = float(finite.min()), float(finite.max())
    outside = 0
    if values.valid_min is not None:
        outside += int(np.count_nonzero(finite < values.valid_min))
    if values.valid_max is not None:
        outside += int(np.count_nonzero(finite > values.valid_max))
    if outside:  # the data never held such values (ingest refuses them): other units, or already standardised
        raise ValuesError(f"{outside} of {finite.size} context values lie outside the model's valid range "
                          f"({describe(values)}), the context spans [{lo:.4g}, {hi:.4g}]; is it standardised "
                          "or in other units?")
    return x


def _opt_float(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f
