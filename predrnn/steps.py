"""Plain single-process steps: ``train_step``, ``eval_step`` and ``evaluate``.

The distributed loop (Ray Train) and the CLI call these; they know nothing about processes,
trackers or files. Frames are (B, T, H, W, C) floats **in the data's units** on the model's device
(images: [0, 1]; physical fields: their units, NaN = no data); the crossing to the model's
normalised values and back is :mod:`predrnn.values`, so the loss is taken on normalised values and
every forecast and metric comes out in the data's units.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from predrnn.config import ValuesConfig
from predrnn.losses import decoupling_loss, prediction_loss, total_loss
from predrnn.metrics import MetricAccumulator
from predrnn.models.predrnn import Persistence
from predrnn.precision import autocast
from predrnn.values import IMAGE, fill_missing, from_model, to_model, valid_mask


@dataclass
class StepResult:
    loss: float
    mse: float
    decouple: float


def _unwrap(model: nn.Module) -> Any:
    """The module under DDP / torch.compile wrappers."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def _one_step(model: nn.Module, optimizer: torch.optim.Optimizer, frames: torch.Tensor, mask: torch.Tensor,
              beta: float, grad_clip: float, precision: str, valid: torch.Tensor | None) -> StepResult:
    core = _unwrap(model)
    optimizer.zero_grad(set_to_none=True)
    with autocast(frames.device, precision):
        if getattr(core, "decouple", False) and beta > 0:
            pred, d_c, d_m = model(frames, mask, return_deltas=True)
            decouple = decoupling_loss(core.adapter, d_c, d_m)
        else:
            pred, decouple = model(frames, mask), None
        mse = prediction_loss(pred.float(), frames[:, 1:].float(), valid)
        loss = total_loss(mse, decouple.float() if decouple is not None else None, beta)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return StepResult(float(loss.detach()), float(mse.detach()),
                      float(decouple.detach()) if decouple is not None else 0.0)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, frames: torch.Tensor, mask: torch.Tensor,
               *, beta: float = 0.0, reverse_input: bool = False, grad_clip: float = 0.0,
               precision: str = "fp32", values: ValuesConfig = IMAGE) -> StepResult:
    """One optimisation step (two with ``reverse_input``) on a batch of clips.

    The loss is the MSE on the model's normalised values (:func:`predrnn.values.to_model`), over the
    pixels that have data: missing values (NaN) are fed as the training mean and give no gradient.

    Args:
        frames: (B, T, H, W, C) in the data's units (images: [0, 1]).
        mask: (B, T-2) sampling mask for this iteration (see :mod:`predrnn.sampling`).
        beta: weight of the decoupling loss (V2 only).
        reverse_input: the authors' second Adam step on the time-reversed clip, same mask;
            the returned values are then the mean of both steps, as their trainer prints.
        grad_clip: max global gradient norm; 0 disables clipping.
        precision: ``fp32`` or ``bf16`` (autocast; weights and the returned losses stay fp32), resolved
            by :func:`predrnn.precision.resolve_precision`.
        values: what the frames' values are (:class:`predrnn.config.ValuesConfig`; default images).
    """
    model.train()
    valid = valid_mask(frames, values)
    x = to_model(frames, values)
    first = _one_step(model, optimizer, x, mask, beta, grad_clip, precision, None if valid is None else valid[:, 1:])
    if not reverse_input:
        return first
    flipped = None if valid is None else torch.flip(valid, dims=[1])[:, 1:]
    second = _one_step(model, optimizer, torch.flip(x, dims=[1]), mask, beta, grad_clip, precision, flipped)
    return StepResult((first.loss + second.loss) / 2, (first.mse + second.mse) / 2,
                      (first.decouple + second.decouple) / 2)


@torch.no_grad()
def eval_step(model: nn.Module, frames: torch.Tensor, input_length: int, *, precision: str = "fp32",
              values: ValuesConfig = IMAGE) -> torch.Tensor:
    """Forecast frames[input_length:] from frames[:input_length] with the test-time masks.

    Args:
        frames: (B, T, H, W, C) in the data's units; only the first ``input_length`` are read.
        values: what the values are; the model sees :func:`predrnn.values.to_model` of the context.
        precision: ``fp32`` or ``bf16`` autocast (:mod:`predrnn.precision`); the result is fp32 either way.

    Returns:
        (B, T - input_length, H, W, C) float32 in the data's units, clipped to the valid range
        (images: [0, 1]; fields: ``[valid_min, valid_max]`` where declared).
    """
    model.eval()
    horizon = frames.shape[1] - input_length
    with autocast(frames.device, precision):
        pred = _unwrap(model).forecast(to_model(frames[:, :input_length], values), horizon)
    return from_model(pred.float(), values)


