"""Forecasting models sharing one interface: ``forward(frames, mask)`` and ``forecast(context, n)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from predrnn.models.convlstm import ConvLSTM
from predrnn.models.predrnn import (
    Persistence,
    PredRNN,
    SpatioTemporalLSTMCell,
    rollout_forecast,
    test_time_mask,
)

if TYPE_CHECKING:
    from predrnn.config import ExperimentConfig


def build_model(cfg: ExperimentConfig) -> nn.Module:
    """The model an experiment config describes (weights freshly initialised)."""
    m, d = cfg.model, cfg.data
    kwargs = dict(num_hidden=list(m.num_hidden), img_channel=d.img_channel, patch_size=m.patch_size,
                  filter_size=m.filter_size, img_height=d.img_height, img_width=d.img_width)
    if m.arch == "convlstm":
        return ConvLSTM(**kwargs)  # type: ignore[arg-type]
    return PredRNN(**kwargs, layer_norm=m.layer_norm, decouple=m.arch == "predrnn_v2")  # type: ignore[arg-type]


__all__ = ["ConvLSTM", "Persistence", "PredRNN", "SpatioTemporalLSTMCell", "build_model",
           "rollout_forecast", "test_time_mask"]
