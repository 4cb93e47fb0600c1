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


def prediction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element of all predicted frames."""
    return F.mse_loss(pred, target)


def decoupling_loss(adapter: nn.Module, deltas_c: list[torch.Tensor], deltas_m: list[torch.Tensor]
                    ) -> torch.Tensor:
    """Mean over (step, layer) of mean over (sample, channel) of |cos(adapter(dC), adapter(dM))|."""
    if not deltas_c or len(deltas_c) != len(deltas_m):
        raise ValueError("decoupling_loss needs one dM for every dC")
    n = len(deltas_c)
    # One adapter call over all terms: (n*B, C, H, W) each.
    a = adapter(torch.cat(deltas_c + deltas_m, dim=0))
    a = a.flatten(2)  # (2nB, C, HW)
    a = F.normalize(a, dim=2)
    a_c, a_m = a.chunk(2, dim=0)
    cos = torch.abs(F.cosine_similarity(a_c, a_m, dim=2))  # (nB, C)
    # Equal B and C per term, so the mean over all entries is the mean of per-term means.
    return cos.view(n, -1).mean(dim=1).mean()


def total_loss(mse: torch.Tensor, decouple: torch.Tensor | None, beta: float) -> torch.Tensor:
    """MSE + beta * decoupling term (the decoupling term is skipped when absent)."""
    return mse if decouple is None else mse + beta * decouple
