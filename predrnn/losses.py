"""Training losses: next-frame MSE and the PredRNN-V2 memory-decoupling loss (Eq. 6).

The decoupling loss follows the authors' reduction: the shared 1x1 ``adapter`` maps every
increment dC and dM (each layer, each step, t = 0 included); for each (sample, channel) the
absolute cosine similarity over spatial positions is taken; the mean runs over samples and channels
and then over all (T-1)*L terms. The paper writes a sum over steps, layers and channels, so its
beta is on a different scale: our ``decouple_beta`` is the authors' code's (0.1 on Moving MNIST).
Gradient flows through the adapter and into the cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def prediction_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over every element of all predicted frames (B, T-1, H, W, C).

    With ``valid`` (bool, same shape) the mean runs over the valid elements only: pixels with no
    data (NaN in a physical field) give no gradient. All valid is the plain mean.
    """
    if valid is None:
        return F.mse_loss(pred, target)
    err = torch.where(valid, pred - target, pred.new_zeros(()))
    return err.square().sum() / valid.sum().clamp_min(1)


def decoupling_loss(adapter: nn.Module, deltas_c: list[torch.Tensor], deltas_m: list[torch.Tensor]
                    ) -> torch.Tensor:
    """Mean over (step, layer) of mean over (sample, channel) of |cos(adapter(dC), adapter(dM))|."""
    if not deltas_c or len(deltas_c) != len(deltas_m):
        raise ValueError("decoupling_loss needs one dM for every dC")
    terms = []
    # Term by term: each (B, C, H, W) pair stays cache-sized, which beats one large batched call.
    for d_c, d_m in zip(deltas_c, deltas_m, strict=True):
        a_c = adapter(d_c).flatten(2)  # (B, C, HW)
        a_m = adapter(d_m).flatten(2)
        cos = (a_c * a_m).sum(dim=2) / (a_c.norm(dim=2) * a_m.norm(dim=2)).clamp_min(1e-8)  # (B, C)
        terms.append(cos.abs().mean())
    return torch.stack(terms).mean()


def total_loss(mse: torch.Tensor, decouple: torch.Tensor | None, beta: float) -> torch.Tensor:
    """MSE + beta * decoupling term (the decoupling term is skipped when absent)."""
    return mse if decouple is None else mse + beta * decouple
