"""Plain single-process steps: ``train_step``, ``eval_step`` and ``evaluate``.

The distributed loop (Ray Train) and the CLI call these; they know nothing about processes,
trackers or files. Frames are (B, T, H, W, C) floats in [0, 1] on the model's device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from predrnn.losses import decoupling_loss, prediction_loss, total_loss
from predrnn.metrics import MetricAccumulator
from predrnn.models.predrnn import Persistence


@dataclass
class StepResult:
    loss: float
    mse: float
    decouple: float


def _unwrap(model: nn.Module) -> Any:
    """The module under DDP / torch.compile wrappers."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``amp`` is ``auto`` or ``bf16``; nothing otherwise."""
    if device.type == "cuda" and amp in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and amp == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _one_step(model: nn.Module, optimizer: torch.optim.Optimizer, frames: torch.Tensor, mask: torch.Tensor,
              beta: float, grad_clip: float, amp: str) -> StepResult:
    core = _unwrap(model)
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(frames.device, amp):
        if getattr(core, "decouple", False) and beta > 0:
            pred, d_c, d_m = model(frames, mask, return_deltas=True)
            decouple = decoupling_loss(core.adapter, d_c, d_m)
        else:
            pred, decouple = model(frames, mask), None
        mse = prediction_loss(pred.float(), frames[:, 1:].float())
        loss = total_loss(mse, decouple.float() if decouple is not None else None, beta)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return StepResult(float(loss.detach()), float(mse.detach()),
                      float(decouple.detach()) if decouple is not None else 0.0)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, frames: torch.Tensor, mask: torch.Tensor,
               *, beta: float = 0.0, reverse_input: bool = False, grad_clip: float = 0.0,
               amp: str = "none") -> StepResult:
    """One optimisation step (two with ``reverse_input``) on a batch of clips.

    Args:
        frames: (B, T, H, W, C) in [0, 1].
        mask: (B, T-2) sampling mask for this iteration (see :mod:`predrnn.sampling`).
        beta: weight of the decoupling loss (V2 only).
        reverse_input: the authors' second Adam step on the time-reversed clip, same mask;
            the returned values are then the mean of both steps, as their trainer prints.
        grad_clip: max global gradient norm; 0 disables clipping.
        amp: ``none``, ``bf16`` or ``auto`` (bf16 on CUDA only).
    """
    model.train()
    first = _one_step(model, optimizer, frames, mask, beta, grad_clip, amp)
    if not reverse_input:
        return first
    second = _one_step(model, optimizer, torch.flip(frames, dims=[1]), mask, beta, grad_clip, amp)
    return StepResult((first.loss + second.loss) / 2, (first.mse + second.mse) / 2,
                      (first.decouple + second.decouple) / 2)


@torch.no_grad()
def eval_step(model: nn.Module, frames: torch.Tensor, input_length: int, *, amp: str = "none") -> torch.Tensor:
    """Forecast frames[input_length:] from frames[:input_length] with the test-time masks.

    Returns (B, T - input_length, H, W, C) clipped to [0, 1], in float32.
    """
    model.eval()
    horizon = frames.shape[1] - input_length
    with autocast_context(frames.device, amp):
        pred = _unwrap(model).forecast(frames[:, :input_length], horizon)
    return pred.float().clamp_(0.0, 1.0)


def evaluate(model: nn.Module, batches: Iterable[torch.Tensor], input_length: int, *,
             device: torch.device | str = "cpu", amp: str = "none", with_ssim: bool = True,
             with_persistence: bool = True, max_clips: int = 0) -> dict[str, Any]:
    """Metrics per lead time over all batches, for the model and (by default) persistence.

    Returns ``{"model": {...}, "persistence": {...}}`` with the keys of
    :meth:`predrnn.metrics.MetricAccumulator.compute`.
    """
    device = torch.device(device)
    acc: MetricAccumulator | None = None
    base: MetricAccumulator | None = None
    persistence = Persistence()
    seen = 0
    for batch in batches:
        frames = batch.to(device, non_blocking=True).float()
        if max_clips and seen >= max_clips:
            break
        if max_clips:
            frames = frames[: max_clips - seen]
        horizon = frames.shape[1] - input_length
        if acc is None:
            acc = MetricAccumulator(horizon, with_ssim=with_ssim)
            base = MetricAccumulator(horizon, with_ssim=with_ssim)
        truth = frames[:, input_length:]
        acc.update(eval_step(model, frames, input_length, amp=amp), truth)
        if with_persistence and base is not None:
            base.update(persistence.forecast(frames[:, :input_length], horizon), truth)
        seen += frames.shape[0]
    if acc is None:
        raise ValueError("evaluate() got no batches")
    out = {"model": acc.compute()}
    if with_persistence and base is not None:
        out["persistence"] = base.compute()
    return out