def persistence_forecast(context: torch.Tensor, horizon: int, values: ValuesConfig = IMAGE) -> torch.Tensor:
    """The last context frame repeated ``horizon`` times, in the data's units (B, horizon, H, W, C).

    A pixel with no data in the last frame takes the training mean (what the model is fed there).
    """
    return Persistence().forecast(fill_missing(context, values), horizon).float()


def evaluate(model: nn.Module, batches: Iterable[torch.Tensor], input_length: int, *,
             device: torch.device | str = "cpu", precision: str = "fp32", with_ssim: bool = True,
             with_persistence: bool = True, max_clips: int = 0, values: ValuesConfig = IMAGE,
             thresholds: Sequence[float] = (), pools: Sequence[int] = (),
             fss_scales: Sequence[int] = (), labels: Sequence[str] | None = None,
             baselines: Sequence[str] | None = None, spectra: bool = False,
             spacing: float | None = None) -> dict[str, Any]:
    """Metrics per lead time over all batches, for the model and its baselines (by default persistence).

    Args:
        batches: clips (B, T, H, W, C) in the data's units.
        values: what the values are: metrics are in the data's units over the pixels that have data.
        precision: the model's forecast in ``fp32`` or under ``bf16`` autocast (the baselines are exact).
        thresholds, pools, fss_scales: verification scores (:mod:`predrnn.verification`) at these
            thresholds in the data's units; none when ``thresholds`` is empty. ``labels``: their keys
            as the user wrote them.
        baselines: the baselines scored beside the model, given the same context (names of
            :data:`predrnn.baselines.BASELINES`); None: persistence (none with ``with_persistence=False``).
            Any but persistence needs pysteps (:mod:`predrnn.baselines`).
        spectra: also accumulate each forecaster's and the truth's power spectra per lead time
            (:class:`predrnn.spectra.SpectrumAccumulator`, single-channel data), with the grid ``spacing``
            in km (None: scales in pixels).

    Returns:
        ``{"model": {...}, "<baseline>": {...}, ...}`` with the keys of
        :meth:`predrnn.metrics.MetricAccumulator.compute`, and ``"spectrum"``
        (:meth:`predrnn.spectra.SpectrumAccumulator.compute`) in each when ``spectra``.

    Raises:
        ValueError: no batch at all; a baseline refused for this data (its one-line reason).
    """
    device = torch.device(device)
    names = list(("persistence",) if with_persistence else ()) if baselines is None else list(baselines)
    accs: dict[str, MetricAccumulator] = {}
    spectrum: dict[str, Any] = {}
    seen = 0
    for batch in batches:
        frames = batch.to(device, non_blocking=True).float()
        if max_clips and seen >= max_clips:
            break
        if max_clips:
            frames = frames[: max_clips - seen]
        horizon = frames.shape[1] - input_length
        if not accs:
            accs = {who: MetricAccumulator(horizon, with_ssim=with_ssim, values=values, thresholds=thresholds,
                                           pools=pools, fss_scales=fss_scales, labels=labels)
                    for who in ("model", *names)}
            if spectra:
                from predrnn.spectra import SpectrumAccumulator

                spectrum = {who: SpectrumAccumulator(horizon, spacing=spacing) for who in accs}
        truth = frames[:, input_length:]
        for who, acc in accs.items():
            if who == "model":
                pred = eval_step(model, frames, input_length, precision=precision, values=values)
            else:
                pred = _baseline(who, frames[:, :input_length], horizon, values)
            acc.update(pred, truth)
            if who in spectrum:
                spectrum[who].update(pred.cpu(), truth.cpu())
        seen += frames.shape[0]
    if not accs:
        raise ValueError("evaluate() got no batches")
    out = {who: acc.compute() for who, acc in accs.items()}
    for who, acc_s in spectrum.items():
        out[who]["spectrum"] = acc_s.compute()
    return out


def _baseline(name: str, context: torch.Tensor, horizon: int, values: ValuesConfig) -> torch.Tensor:
    """Baseline ``name``'s forecast in the data's units; persistence here, the others from
    :mod:`predrnn.baselines` (pysteps, imported only when asked for)."""
    if name == "persistence":
        return persistence_forecast(context, horizon, values)
    from predrnn.baselines import baseline_forecast

    return baseline_forecast(name, context, horizon, values)
